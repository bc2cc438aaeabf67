"""Faults that must lose nothing: a flaky, refusing, garbling or hanging API; a rewarder killed -9."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal

from deepretrieval.common.backend_config import PubMedBackendSpec
from deepretrieval.common.config import ApiClientConfig
from deepretrieval.common.config_pipeline import RateLimitConfig, RewardCacheConfig, TransportConfig
from deepretrieval.common.run_config import RetryConfig, RewarderConfig, TaskRunConfig
from deepretrieval.deploy.bench_common import drain_scored, publish_rollouts
from deepretrieval.rewarders.service import RewarderServiceConfig, run_rewarder_process, serve_rewarder
from tests.pipeline.helpers import answer, prepared_prompts, read_prompts, rollout

FAST_RETRY = RetryConfig(max_attempts=12, backoff_base_s=0.02, backoff_max_s=0.2, budget_s=30, timeout_s=2.0, retry_after_default_s=0.05)


def _config(run, redis_url, base_url, prompt_file, paths, *, retry=FAST_RETRY, claim_idle_ms=60_000, concurrency=16, consumer=None):
    backend = PubMedBackendSpec(client=ApiClientConfig(base_url=base_url, timeout_s=10), rate_limit=RateLimitConfig(limit_per_s=500, headroom=1.0))
    return RewarderServiceConfig(
        run=run, prompt_files=[prompt_file], tasks=[TaskRunConfig(task="pubmed", backend=backend, k=50)],
        transport=TransportConfig(url=redis_url, block_ms=100, claim_idle_ms=claim_idle_ms),
        cache=RewardCacheConfig(enabled=False), retry=retry, rewarder=RewarderConfig(concurrency=concurrency),
        paths=paths, consumer=consumer)


async def _score_all(run, redis_url, base_url, prompt_file, paths, rollouts, **kw):
    await publish_rollouts(redis_url, run, rollouts)
    stats = await serve_rewarder(_config(run, redis_url, base_url, prompt_file, paths, **kw), asyncio.Event(), max_samples=len(rollouts))
    return stats, {s.rollout.uid: s for s in await drain_scored(redis_url, run, len(rollouts), timeout_s=60)}


def _rollouts(prompt_file, n):
    prompts = read_prompts(prompt_file, n)
    return [rollout(p, answer(" OR ".join(p.request.split()[:4]))) for p in prompts]


async def test_flaky_api_is_retried_to_the_same_rewards(tmp_path, redis_url, data_root, emu_paths, pubmed_url, start_emulator):
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    rollouts = _rollouts(prompt_file, 20)
    _, clean = await _score_all("clean", redis_url, pubmed_url, prompt_file, emu_paths, rollouts)
    flaky_url = start_emulator("pubmed", rate_limit=False, faults={
        "error_5xx_rate": 0.25, "burst_429_rate": 0.1, "burst_429_len": 2, "garbage_rate": 0.2, "retry_after_s": 0, "seed": 3})
    stats, flaky = await _score_all("flaky", redis_url, flaky_url, prompt_file, emu_paths, rollouts)
    assert set(flaky) == set(clean) == {r.uid for r in rollouts}
    assert stats.retries > 0
    for uid, s in flaky.items():
        assert s.status == "ok", s.error
        assert s.reward == clean[uid].reward and s.retrieved_ids == clean[uid].retrieved_ids


async def test_api_down_or_hanging_gives_unavailable_never_a_number(tmp_path, redis_url, data_root, emu_paths, start_emulator):
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    rollouts = _rollouts(prompt_file, 4)
    retry = RetryConfig(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, budget_s=5, timeout_s=0.5)
    down = start_emulator("pubmed", rate_limit=False, faults={"error_5xx_rate": 1.0})
    hang = start_emulator("pubmed", rate_limit=False, faults={"hang_rate": 1.0, "hang_s": 5.0})
    for run, url in (("down", down), ("hang", hang)):
        stats, scored = await _score_all(run, redis_url, url, prompt_file, emu_paths, rollouts, retry=retry)
        assert len(scored) == 4
        for s in scored.values():
            assert s.status == "unavailable"
            assert s.reward is None and "gave up after 2 attempt" in (s.error or "")
        assert stats.by_status["unavailable"] == 4


def _rewarder_proc(config_json: str):
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=run_rewarder_process, args=(config_json,))
    p.start()
    return p


async def test_kill_9_mid_batch_loses_nothing(tmp_path, redis_url, data_root, emu_paths, start_emulator):
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    rollouts = _rollouts(prompt_file, 40)
    slow_url = start_emulator("pubmed", rate_limit=False, faults={"latency_ms": 400})
    await publish_rollouts(redis_url, "kill", rollouts)
    first = _rewarder_proc(_config("kill", redis_url, slow_url, prompt_file, emu_paths, concurrency=8, claim_idle_ms=1500, consumer="victim").model_dump_json())
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while len(seen) < 4:  # the victim has scored a few and holds others in flight
        assert loop.time() < deadline, "first rewarder never scored anything"
        seen += await drain_scored(redis_url, "kill", 1, timeout_s=1)
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    second = _rewarder_proc(_config("kill", redis_url, slow_url, prompt_file, emu_paths, concurrency=8, claim_idle_ms=1500, consumer="rescuer").model_dump_json())
    try:
        uids = [s.rollout.uid for s in seen]
        while set(uids) != {r.uid for r in rollouts}:
            assert loop.time() < deadline + 120, f"{len(set(uids))} of {len(rollouts)} scored"
            uids += [s.rollout.uid for s in await drain_scored(redis_url, "kill", 1, timeout_s=1)]
    finally:
        second.terminate()
        second.join(20)
    # At-least-once: every uid scored; a few may be scored twice (killed after publishing, before
    # acking) and the learner's uid ledger drops those duplicates.
    assert set(uids) == {r.uid for r in rollouts}
    assert len(uids) - len(set(uids)) <= 8
