"""Benchmark: requests/s and latency of the rewriting endpoint over real HTTP (loopback).

`run()` starts the endpoint on a local Ray (deploy/serve_local.py) unless given the URL of a
running one, warms it up, then keeps `concurrency` aiohttp clients posting `/v1/rewrite` for
`duration_s`, each sending its next request when the last one is answered. Requests are the data
set's queries in turn. Besides throughput and latency it reports the share of answers that fell
back to the original query and the mean engine batch (from `/healthz` before and after).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.serve_config import ServeConfig
from deepretrieval.deploy.bench_common import closed_loop

_WARMUP_REQUESTS = 4


class _NotOk(Exception):
    """The endpoint answered a status other than 200."""


async def _load(url: str, queries: list[str], task: str | None, concurrency: int, duration_s: float, timeout_s: float) -> dict[str, Any]:
    fallbacks = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def rewrite(i: int) -> None:
            nonlocal fallbacks
            body: dict[str, Any] = {"query": queries[i % len(queries)]}
            if task is not None:
                body["task"] = task
            async with session.post(f"{url}/v1/rewrite", json=body) as r:
                answer = await r.json(content_type=None)
                if r.status != 200:
                    raise _NotOk(f"HTTP {r.status}: {answer}")
            fallbacks += bool(answer["fallback"])

        async def health() -> dict[str, Any]:
            async with session.get(f"{url}/healthz") as r:
                return await r.json()

        await asyncio.gather(*(rewrite(len(queries) - 1 - i) for i in range(_WARMUP_REQUESTS)))
        fallbacks = 0
        before = await health()
        stats = await closed_loop(rewrite, concurrency, duration_s, (aiohttp.ClientError, asyncio.TimeoutError, _NotOk))
        after = await health()
    answered = stats["requests"] - stats["errors"]
    batches = after["batches"] - before["batches"]
    return {**stats, "fallback_share": round(fallbacks / max(1, answered), 3),
            "mean_batch": round((after["generated"] - before["generated"]) / max(1, batches), 2),
            "model": after["model"], "engine": after["engine"], "constrained": after["constrained"], "torch_threads": after["torch_threads"]}


def run(config: ServeConfig, dataset: str, *, concurrency: int, duration_s: float, url: str | None = None,
        task: str | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
    """Measure the endpoint's throughput and latency.

    Args:
        config: the endpoint to start (ignored, but for the report, when `url` is given).
        dataset: data set whose queries are the requests (name under the data root, or a folder).
        concurrency: requests in flight.
        duration_s: measured seconds (after a warm-up of a few requests).
        url: base URL of a running endpoint; None starts one locally on a free port.
        task: task named in each request; None = the endpoint's default.
        timeout_s: timeout of one request.

    Returns:
        JSON-able {"rps", "p50_ms", "p95_ms", "errors", "requests", "fallback_share", "mean_batch",
        ...} plus the settings.
    """
    from deepretrieval.deploy.serve_local import free_port, local_serve

    ds = BeirDataset.open(dataset, config.paths.data_root)
    queries = list(ds.queries().values())
    settings = {"concurrency": concurrency, "duration_s": duration_s, "dataset": ds.name,
                "max_new_tokens": config.max_new_tokens, "max_batch_size": config.max_batch_size,
                "batch_wait_timeout_s": config.batch_wait_timeout_s, "replicas": config.replicas.model_dump()}
    if url is not None:
        stats = asyncio.run(_load(url.rstrip("/"), queries, task, concurrency, duration_s, timeout_s))
        return {**stats, **settings, "server": url}
    with local_serve({"/": config}, port=free_port()) as local_url:
        stats = asyncio.run(_load(local_url, queries, task, concurrency, duration_s, timeout_s))
    return {**stats, **settings, "server": "local Ray Serve (loopback)"}
