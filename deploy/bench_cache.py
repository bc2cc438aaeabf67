"""Benchmark: the reward cache calls the API once per distinct query.

`requests` rollouts are scored by one rewarder against the PubMed emulator (rate limit off); a
`duplicate_fraction` of them repeat a query used before (in the same group or a later step).
`expected_api_calls` = distinct queries; `api_calls` = esearch answers the server gave.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from deepretrieval.common.config import EmulatorConfig, PathsConfig
from deepretrieval.common.prepare import prepare
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.synthetic import answer_completion, make_rollout
from deepretrieval.common.tasks import get_task
from deepretrieval.deploy.bench_common import emulator_stats, private_redis, publish_rollouts
from deepretrieval.deploy.bench_ratelimit import KEY_ENV, pubmed_service_config
from deepretrieval.rewarders.emulators.process import EmulatorProcess
from deepretrieval.rewarders.service import serve_rewarder


async def _run(paths: PathsConfig, dataset: str, requests: int, duplicate_fraction: float, seed: int, workdir: Path) -> dict[str, Any]:
    import os

    files = prepare(get_task("pubmed"), dataset, paths.data_root, workdir, ["train"])
    prompts = list(PromptBook.from_files([files[0].path]))
    rng = random.Random(seed)
    n_unique = round(requests * (1 - duplicate_fraction))
    unique = [(prompts[i % len(prompts)], f"{prompts[i % len(prompts)].request} q{i}") for i in range(n_unique)]
    picks = unique + [rng.choice(unique) for _ in range(requests - n_unique)]
    rng.shuffle(picks)
    rollouts = [make_rollout(p, answer_completion(q)) for p, q in picks]
    os.environ[KEY_ENV] = "bench-key"
    emu = EmulatorProcess(EmulatorConfig(api="pubmed", dataset=dataset, port=0, rate_limit=False), paths)
    base_url = await asyncio.get_running_loop().run_in_executor(None, emu.start)
    try:
        async with private_redis() as url:
            await publish_rollouts(url, "cache", rollouts)
            cfg = pubmed_service_config("cache", url, base_url, [files[0].path], paths, quota=1000.0, headroom=1.0,
                                        cache=True, concurrency=64)
            before = await emulator_stats(base_url)
            stats = await serve_rewarder(cfg, asyncio.Event(), max_samples=requests)
            after = await emulator_stats(base_url)
    finally:
        emu.stop()
    # One einfo probe per rewarder start is not a search: count esearch answers only.
    api_calls = after["requests"] - before["requests"] - 1
    expected = len({q for _, q in picks})
    return {"requests": requests, "duplicate_fraction": duplicate_fraction, "api_calls": api_calls,
            "expected_api_calls": expected, "deviation": (api_calls - expected) / expected,
            "cache_hits_reported": stats.cache_hits, "scored": stats.scored, "by_status": stats.by_status}


def run(paths: PathsConfig, *, dataset: str = "scifact", requests: int = 1000, duplicate_fraction: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Measure and return the JSON-able result (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="dr-bench-cache-") as tmp:
        return asyncio.run(_run(paths, dataset, requests, duplicate_fraction, seed, Path(tmp)))
