"""The learner process loop: batch, train, publish weights, commit (checkpoint + ack), log.

Exactly-once training: a step's stream entries are acked only once a checkpoint covers the step,
and the checkpoint stores the ledger of trained uids. After a crash the learner resumes from the
newest checkpoint, gets back its un-acked entries (`read_own_pending`), and the ledger drops any
uid that checkpoint already trained.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import fmean

from opentelemetry import trace
from opentelemetry.trace import Link

from deepretrieval.common import trace_names as names
from deepretrieval.common.base import Transport
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.common.streams import scored_stream
from deepretrieval.common.telemetry import extract_context
from deepretrieval.learner.batcher import LEARNER_GROUP, Batch, Batcher
from deepretrieval.learner.checkpoint import checkpoint_path, latest_checkpoint, prune_checkpoints
from deepretrieval.learner.sequences import build_samples, has_spread
from deepretrieval.learner.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """What one step logs to metrics.jsonl."""

    values: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(self.values, default=float)


def _batch_metrics(batch: Batch, lags: list[int]) -> dict[str, float]:
    """Step metrics over every group the step read: those trained and those dropped for tied rewards."""
    read = batch.scored + batch.dropped
    rewards = [s.reward for s in read if s.reward is not None]
    fmt_fail = [s for s in read if s.status == "invalid"]
    lat = [s.latency_s for s in read if not s.cache_hit]
    nan = float("nan")
    return {
        "reward_mean": fmean(rewards) if rewards else nan,
        "reward_max": max(rewards) if rewards else nan,
        "format_error_share": len(fmt_fail) / max(1, len(read)),
        "staleness_mean": fmean(lags) if lags else nan,
        "staleness_max": float(max(lags)) if lags else nan,
        "cache_hit_rate": sum(s.cache_hit for s in read) / max(1, len(read)),
        "search_latency_mean_s": fmean(lat) if lat else 0.0,
        "response_tokens_mean": fmean(len(s.rollout.response_token_ids) for s in read) if read else nan,
        "groups_dropped_tied": float(len({s.rollout.group_id for s in batch.dropped})),
        **_per_backend(batch),
    }


def _per_backend(batch: Batch) -> dict[str, float]:
    """Per search backend (one per task in a multi-task run): the reward over the groups read,
    and how many groups it had among those trained and those dropped for tied rewards.

    A mixed run's `reward_mean` moves when the mix moves; these say which task learnt and which
    task's groups filled the steps.
    """
    out: dict[str, float] = {}
    read = batch.scored + batch.dropped
    for backend in sorted({s.backend for s in read}):
        rewards = [s.reward for s in read if s.backend == backend and s.reward is not None]
        out[f"reward_mean/{backend}"] = fmean(rewards) if rewards else float("nan")
        out[f"groups_trained/{backend}"] = float(len({s.rollout.group_id for s in batch.scored if s.backend == backend}))
        out[f"groups_dropped_tied/{backend}"] = float(len({s.rollout.group_id for s in batch.dropped if s.backend == backend}))
    return out


class Learner:
    """Trains on batches from the batcher and publishes each new version.

    Args:
        trainer: the model and optimizer (resumed by `resume`).
        cfg: learner config.
        transport, coordinator, run: the run's Redis plumbing.
        publish: `publish(version) -> seconds` exports and announces weights (a WeightSync).
        group_size: G.
        checkpoint_root: where checkpoints go.
        metrics_file: metrics.jsonl of the run.
        tracer: for `rl.train` spans linked to each sample's trace.
    """

    def __init__(self, trainer: Trainer, cfg: LearnerConfig, transport: Transport, coordinator: Coordinator, run: str, *,
                 publish, group_size: int, checkpoint_root: Path, metrics_file: Path, tracer: trace.Tracer | None = None,
                 consumer: str = "learner-0"):
        self.trainer = trainer
        self.cfg = cfg
        self._transport = transport
        self._coord = coordinator
        self._run = run
        self._publish = publish
        self._ckpt_root = Path(checkpoint_root)
        self._metrics_file = Path(metrics_file)
        self._tracer = tracer or trace.get_tracer("deepretrieval")
        self.ledger: set[str] = set()
        self.trained: list[str] = []  # uids in training order, this lineage (duplicates would show here)
        self.steps = 0  # learner steps of this lineage (max_steps counts these, not version numbers)
        self._uncommitted: list[str] = []
        fill = cfg.fill_with_spread
        self.batcher = Batcher(transport, coordinator, run, group_size=group_size, groups_per_step=cfg.groups_per_step,
                               max_staleness=cfg.max_staleness, ledger=self.ledger, consumer=consumer,
                               spread=partial(has_spread, cfg=cfg.loss) if fill else None,
                               max_groups=cfg.fill_max_groups * cfg.groups_per_step if fill else None)
        self.idle_s = 0.0
        self.busy_s = 0.0

    def resume(self) -> int:
        """Load the newest complete checkpoint (if any); returns the policy version resumed at."""
        path = latest_checkpoint(self._ckpt_root)
        if path is None:
            return self.trainer.policy_version
        extra = self.trainer.load_checkpoint(path)
        self.trained = list(extra.get("trained", []))
        self.steps = int(extra.get("steps", 0))
        self.ledger.update(self.trained)
        self.trainer.policy_version = int(extra.get("policy_version", self.trainer.step))
        log.info("resumed from %s: step %d, policy v%d, %d uids trained", path, self.trainer.step, self.trainer.policy_version, len(self.ledger))
        return self.trainer.policy_version

    def continue_numbering(self, announced: int | None) -> int:
        """After `resume`: number on after the versions a crashed predecessor announced past our checkpoint.

        Versions never go backwards, so actors load the resumed weights; the batcher learns which
        versions the lost lineage used (`Batcher.continue_lineage`).

        Args:
            announced: the newest version announced on the run's Redis, or None.

        Returns:
            The policy version this learner publishes next.
        """
        resumed = self.trainer.policy_version
        if announced is not None and announced >= resumed:
            self.trainer.policy_version = announced + 1
            self.batcher.continue_lineage(resumed, self.trainer.policy_version)
        return self.trainer.policy_version

    async def commit(self) -> Path:
        """Checkpoint (model, optimizer, RNG, step, version, trained uids), then ack what it covers."""
        path = checkpoint_path(self._ckpt_root, self.steps)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: self.trainer.save_checkpoint(
            path, extra={"trained": self.trained, "steps": self.steps, "policy_version": self.trainer.policy_version}))
        if self._uncommitted:
            await self._transport.ack(scored_stream(self._run), LEARNER_GROUP, self._uncommitted)
            self._uncommitted = []
        prune_checkpoints(self._ckpt_root, self.cfg.keep_checkpoints)
        return path

    def _train_span(self, batch: Batch, metrics: dict[str, float], start_ns: int) -> None:
        links = []
        for s in batch.scored:
            if s.rollout.traceparent:
                ctx = trace.get_current_span(extract_context(s.rollout.traceparent)).get_span_context()
                if ctx.is_valid:
                    links.append(Link(ctx, {names.UID: s.rollout.uid}))
        with self._tracer.start_as_current_span(names.TRAIN, links=links, start_time=start_ns) as span:
            span.set_attributes({names.TRAIN_STEP: self.trainer.step, names.POLICY_VERSION: self.trainer.policy_version,
                                 names.TRAIN_SAMPLES: len(batch.scored), names.TRAIN_LOSS: metrics.get("loss", float("nan"))})

    async def step(self, stop: asyncio.Event | None = None) -> dict[str, float] | None:
        """One optimizer step on the next batch, then publish the new version; None if stopped."""
        t_wait = time.perf_counter()
        batch = await self.batcher.next_batch(self.trainer.policy_version, stop)
        waited = time.perf_counter() - t_wait
        if batch is None:
            return None
        t0, start_ns = time.perf_counter(), time.time_ns()
        samples, gstats = build_samples(batch.scored, self.cfg.loss, dynamic_sampling=self.cfg.dynamic_sampling)
        version_before = self.trainer.policy_version
        loop = asyncio.get_running_loop()
        training = loop.run_in_executor(None, self.trainer.train_step, samples)
        draining = asyncio.create_task(self.batcher.drain(version_before, training))
        try:
            metrics = await training
        finally:
            await draining
        # One learner step = one new policy version, whether or not the optimizer stepped
        # (Trainer.train_step bumps the version only when it did).
        self.trainer.policy_version = version_before + 1
        self.steps += 1
        self.ledger.update(batch.uids)
        self.trained += batch.uids
        self._uncommitted += batch.entry_ids
        publish_s = await self._publish(self.trainer.policy_version)
        await self._coord.consume(batch.group_ids)
        train_s = time.perf_counter() - t0
        self.idle_s += waited
        self.busy_s += train_s
        record = {"optimizer_step": float(self.trainer.step), "policy_version": float(self.trainer.policy_version), "time": time.time(),
                  "wait_s": waited, "train_s": train_s, "publish_s": publish_s,
                  "groups_uniform": float(gstats.groups_uniform), "samples_trained": float(gstats.samples_out),
                  **_batch_metrics(batch, [self.batcher.lag(s.rollout.policy_version, version_before) for s in batch.scored]), **{k: float(v) for k, v in metrics.items()},
                  "step": float(self.steps)}
        self._train_span(batch, record, start_ns)
        if self.cfg.checkpoint_every and self.steps % self.cfg.checkpoint_every == 0:
            await self.commit()
        self._metrics_file.parent.mkdir(parents=True, exist_ok=True)
        with self._metrics_file.open("a") as f:
            f.write(StepRecord(record).to_json() + "\n")
        return record

    async def run(self, stop: asyncio.Event, max_steps: int) -> None:
        """Train until `max_steps` learner steps or `stop`; always ends with a commit.

        A learner step is one batch and one new policy version (even when every group of the
        batch had equal rewards and the optimizer step was skipped).
        """
        try:
            while self.steps < max_steps and not stop.is_set():
                if await self.step(stop) is None:
                    break
        finally:
            await self.commit()
