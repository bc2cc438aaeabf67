"""The actor loop: prompts in, rollout groups out, new policy versions loaded between batches.

Each batch: wait for admission of the batch's groups (so at most `max_in_flight_groups` groups
are generated and not yet consumed by the learner), load the newest announced policy if there is
a newer one, sample G completions per prompt, and publish one `Rollout` per sample, each carrying the
trace context of its `rl.generate` span.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from opentelemetry import trace
from pydantic import Field

from deepretrieval.actors.base import GenerationEngine, GenerationRequest, Sample
from deepretrieval.common import trace_names as names
from deepretrieval.common.base import Transport
from deepretrieval.common.config import StrictModel
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.streams import rollouts_stream
from deepretrieval.common.telemetry import inject_context
from deepretrieval.common.wire import Prompt, Rollout, SamplingParams

log = logging.getLogger(__name__)


class ActorConfig(StrictModel):
    """One actor process."""

    groups_per_batch: int = Field(8, ge=1, le=4096, description="Prompts per generate call (each sampled G times).")
    max_in_flight_groups: int = Field(32, ge=1, description="Most groups generated but not yet consumed by the learner, run-wide (admission control). (max_staleness + 1) x groups per learner step bounds sample staleness.")


@dataclass
class ActorStats:
    """Counters of one actor process."""

    batches: int = 0
    groups: int = 0
    samples: int = 0
    tokens: int = 0
    generate_s: float = 0.0
    admission_wait_s: float = 0.0
    weight_loads: int = 0
    weight_load_s: float = 0.0
    stop_string_hits: int = 0
    versions: list[int] = field(default_factory=list)


class Actor:
    """Generates rollout groups for one run.

    Args:
        engine: the generation engine.
        transport: the stream transport.
        coordinator: policy announcements and admission.
        run: run name (stream prefix).
        prompts: an endless iterator of prompts (e.g. `PromptBook.epochs(seed)`).
        prompt_ids: chat-templates a prompt into token ids (the same function for every engine).
        sampling: sampling parameters (n = G).
        config: batch and admission settings.
        constraint: maps a prompt to a grammar regex for constrained decoding, or None.
        tracer: tracer for `rl.generate` spans.
        on_published: called with each group's rollouts after they are published (uid logs).
        owner: this actor's stable name; admission slots it reserved but never published are
            freed when a process of the same name starts again.
    """

    def __init__(self, engine: GenerationEngine, transport: Transport, coordinator: Coordinator, run: str,
                 prompts: Iterator[Prompt], prompt_ids: Callable[[Prompt], list[int]], sampling: SamplingConfig,
                 config: ActorConfig, *, constraint: Callable[[Prompt], str | None] | None = None,
                 tracer: trace.Tracer | None = None, on_published: Callable[[list[Rollout]], None] | None = None,
                 owner: str = "actor-0"):
        self._engine = engine
        self._transport = transport
        self._coord = coordinator
        self._run = run
        self._prompts = prompts
        self._prompt_ids = prompt_ids
        self._ids_cache: dict[str, list[int]] = {}
        self._sampling = sampling
        self._config = config
        self._constraint = constraint
        self._tracer = tracer or trace.get_tracer("deepretrieval")
        self._on_published = on_published
        self.owner = owner
        self.stats = ActorStats()

    async def maybe_load_policy(self) -> bool:
        """Load the newest announced policy when it is newer than the engine's; True if loaded."""
        latest = await self._coord.latest()
        if latest is None or latest.version <= self._engine.policy_version:
            return False
        loop = asyncio.get_running_loop()
        seconds = await loop.run_in_executor(None, self._engine.load_weights, latest.weights_dir, latest.version)
        self.stats.weight_loads += 1
        self.stats.weight_load_s += seconds
        log.info("actor loaded policy v%d from %s in %.2fs", latest.version, latest.weights_dir, seconds)
        return True

    def _request(self, prompt: Prompt) -> GenerationRequest:
        ids = self._ids_cache.get(prompt.uid)
        if ids is None:
            ids = self._ids_cache[prompt.uid] = self._prompt_ids(prompt)
        return GenerationRequest(ids, self._constraint(prompt) if self._constraint else None)

    def _rollouts(self, prompt: Prompt, request: GenerationRequest, group: list[Sample], version: int,
                  start_ns: int, end_ns: int) -> list[Rollout]:
        out = rollouts_from_group(prompt, request, group, version=version, sampling=self._sampling,
                                  engine_name=self._engine.name, tracer=self._tracer, start_ns=start_ns, end_ns=end_ns)
        self.stats.tokens += sum(len(s.token_ids) for s in group)
        self.stats.stop_string_hits += sum(int(s.hit_stop_string) for s in group)
        return out

    async def step(self, stop: asyncio.Event | None = None) -> int:
        """One batch: admit, load the newest policy, generate, publish. Returns the groups published (0 if stopped).

        The policy is checked after admission (which may wait for the learner), so a batch is
        always sampled by the newest version announced when it starts.
        """
        n_groups = self._config.groups_per_batch
        t0 = time.perf_counter()
        if not await self._coord.admit(n_groups, self._config.max_in_flight_groups, stop=stop, owner=self.owner):
            return 0
        if stop is not None and stop.is_set():
            await self._coord.reclaim(self.owner)  # admitted just as we were stopped: give the slots back
            return 0
        await self.maybe_load_policy()
        self.stats.admission_wait_s += time.perf_counter() - t0
        prompts = [next(self._prompts) for _ in range(n_groups)]
        requests = [self._request(p) for p in prompts]
        version = self._engine.policy_version
        loop = asyncio.get_running_loop()
        start_ns, t1 = time.time_ns(), time.perf_counter()
        groups = await loop.run_in_executor(None, self._engine.generate, requests, self._sampling)
        end_ns = time.time_ns()
        self.stats.generate_s += time.perf_counter() - t1
        stream = rollouts_stream(self._run)
        for prompt, request, group in zip(prompts, requests, groups):
            # A group goes out whole: an actor killed mid-batch never leaves half a group behind.
            rollouts = self._rollouts(prompt, request, group, version, start_ns, end_ns)
            await self._transport.publish_many(stream, rollouts)
            await self._coord.published(self.owner)
            if self._on_published is not None:
                self._on_published(rollouts)
            self.stats.samples += len(group)
        self.stats.batches += 1
        self.stats.groups += n_groups
        self.stats.versions.append(version)
        return n_groups

    async def run(self, stop: asyncio.Event, max_groups: int | None = None) -> ActorStats:
        """Generate batches until `stop` is set or `max_groups` groups were published."""
        # A previous process under this name may have died holding admitted, unpublished slots.
        if freed := await self._coord.reclaim(self.owner):
            log.warning("actor %s: freed %d admission slots a previous process held", self.owner, freed)
        while not stop.is_set() and (max_groups is None or self.stats.groups < max_groups):
            if await self.step(stop) == 0:
                break
        return self.stats


def rollouts_from_group(prompt: Prompt, request: GenerationRequest, group: list[Sample], *, version: int,
                        sampling: SamplingConfig, engine_name: str, tracer: trace.Tracer,
                        start_ns: int, end_ns: int) -> list[Rollout]:
    """One wire `Rollout` per sample of a prompt's group, each under its own `rl.generate` span.

    Args:
        prompt: the prompt the group answers.
        request: what the engine was asked (its constraint marks the samples as constrained).
        group: the engine's samples.
        version: the policy version that sampled them.
        sampling: the sampling parameters used.
        engine_name: the engine's label.
        tracer: tracer for the `rl.generate` spans (start/end = the generate call's).
        start_ns: when the generate call started (ns since the epoch).
        end_ns: when it ended.
    """
    group_id = uuid.uuid4().hex
    params = SamplingParams(sampling.temperature, sampling.top_p, sampling.max_new_tokens, request.constraint is not None)
    out: list[Rollout] = []
    for i, s in enumerate(group):
        uid = f"{group_id}-{i}"
        span = tracer.start_span(names.GENERATE, start_time=start_ns, attributes={
            names.UID: uid, names.GROUP_ID: group_id, names.PROMPT_UID: prompt.uid, names.POLICY_VERSION: version,
            names.ENGINE: engine_name, names.GEN_TOKENS: len(s.token_ids), names.GEN_FINISH_REASON: s.finish_reason})
        carrier = inject_context(trace.set_span_in_context(span))
        span.end(end_time=end_ns)
        out.append(Rollout(
            uid=uid, group_id=group_id, prompt_uid=prompt.uid, policy_version=version,
            prompt_token_ids=request.prompt_token_ids, response_token_ids=s.token_ids, logprobs=s.logprobs,
            sampling=params, finish_reason=s.finish_reason, completion=s.text, engine=engine_name,
            created_at=time.time(), traceparent=carrier.get("traceparent", ""), tracestate=carrier.get("tracestate", "")))
    return out
