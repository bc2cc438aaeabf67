"""Scoring outside the training loop (warm-up, held-out eval) with the run's own rewarder, in process.

The same backends, cache, rate limiter, retries and `rl.reward` / `rl.search.*` spans as the
rewarder fleet; the request sent as is gets scored through the same parser as a canonical answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from deepretrieval.common.answer_format import render_answer
from deepretrieval.common.errors import BackendUnavailable
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.common.wire import ORIGINAL_ENGINE, Prompt, Rollout, SamplingParams, Scored

log = logging.getLogger(__name__)


def await_chain(task: asyncio.Task) -> str:
    """Where a pending task waits: its coroutine and every coroutine it awaits, innermost last."""
    lines = []
    coro = task.get_coro()
    while coro is not None and len(lines) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return "".join(lines) + (f"  awaiting {coro!r}\n" if coro is not None else "")


def task_specs(cfg: TrainConfig) -> dict:
    """Task name -> TaskSpec (with the run's overrides)."""
    from deepretrieval.common.tasks import get_task

    return {t.task: get_task(t.task, t.overrides) for t in cfg.tasks}


def sample_rollouts(engine, tokenizer, prompts: Sequence[Prompt], params: SamplingConfig, *,
                    regexes: Mapping[str, str] | None = None, batch_prompts: int = 16) -> list[Rollout]:
    """Sample `params.n` completions per prompt (grammar-constrained by task when `regexes` is given) as rollouts.

    Each group gets `rl.generate` spans like the actor's, so these samples trace the same way.
    """
    from opentelemetry import trace

    from deepretrieval.actors.actor import rollouts_from_group
    from deepretrieval.actors.base import GenerationRequest
    from deepretrieval.common.chat import build_prompt_ids

    tracer = trace.get_tracer("deepretrieval")
    out: list[Rollout] = []
    for start in range(0, len(prompts), batch_prompts):
        batch = prompts[start:start + batch_prompts]
        reqs = [GenerationRequest(build_prompt_ids(tokenizer, p.messages, p.prefill), regexes[p.task] if regexes else None) for p in batch]
        t0 = time.time_ns()
        groups = engine.generate(reqs, params)
        t1 = time.time_ns()
        for p, r, g in zip(batch, reqs, groups):
            out.extend(rollouts_from_group(p, r, g, version=engine.policy_version, sampling=params, engine_name=engine.name,
                                           tracer=tracer, start_ns=t0, end_ns=t1))
        log.info("sampled %d/%d prompts", min(start + batch_prompts, len(prompts)), len(prompts))
    return out


def original_rollouts(prompts: Sequence[Prompt], tokenizer, cfg: TrainConfig) -> list[Rollout]:
    """Each request sent as is, wrapped in the canonical answer, as a rollout the rewarder scores (as is, never composed)."""
    specs = task_specs(cfg)
    params = SamplingParams(0.0, 1.0, cfg.sampling.max_new_tokens, False)
    out = []
    for prompt in prompts:
        text = render_answer(specs[prompt.task].answer, prompt.request)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(Rollout(uid=f"original-{prompt.uid}", group_id=f"original-{prompt.uid}", prompt_uid=prompt.uid, policy_version=0,
                           prompt_token_ids=[0], response_token_ids=ids, logprobs=[0.0] * len(ids), sampling=params,
                           finish_reason="stop", completion=text, engine=ORIGINAL_ENGINE, created_at=time.time()))
    return out


async def score_rollouts(cfg: TrainConfig, rollouts: Sequence[Rollout], split_of: str = "train_split", *,
                         deadline_s: float = 600.0) -> list[Scored]:
    """Score rollouts with the run's rewarder in this process (needs `cfg.transport.url` for its cache).

    Args:
        cfg: the run config (tasks, backends, cache, retries).
        rollouts: rollouts of prompts of the given split.
        split_of: which prepared prompt files the rewarder reads targets from ("train_split" or "eval_split").
        deadline_s: give up (BackendUnavailable, with the stacks of what still waits logged) after this long.
    """
    from deepretrieval.common.telemetry import get_tracer
    from deepretrieval.deploy.workers import rewarder_service_config
    from deepretrieval.rewarders.service import RewarderService

    service = RewarderService(rewarder_service_config(cfg, "in-process", split_of), get_tracer())
    try:
        rewarder = await service.rewarder()
        gate = asyncio.Semaphore(cfg.rewarders.rewarder.concurrency)

        async def one(r: Rollout) -> Scored:
            async with gate:
                return await rewarder.score(r)

        tasks = [asyncio.create_task(one(r)) for r in rollouts]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        if pending:
            # The rewarder retries within its own budget, so this is a bug, not a slow API: say where it hangs.
            for task in list(asyncio.all_tasks())[:20]:
                if not task.done() and task is not asyncio.current_task():
                    log.error("still pending after %.0f s: %s\n%s", deadline_s, task.get_name(), await_chain(task))
            for task in pending:
                task.cancel()
            raise BackendUnavailable(f"{len(pending)} of {len(rollouts)} rollouts were not scored within {deadline_s:.0f} s "
                                     "(the rewarder's retry budget is far shorter); see the pending tasks logged above")
        return [t.result() for t in tasks]
    finally:
        await service.close()
