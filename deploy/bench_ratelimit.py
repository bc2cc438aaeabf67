"""Benchmark: N rewarder processes sharing one API quota through the Redis token bucket.

A PubMed emulator (its own process) enforces `quota` requests/s for one API key and counts what
it answers. N rewarder processes score rollouts whose queries are all different (cache off), so
every sample is one esearch call. Over `duration` seconds after warm-up: `achieved_rps` = answers
the server gave that were not 429, `ratio = achieved_rps / quota_rps`, and `http_429` = refusals
over the whole run (target 0: requests wait for a token instead of being sent and refused).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from deepretrieval.common.backend_config import PubMedBackendSpec
from deepretrieval.common.config import ApiClientConfig, EmulatorConfig, PathsConfig
from deepretrieval.common.config_pipeline import RateLimitConfig, RewardCacheConfig, TransportConfig
from deepretrieval.common.prepare import prepare
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.run_config import RewarderConfig, TaskRunConfig
from deepretrieval.common.synthetic import answer_completion, make_rollout
from deepretrieval.common.tasks import get_task
from deepretrieval.deploy.bench_common import emulator_stats, private_redis, publish_rollouts, spawn_rewarders, stop_processes
from deepretrieval.rewarders.emulators.process import EmulatorProcess
from deepretrieval.rewarders.service import RewarderServiceConfig

KEY_ENV = "DEEPRETRIEVAL_BENCH_PUBMED_KEY"


def pubmed_service_config(run: str, url: str, base_url: str, prompt_files: list[Path], paths: PathsConfig, *,
                          quota: float, headroom: float, cache: bool, concurrency: int) -> RewarderServiceConfig:
    """A rewarder config scoring the pubmed task against `base_url` with the bench API key."""
    client = ApiClientConfig(base_url=base_url, api_key_env=KEY_ENV, timeout_s=10.0)
    backend = PubMedBackendSpec(client=client, rate_limit=RateLimitConfig(limit_per_s=quota, headroom=headroom))
    return RewarderServiceConfig(
        run=run, prompt_files=prompt_files, tasks=[TaskRunConfig(task="pubmed", backend=backend, k=100)],
        transport=TransportConfig(url=url, block_ms=100, backlog_bound=100_000),
        cache=RewardCacheConfig(enabled=cache), rewarder=RewarderConfig(concurrency=concurrency), paths=paths)


async def _wait_requests(base_url: str, at_least: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await emulator_stats(base_url)
        if stats["requests"] >= at_least or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


async def _run(paths: PathsConfig, dataset: str, rewarders: int, quota: float, duration: float, headroom: float, workdir: Path) -> dict[str, Any]:
    files = prepare(get_task("pubmed"), dataset, paths.data_root, workdir, ["train"])
    prompts = list(PromptBook.from_files([files[0].path]))
    need = int(quota * (duration + 15) * 1.5) + 50
    rollouts = [make_rollout(prompts[i % len(prompts)], answer_completion(f"{prompts[i % len(prompts)].request} r{i}")) for i in range(need)]
    os.environ[KEY_ENV] = "bench-key"
    emu = EmulatorProcess(EmulatorConfig(api="pubmed", dataset=dataset, port=0, rate_limit_rps_with_key=quota), paths)
    base_url = await asyncio.get_running_loop().run_in_executor(None, emu.start)
    try:
        async with private_redis() as url:
            await publish_rollouts(url, "ratelimit", rollouts)
            cfg = pubmed_service_config("ratelimit", url, base_url, [files[0].path], paths, quota=quota,
                                        headroom=headroom, cache=False, concurrency=16)
            procs = spawn_rewarders(cfg.model_dump_json(), rewarders)
            try:
                start = await _wait_requests(base_url, at_least=int(2 * quota) + rewarders, timeout_s=120)
                t0 = time.monotonic()
                await asyncio.sleep(duration)
                end = await emulator_stats(base_url)
                elapsed = time.monotonic() - t0
            finally:
                stop_processes(procs)
            final = await emulator_stats(base_url)
    finally:
        emu.stop()
    served = {k: end["by_status"].get(k, 0) - start["by_status"].get(k, 0) for k in end["by_status"]}
    achieved = sum(v for k, v in served.items() if k != "429") / elapsed
    return {
        "quota_rps": quota, "achieved_rps": achieved, "ratio": achieved / quota,
        "http_429": int(final["by_status"].get("429", 0)),
        "errors": int(sum(v for k, v in final["by_status"].items() if k.startswith("5"))),
        "rewarders": rewarders, "duration_s": elapsed, "headroom": headroom,
        "server_answers_in_window": served, "server_answers_total": final["by_status"],
    }


def run(paths: PathsConfig, *, dataset: str = "scifact", rewarders: int = 4, quota: float = 10.0, duration: float = 30.0,
        headroom: float = 0.97) -> dict[str, Any]:
    """Measure and return the JSON-able result (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="dr-bench-ratelimit-") as tmp:
        return asyncio.run(_run(paths, dataset, rewarders, quota, duration, headroom, Path(tmp)))
