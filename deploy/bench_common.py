"""Pieces the benchmarks share: a private Redis, publishing rollouts, draining scores, closed-loop load."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.redis_server import RedisServer
from deepretrieval.common.streams import RedisStreamTransport, redis_client, rollouts_stream, scored_stream
from deepretrieval.common.wire import Rollout, Scored


@asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A redis-server of our own for the benchmark, stopped (by pid) at the end; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="dr-bench-redis-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            yield server.url
        finally:
            server.stop()


def transport_for(url: str, **overrides: object) -> RedisStreamTransport:
    cfg = TransportConfig(url=url, **overrides)  # type: ignore[arg-type]
    return RedisStreamTransport(redis_client(url), cfg, owns_client=True)


async def publish_rollouts(url: str, run: str, rollouts: Sequence[Rollout]) -> None:
    """Publish rollouts to the run's rollout stream (unbounded backlog for set-up)."""
    transport = transport_for(url, backlog_bound=max(1, len(rollouts) + 1))
    try:
        for r in rollouts:
            await transport.publish(rollouts_stream(run), r)
    finally:
        await transport.close()


async def drain_scored(url: str, run: str, expect: int, timeout_s: float, group: str = "bench") -> list[Scored]:
    """Read `expect` Scored records (or what arrived before `timeout_s`) through a consumer group."""
    transport = transport_for(url)
    out: list[Scored] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while len(out) < expect and loop.time() < deadline:
            entries = await transport.read(scored_stream(run), group, "drain", 500, block_ms=200)
            out.extend(m for _, m in entries if isinstance(m, Scored))
            await transport.ack(scored_stream(run), group, [e for e, _ in entries])
    finally:
        await transport.close()
    return out


def emulator_stats_url(base_url: str) -> str:
    """The emulator-only stats route beside an API base URL."""
    from deepretrieval.rewarders.emulators.middleware import STATS_PATH

    root = base_url.split("/entrez/eutils")[0].split("/api/v2")[0]
    return root + STATS_PATH


async def emulator_stats(base_url: str) -> dict:
    """What the emulator answered so far: {"requests", "by_status": {"200": n, "429": n, ...}}."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(emulator_stats_url(base_url)) as r:
        return await r.json()


def spawn_rewarders(config_json: str, n: int) -> list:
    """Start `n` rewarder OS processes (spawned, so each has its own interpreter, like separate pods)."""
    import multiprocessing as mp

    from deepretrieval.rewarders.service import run_rewarder_process

    ctx = mp.get_context("spawn")
    procs = []
    for i in range(n):
        cfg = config_json.replace('"consumer":null', f'"consumer":"rewarder-{i}"')
        p = ctx.Process(target=run_rewarder_process, args=(cfg,), name=f"rewarder-{i}")
        p.start()
        procs.append(p)
    return procs


def stop_processes(procs: list, timeout_s: float = 20.0) -> None:
    """SIGTERM each process (they finish in-flight work), SIGKILL what is left after `timeout_s`."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout_s)
        if p.is_alive():
            p.kill()
            p.join()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of already sorted values; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int, duration_s: float,
                      errors: tuple[type[BaseException], ...]) -> dict[str, float | int]:
    """Keep `concurrency` callers busy for `duration_s`, each starting its next call when one returns.

    Args:
        call: makes request number i (0, 1, 2, ... across all callers).
        concurrency: calls in flight.
        duration_s: no call starts after this many seconds.
        errors: exception types counted as failed calls (others propagate).

    Returns:
        {"rps", "p50_ms", "p95_ms", "errors", "requests"}: successful calls per second of the window,
        their latency quantiles, failed calls, and all calls made.
    """
    latencies_ms: list[float] = []
    failed = 0
    next_index = 0
    deadline = time.perf_counter() + duration_s

    async def caller() -> None:
        nonlocal failed, next_index
        while time.perf_counter() < deadline:
            index, next_index = next_index, next_index + 1
            t0 = time.perf_counter()
            try:
                await call(index)
            except errors:
                failed += 1
                continue
            latencies_ms.append((time.perf_counter() - t0) * 1000)

    t_start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    latencies_ms.sort()
    done = len(latencies_ms)
    return {"rps": round(done / elapsed, 2), "p50_ms": round(percentile(latencies_ms, 0.5), 2),
            "p95_ms": round(percentile(latencies_ms, 0.95), 2), "errors": failed, "requests": done + failed}
