"""Benchmark: requests/s an API emulator serves over loopback, with its rate limit off.

`run()` starts the emulator (a child process by default, so the load generator does not share
its interpreter), warms it up, then keeps `concurrency` clients busy for `duration_s` with the
project's own aiohttp clients (PubMedClient / CtgovClient, one request per search at k=100).
Queries are the data set's queries rewritten as an OR of up to 8 of their words: the expensive
case for the server (many matches to count and rank), unlike a raw request, whose implicit AND
of every word matches almost nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiohttp

from deepretrieval.common.config import ApiClientConfig, EmulatorConfig, PathsConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.errors import DeepRetrievalError
from deepretrieval.deploy.bench_common import closed_loop
from deepretrieval.rewarders.ctgov import CtgovClient
from deepretrieval.rewarders.pubmed import PubMedClient

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]{2,}")
_WARMUP_REQUESTS = 50


def bench_queries(ds: BeirDataset, max_words: int = 8) -> list[str]:
    """The data set's queries as `w1 OR w2 OR ...` (boolean syntax both APIs share)."""
    out = []
    for text in ds.queries().values():
        words = [w for w in _WORD.findall(text) if w not in ("AND", "OR", "NOT")][:max_words]
        if words:
            out.append(" OR ".join(words))
    return out


@asynccontextmanager
async def _emulator(cfg: EmulatorConfig, paths: PathsConfig, in_process: bool) -> AsyncIterator[str]:
    if in_process:
        from deepretrieval.rewarders.emulators.runner import run_emulator

        async with run_emulator(cfg, paths) as server:
            yield server.base_url
        return
    from deepretrieval.rewarders.emulators.process import EmulatorProcess

    proc = EmulatorProcess(cfg, paths)
    base_url = await asyncio.get_running_loop().run_in_executor(None, proc.start)
    try:
        yield base_url
    finally:
        proc.stop()


async def _load(base_url: str, api: str, queries: list[str], concurrency: int, duration_s: float, k: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cfg = ApiClientConfig(base_url=base_url, timeout_s=30.0)
        client = PubMedClient(cfg, session) if api == "pubmed" else CtgovClient(cfg, session)
        for q in queries[:_WARMUP_REQUESTS]:
            await client.search(q, k)
        return await closed_loop(lambda i: client.search(queries[i % len(queries)], k), concurrency, duration_s, (DeepRetrievalError,))


def run(dataset: str, data_root: Path, index_root: Path, api: Literal["pubmed", "ctgov"], concurrency: int, duration_s: float,
        *, k: int = 100, in_process: bool = False, search_threads: int = 4) -> dict[str, Any]:
    """Measure the emulator's throughput and latency.

    Args:
        dataset: data set name under `data_root`, or a BEIR folder.
        data_root: the data root.
        index_root: folder of the Lucene indexes (built there if missing).
        api: "pubmed" or "ctgov".
        concurrency: requests in flight.
        duration_s: measured seconds (after a warm-up of 50 requests).
        k: ids asked per search.
        in_process: serve from this process instead of a child (no subprocess start-up).
        search_threads: the emulator's Lucene threads.

    Returns:
        JSON-able {"api", "rps", "p50_ms", "p95_ms", "errors", "requests"} plus the settings
        (`requests` counts successful and failed searches in the measured window).
    """
    ds = BeirDataset.open(dataset, data_root)
    queries = bench_queries(ds)
    cfg = EmulatorConfig(api=api, dataset=str(ds.root), port=0, rate_limit=False, search_threads=search_threads)
    paths = PathsConfig(data_root=data_root, index_dir=index_root)

    async def main() -> dict[str, Any]:
        async with _emulator(cfg, paths, in_process) as base_url:
            return await _load(base_url, api, queries, concurrency, duration_s, k)

    stats = asyncio.run(main())
    return {"api": api, **stats, "dataset": ds.name, "concurrency": concurrency, "duration_s": duration_s, "k": k,
            "server": "in-process" if in_process else "subprocess"}
