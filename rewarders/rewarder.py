"""The rewarder process: rollouts in, scored samples out, many searches in flight at once.

Reads `Rollout`s from `<run>:rollouts` (consumer group "rewarders"), parses each answer, runs the
query through the task's `ResilientSearch` (cluster-wide rate limit, retries, cache), scores it and
publishes a `Scored` to `<run>:scored`; the rollout entry is acked only after the Scored entry is
written. Several processes share one quota through the Redis limiter; a dead process's pending
entries are reclaimed by the others (XAUTOCLAIM in the transport).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.trace import Status, StatusCode
from deepretrieval.common import trace_names as names
from deepretrieval.common.base import Transport
from deepretrieval.common.errors import DeepRetrievalError
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.run_config import RewarderConfig
from deepretrieval.common.streams import rollouts_stream, scored_stream
from deepretrieval.common.tasks import TaskSpec
from deepretrieval.common.telemetry import extract_context
from deepretrieval.common.wire import ORIGINAL_ENGINE, Rollout, Scored
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.rewards import Reward
from deepretrieval.rewarders.scoring import score_completion

log = logging.getLogger(__name__)

REWARDER_GROUP = "rewarders"


@dataclass
class TaskRuntime:
    """What scoring one task needs: its spec, its (resilient) backend, its k, passages for qa."""

    spec: TaskSpec
    backend: SearchBackend
    k: int
    passages: Mapping[str, str] | None = None


@dataclass
class RewarderStats:
    """Counters of one rewarder process."""

    scored: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {"ok": 0, "invalid": 0, "unavailable": 0})
    cache_hits: int = 0
    api_calls: int = 0
    retries: int = 0
    search_s: float = 0.0
    limiter_wait_s: float = 0.0
    queue_wait_s: float = 0.0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Rewarder:
    """Scores rollouts of one run.

    Args:
        transport: the stream transport.
        run: run name (stream prefix).
        prompts: prompt uid -> task and target.
        tasks: task name -> its runtime.
        config: concurrency and read settings.
        consumer: this process's consumer name (unique per live process).
        tracer: tracer for `rl.reward` spans.
    """

    def __init__(self, transport: Transport, run: str, prompts: PromptBook, tasks: Mapping[str, TaskRuntime],
                 config: RewarderConfig, *, consumer: str | None = None, tracer: trace.Tracer | None = None):
        self._transport = transport
        self._run = run
        self._prompts = prompts
        self._tasks = dict(tasks)
        self._config = config
        self.consumer = consumer or default_consumer_name()
        self._tracer = tracer or trace.get_tracer("deepretrieval")
        self.stats = RewarderStats()

    async def score(self, rollout: Rollout) -> Scored:
        """Score one rollout; never raises for the policy's or the engine's faults."""
        parent = extract_context(rollout.traceparent or None, rollout.tracestate or None)
        ctx = baggage.set_baggage(names.UID, rollout.uid, context=parent)
        ctx = baggage.set_baggage(names.POLICY_VERSION, rollout.policy_version, context=ctx)
        token = otel_context.attach(ctx)
        queue_wait = max(0.0, time.time() - rollout.created_at)
        try:
            with self._tracer.start_as_current_span(names.REWARD_SPAN) as span:
                span.set_attributes({names.UID: rollout.uid, names.POLICY_VERSION: rollout.policy_version,
                                     names.GROUP_ID: rollout.group_id, names.QUEUE_WAIT_S: round(queue_wait, 6)})
                scored = await self._score(rollout)
                span.set_attributes({names.REWARD_STATUS: scored.status, names.CACHE_HIT: scored.cache_hit,
                                     names.SEARCH_RETRIES: scored.retries, names.TASK_BACKEND: scored.backend})
                if scored.reward is not None:
                    span.set_attribute(names.REWARD, scored.reward)
                if scored.status == "unavailable":
                    span.set_status(Status(StatusCode.ERROR, (scored.error or "")[:200]))
        finally:
            otel_context.detach(token)
        self._count(scored, queue_wait)
        return scored

    async def _score(self, rollout: Rollout) -> Scored:
        prompt = self._prompts.get(rollout.prompt_uid)
        runtime = self._tasks.get(prompt.task) if prompt is not None else None
        if prompt is None or runtime is None:
            why = f"unknown prompt uid {rollout.prompt_uid!r}" if prompt is None else f"no runtime for task {prompt.task!r}"
            # Our bookkeeping failed, not the policy: mask the group rather than invent a reward.
            return self._scored(rollout, Reward.unavailable("config", why), None, None, "-", "-")
        t0 = time.perf_counter()
        try:
            out = await score_completion(rollout.completion, task=runtime.spec, target=self._prompts.target(prompt),
                                         backend=runtime.backend, k=runtime.k, passages=runtime.passages,
                                         request=prompt.request, as_is=rollout.engine == ORIGINAL_ENGINE)
        except DeepRetrievalError as e:
            log.warning("scoring %s failed: %s", rollout.uid, e)
            return self._scored(rollout, Reward.unavailable("scoring_error", str(e)), None, None, runtime.backend.name, runtime.backend.version)
        self.stats.search_s += time.perf_counter() - t0
        return self._scored(rollout, out.reward, out.parsed.value, out.search, runtime.backend.name, runtime.backend.version)

    def _scored(self, rollout: Rollout, reward: Reward, query: str | None, result, backend: str, version: str) -> Scored:
        meta = result.meta if result is not None else {}
        return Scored(
            rollout=rollout, reward=reward.reward, components=dict(reward.components), status=reward.status,
            query=query, retrieved_ids=list(result.ids[: self._config.retrieved_ids_kept]) if result is not None else [],
            backend=backend, index_version=version, latency_s=float(meta.get("latency_s", 0.0)),
            retries=result.retries if result is not None else 0, cache_hit=bool(meta.get("cache_hit", False)),
            error=f"{reward.error}: {reward.message}".strip(": ") if reward.status != "ok" else None,
        )

    def _count(self, scored: Scored, queue_wait: float) -> None:
        s = self.stats
        s.scored += 1
        s.by_status[scored.status] = s.by_status.get(scored.status, 0) + 1
        s.queue_wait_s += queue_wait
        if scored.cache_hit:
            s.cache_hits += 1
        elif scored.query is not None and scored.backend != "-":
            s.api_calls += 1 + scored.retries
        s.retries += scored.retries

    async def _handle(self, entry_id: str, rollout: Rollout, outbox: asyncio.Queue) -> None:
        await outbox.put((entry_id, await self.score(rollout)))

    async def _flush(self, outbox: asyncio.Queue) -> None:
        """Publish scored samples and ack their rollouts in batches over one connection.

        A rollout is acked only after its Scored record is written; a crash in between leaves it
        pending, so it is reclaimed and scored again (the learner de-duplicates by uid).
        """
        while True:
            item = await outbox.get()
            if item is None:
                return
            batch = [item]
            while not outbox.empty() and len(batch) < 512:
                nxt = outbox.get_nowait()
                if nxt is None:
                    await outbox.put(None)
                    break
                batch.append(nxt)
            for _, scored in batch:
                await self._transport.publish(scored_stream(self._run), scored)
            await self._transport.ack(rollouts_stream(self._run), REWARDER_GROUP, [e for e, _ in batch])

    async def run(self, stop: asyncio.Event, max_samples: int | None = None) -> RewarderStats:
        """Score rollouts until `stop` is set (or `max_samples` are done); in-flight work finishes.

        Args:
            stop: set it to stop reading; samples already read are scored and acked.
            max_samples: stop after this many (tests, benchmarks).
        """
        tasks: set[asyncio.Task[None]] = set()
        outbox: asyncio.Queue = asyncio.Queue()
        flusher = asyncio.create_task(self._flush(outbox))
        started = 0
        stream = rollouts_stream(self._run)
        while not stop.is_set() and (max_samples is None or started < max_samples):
            free = self._config.concurrency - len(tasks)
            if flusher.done():
                flusher.result()  # a transport error in the flusher stops the loop loudly
            if free <= 0:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
                continue
            want = min(self._config.read_count, free)
            if max_samples is not None:
                want = min(want, max_samples - started)
            entries = await self._transport.read(stream, REWARDER_GROUP, self.consumer, want, block_ms=self._config.block_ms)
            for entry_id, msg in entries:
                if not isinstance(msg, Rollout):
                    log.error("entry %s of %s is a %s, not a Rollout; acking it away", entry_id, stream, type(msg).__name__)
                    await self._transport.ack(stream, REWARDER_GROUP, [entry_id])
                    continue
                task = asyncio.create_task(self._handle(entry_id, msg, outbox))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
        if tasks:
            await asyncio.gather(*tasks)
        await outbox.put(None)
        await flusher
        return self.stats
