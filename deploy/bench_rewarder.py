"""Benchmark: queries/s through the rewarder vs raw pyserini `batch_search`, in one run.

Both sides search the same Lucene index for the same queries at the same k. The rewarder side is
the whole scoring path: rollouts read from Redis, answers parsed, searched (micro-batched),
scored with nDCG, Scored records published and rollouts acked; its cache is off so every query
reaches Lucene. `ratio = rewarder_qps / raw_qps`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from deepretrieval.common.backend_config import LuceneBackendSpec
from deepretrieval.common.config import BM25Config, PathsConfig
from deepretrieval.common.config_pipeline import RewardCacheConfig, TransportConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.prepare import prepare
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.run_config import RewarderConfig, TaskRunConfig
from deepretrieval.common.synthetic import answer_completion, make_rollout
from deepretrieval.common.tasks import get_task
from deepretrieval.deploy.bench_common import drain_scored, private_redis, publish_rollouts
from deepretrieval.rewarders.bm25 import BM25Backend
from deepretrieval.rewarders.lucene_index import ensure_lucene_index
from deepretrieval.rewarders.service import RewarderService, RewarderServiceConfig, serve_rewarder


async def _run(dataset: str, paths: PathsConfig, samples: int, k: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    task = get_task("sparse")
    files = prepare(task, dataset, paths.data_root, workdir, None)
    book = PromptBook.from_files([f.path for f in files])
    prompts = list(book)
    chosen = [prompts[i % len(prompts)] for i in range(samples)]
    rollouts = [make_rollout(p, answer_completion(p.request)) for p in chosen]

    ds = BeirDataset.open(dataset, paths.data_root)
    bm25 = BM25Backend(ensure_lucene_index(ds, paths.index_dir), BM25Config())
    queries = {str(i): p.request for i, p in enumerate(chosen)}
    bm25.batch_search(dict(list(queries.items())[:200]), k)  # JIT warm-up
    t0 = time.perf_counter()
    bm25.batch_search(queries, k)
    raw_s = time.perf_counter() - t0
    await bm25.close()

    async with private_redis() as url:
        await publish_rollouts(url, "bench", rollouts)
        cfg = RewarderServiceConfig(
            run="bench", prompt_files=[f.path for f in files],
            tasks=[TaskRunConfig(task="sparse", backend=LuceneBackendSpec(dataset=dataset), k=k)],
            transport=TransportConfig(url=url, block_ms=50, backlog_bound=samples + 1),
            cache=RewardCacheConfig(enabled=False), rewarder=RewarderConfig(concurrency=concurrency, read_count=256),
            paths=paths)
        # Warm the scoring path (JVM JIT, imports) on a separate run name, then time the real one.
        await publish_rollouts(url, "warm", rollouts[:200])
        await serve_rewarder(cfg.model_copy(update={"run": "warm"}), asyncio.Event(), max_samples=200)
        service = RewarderService(cfg)  # set-up (index open, prompts) is not timed; scoring is
        try:
            rewarder = await service.rewarder()
            t0 = time.perf_counter()
            stats = await rewarder.run(asyncio.Event(), max_samples=samples)
            rewarder_s = time.perf_counter() - t0
        finally:
            await service.close()
        scored = await drain_scored(url, "bench", samples, timeout_s=60)
    ok = sum(s.status == "ok" for s in scored)
    return {
        "dataset": dataset, "samples": samples, "k": k, "concurrency": concurrency,
        "raw_qps": samples / raw_s, "rewarder_qps": samples / rewarder_s, "ratio": raw_s / rewarder_s,
        "raw_s": raw_s, "rewarder_s": rewarder_s, "scored": len(scored), "scored_ok": ok,
        "rewarder_stats": {"by_status": stats.by_status, "api_calls": stats.api_calls},
    }


def run(dataset: str, paths: PathsConfig, samples: int = 3000, k: int = 50, concurrency: int = 256) -> dict[str, Any]:
    """Measure and return the JSON-able result (see module docstring)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dr-bench-rewarder-") as tmp:
        return asyncio.run(_run(dataset, paths, samples, k, concurrency, Path(tmp)))
