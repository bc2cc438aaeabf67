"""Cluster-wide token bucket against a real redis-server, from tasks and from separate processes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest
import redis.asyncio as aredis

from deepretrieval.common.config_pipeline import RateLimitConfig
from deepretrieval.rewarders.rate_limiter import RateLimiter

KEY = "pubmed-api-key-SECRET"


def schedule_slack(stamps: list[float], rate: float) -> float:
    """How far ahead of the limiter's schedule the earliest release came: max over i of s_0 + i/rate - s_i.

    With burst 1 the limiter grants slot i at slot_0 + i/rate and never releases a waiter before its
    slot, so the i-th release in time order is at s_i >= s_0 + i/rate, up to the first release's
    own latency. A waiter woken late (a busy event loop, a loaded CI machine) only makes later
    releases look bunched in a sliding window; it never puts one ahead of this schedule, so this
    checks the limiter and not the scheduler's punctuality. Two releases on one slot give 1/rate.
    """
    s = sorted(stamps)
    return max(s[0] + i / rate - t for i, t in enumerate(s))


def achieved_rate(stamps: list[float]) -> float:
    s = sorted(stamps)
    return (len(s) - 1) / (s[-1] - s[0])


async def _hammer(url: str, rate: float, n_tasks: int, n_each: int) -> list[float]:
    """`n_tasks` tasks each acquiring `n_each` tokens; returns the wall times they were granted."""
    client = aredis.Redis.from_url(url)
    limiter = RateLimiter(client, rate_per_s=rate, burst=1)
    stamps: list[float] = []

    async def task() -> None:
        for _ in range(n_each):
            await limiter.acquire(KEY)
            stamps.append(time.time())  # wall clock: comparable across processes on this machine

    try:
        await asyncio.gather(*(task() for _ in range(n_tasks)))
    finally:
        await client.aclose()
    return stamps


def _process_main(url: str, rate: float, n_tasks: int, n_each: int, barrier, out) -> None:
    barrier.wait(timeout=60)  # start together once every process has imported everything
    out.put(asyncio.run(_hammer(url, rate, n_tasks, n_each)))


def test_concurrent_tasks_share_the_rate(redis_url):
    rate = 10.0
    stamps = asyncio.run(_hammer(redis_url, rate, n_tasks=8, n_each=3))
    assert len(stamps) == 24
    assert schedule_slack(stamps, rate) <= 0.25 / rate  # no release ahead of its slot (a double release: 1/rate)
    assert achieved_rate(stamps) == pytest.approx(rate, rel=0.1)


def test_processes_share_one_bucket(redis_url):
    rate, n_procs, n_each = 10.0, 3, 10
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n_procs + 1), ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(redis_url, rate, 2, n_each // 2, barrier, out)) for _ in range(n_procs)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=60)
        per_process = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    stamps = [t for s in per_process for t in s]
    assert sorted(len(s) for s in per_process) == [n_each] * n_procs
    assert schedule_slack(stamps, rate) <= 0.25 / rate
    assert achieved_rate(stamps) == pytest.approx(rate, rel=0.1)  # 3 processes together, not 3x


def test_burst_goes_back_to_back_then_paces(redis_url):
    async def main() -> list[float]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RateLimiter(client, rate_per_s=5.0, burst=3)
        stamps = []
        for _ in range(4):
            await limiter.acquire(KEY)
            stamps.append(time.monotonic())
        await client.aclose()
        return stamps

    stamps = asyncio.run(main())
    # paced at 1/5 s these three would span 0.4 s; a bucket of 3 lets them go back to back
    assert stamps[2] - stamps[0] < 0.3
    assert stamps[3] - stamps[0] >= 0.18  # then the 4th waits for the next token, 0.2 s after the 1st


def test_penalize_blocks_every_process_including_those_already_waiting(redis_url):
    async def main() -> None:
        a_client, b_client = aredis.Redis.from_url(redis_url), aredis.Redis.from_url(redis_url)
        a = RateLimiter(a_client, rate_per_s=2.0)
        b = RateLimiter(b_client, rate_per_s=2.0)  # another "process": its own client
        await a.acquire(KEY)

        async def acquire_then_time() -> float:
            await a.acquire(KEY)
            return time.monotonic()

        sleeper = asyncio.create_task(acquire_then_time())  # reserves the slot 0.5 s ahead
        await asyncio.sleep(0.05)
        penalized_at = time.monotonic()
        await b.penalize(KEY, 1.0)  # a 429 with Retry-After: 1 seen by the other process
        assert 0.5 < await b.blocked_for(KEY) <= 1.0
        await b.acquire(KEY)
        assert time.monotonic() - penalized_at >= 0.95
        # its 0.5-s slot fell inside the block: it must not go before the block ends
        assert await sleeper - penalized_at >= 0.95
        assert await a.blocked_for(KEY) == 0.0
        await b.penalize(KEY, 0.0)  # no-op
        assert await a.blocked_for(KEY) == 0.0
        await a_client.aclose()
        await b_client.aclose()

    asyncio.run(main())


def test_bursts_of_429s_delay_the_schedule_once_per_block(redis_url):
    """30 waiters at 10/s; three bursts of five Retry-After: 0.5 s. Each burst delays the schedule by
    one block (not once per 429, not once per waiter), no grant falls inside a block, and the pace
    holds."""
    async def main() -> tuple[list[tuple[int, float]], list[tuple[float, float]], float]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RateLimiter(client, rate_per_s=10.0, jitter_s=0.0)
        granted: list[tuple[int, float]] = []
        blocks: list[tuple[float, float]] = []

        async def waiter(i: int) -> None:
            await limiter.acquire(KEY)
            granted.append((i, time.monotonic()))

        t0 = time.monotonic()
        tasks = []
        for i in range(30):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0.001)  # reserve in index order
        for at in (0.2, 0.9, 1.6):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            start = time.monotonic()
            for _ in range(5):
                await limiter.penalize(KEY, 0.5)
            blocks.append((start, start + 0.5))
        await asyncio.gather(*tasks)
        await client.aclose()
        return granted, blocks, time.monotonic() - t0

    granted, blocks, elapsed = asyncio.run(main())
    assert sorted(i for i, _ in granted) == list(range(30))
    assert 3.0 + 1.5 - 0.2 <= elapsed <= 3.0 + 1.5 + 0.6, elapsed  # 30 slots at 10/s, plus three 0.5-s shifts
    for _, at in granted:
        assert not any(a + 0.01 < at < b - 0.01 for a, b in blocks), (at, blocks)
    stamps = sorted(t for _, t in granted)
    assert min(b - a for a, b in zip(stamps, stamps[1:])) >= 0.09  # 10/s, burst 1


def test_api_keys_never_reach_redis_in_clear(redis_url):
    async def main() -> list[bytes]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RateLimiter(client, rate_per_s=100.0)
        await limiter.acquire(KEY)
        await limiter.penalize(KEY, 5)
        keys = await client.keys("*")
        await client.aclose()
        return keys

    keys = asyncio.run(main())
    assert len(keys) == 2 and not any(b"SECRET" in k for k in keys)


def test_arguments_are_checked(redis_url):
    async def main() -> None:
        client = aredis.Redis.from_url(redis_url)
        with pytest.raises(ValueError, match="rate_per_s"):
            RateLimiter(client, rate_per_s=0)
        limiter = RateLimiter.from_config(client, RateLimitConfig(limit_per_s=10, headroom=0.9))
        assert limiter.rate_per_s == pytest.approx(9.0) and limiter.burst == 1
        with pytest.raises(ValueError, match="tokens must be in"):
            await limiter.acquire(KEY, tokens=2)
        await client.aclose()

    asyncio.run(main())
