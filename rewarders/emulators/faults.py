"""Seeded fault injection for the emulators: latency, 5xx, 429 bursts, bad bodies, hangs.

One `FaultInjector` per server draws a `FaultPlan` per request from its own `random.Random`
(seeded from `EmulatorFaults.seed`), always making the same draws in the same order, so a given
seed and request order give the same faults whatever the rates are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from deepretrieval.common.config import EmulatorFaults

_5XX_STATUSES = (500, 502, 503)


class FaultKind(Enum):
    """What goes wrong with one request."""

    NONE = "none"
    ERROR_5XX = "5xx"
    BURST_429 = "429"
    GARBAGE = "garbage"
    HANG = "hang"


@dataclass(frozen=True)
class FaultPlan:
    """The faults drawn for one request.

    Args:
        latency_s: extra delay before answering, in seconds.
        kind: the fault, if any (at most one per request).
        status: the HTTP status of a 5xx fault.
        truncate: for GARBAGE: cut the real body short (True) or send non-JSON bytes (False).
    """

    latency_s: float
    kind: FaultKind = FaultKind.NONE
    status: int = 200
    truncate: bool = False


class FaultInjector:
    """Draws per-request faults from `EmulatorFaults`.

    Args:
        faults: rates and sizes of each fault, and the seed.
    """

    def __init__(self, faults: EmulatorFaults):
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._burst_left = 0

    @property
    def active(self) -> bool:
        """Whether any fault or latency is configured (else requests skip the injector)."""
        f = self.faults
        return any((f.latency_ms, f.latency_jitter_ms, f.error_5xx_rate, f.burst_429_rate, f.garbage_rate, f.hang_rate))

    def plan(self) -> FaultPlan:
        """Draw the faults of the next request.

        Priority when several fire: a 429 burst, then 5xx, then a hang, then a bad body.
        """
        f = self.faults
        rng = self._rng
        jitter = rng.gauss(0.0, 1.0)
        u_burst, u_5xx, u_hang, u_garbage = rng.random(), rng.random(), rng.random(), rng.random()
        status = rng.choice(_5XX_STATUSES)
        truncate = rng.random() < 0.5
        latency_s = max(0.0, f.latency_ms + f.latency_jitter_ms * jitter) / 1000.0
        if self._burst_left > 0:
            self._burst_left -= 1
            return FaultPlan(latency_s, FaultKind.BURST_429)
        if u_burst < f.burst_429_rate:
            self._burst_left = f.burst_429_len - 1
            return FaultPlan(latency_s, FaultKind.BURST_429)
        if u_5xx < f.error_5xx_rate:
            return FaultPlan(latency_s, FaultKind.ERROR_5XX, status=status)
        if u_hang < f.hang_rate:
            return FaultPlan(latency_s, FaultKind.HANG)
        if u_garbage < f.garbage_rate:
            return FaultPlan(latency_s, FaultKind.GARBAGE, truncate=truncate)
        return FaultPlan(latency_s)


def mangle_body(body: bytes, plan: FaultPlan) -> bytes:
    """The broken body a GARBAGE fault sends instead of `body`.

    Args:
        body: the real answer.
        plan: the drawn plan (truncate or replace).

    Returns:
        The first half of `body`, or bytes that are not JSON (an HTML proxy error page).
    """
    if plan.truncate and len(body) > 1:
        return body[: len(body) // 2]
    return b"<html><body><h1>502 Proxy Error</h1>\x00\xff\xfe</body></html>"
