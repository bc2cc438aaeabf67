"""The emulators' fault generator and server-side rate limiter (pure: no HTTP, no JVM)."""

from deepretrieval.common.config import EmulatorFaults
from deepretrieval.rewarders.emulators.faults import FaultInjector, FaultKind, FaultPlan, mangle_body
from deepretrieval.rewarders.emulators.server_rate_limit import SlidingWindowLimiter, per_window


def plans(faults: EmulatorFaults, n: int) -> list[FaultPlan]:
    injector = FaultInjector(faults)
    return [injector.plan() for _ in range(n)]


def test_same_seed_same_faults_other_seed_other_faults():
    faults = EmulatorFaults(latency_ms=20, latency_jitter_ms=5, error_5xx_rate=0.2, burst_429_rate=0.05, garbage_rate=0.1, hang_rate=0.05, seed=7)
    assert plans(faults, 200) == plans(faults, 200)
    assert plans(faults, 200) != plans(faults.model_copy(update={"seed": 8}), 200)


def test_rates_are_respected_roughly_and_latency_is_never_negative():
    drawn = plans(EmulatorFaults(error_5xx_rate=0.3, latency_ms=1, latency_jitter_ms=10, seed=1), 2000)
    share = sum(p.kind is FaultKind.ERROR_5XX for p in drawn) / len(drawn)
    assert 0.25 < share < 0.35
    assert all(p.latency_s >= 0 for p in drawn) and {p.status for p in drawn if p.kind is FaultKind.ERROR_5XX} == {500, 502, 503}


def test_a_429_burst_lasts_its_length():
    drawn = plans(EmulatorFaults(burst_429_rate=0.02, burst_429_len=4, seed=5), 3000)
    kinds = "".join("x" if p.kind is FaultKind.BURST_429 else "." for p in drawn)
    runs = [len(r) for r in kinds.split(".") if r]
    assert runs and all(r % 4 == 0 for r in runs)  # back-to-back bursts join into multiples


def test_no_faults_configured_means_an_inactive_injector():
    assert not FaultInjector(EmulatorFaults()).active
    assert all(p == FaultPlan(0.0) for p in plans(EmulatorFaults(), 50))


def test_mangled_bodies_are_not_the_answer():
    body = b'{"esearchresult": {"count": "1", "idlist": ["1"]}}'
    assert mangle_body(body, FaultPlan(0.0, FaultKind.GARBAGE, truncate=True)) == body[: len(body) // 2]
    assert mangle_body(body, FaultPlan(0.0, FaultKind.GARBAGE, truncate=False)).startswith(b"<html>")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_allows_limit_then_refuses_until_the_oldest_leaves():
    clock = Clock()
    limiter = SlidingWindowLimiter(1.0, clock=clock)
    decisions = []
    for dt in (0.0, 0.1, 0.1, 0.1):  # 4 requests within 0.3 s, limit 3
        clock.now += dt
        decisions.append(limiter.check("1.2.3.4", 3))
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert (decisions[-1].count, decisions[-1].limit) == (4, 3)
    assert abs(decisions[-1].retry_after_s - 0.7) < 1e-9  # the first request leaves the window at +1.0 s
    clock.now += 0.71
    assert limiter.check("1.2.3.4", 3).allowed
    assert limiter.check("other-key", 3).allowed  # keys are independent


def test_requests_per_window_from_a_rate():
    assert per_window(3, 1.0) == 3 and per_window(50 / 60, 60.0) == 50 and per_window(0.1, 1.0) == 1
