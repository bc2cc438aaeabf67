"""The actor loop with the transformers engine, a real redis-server and real prompts."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deepretrieval.actors.actor import Actor, ActorConfig
from deepretrieval.common.chat import build_prompt_ids
from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.streams import RedisStreamTransport, redis_client, rollouts_stream
from deepretrieval.common.wire import Rollout
from tests.pipeline.helpers import prepared_prompts


async def _wait_for(cond, timeout_s: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _published(client, run: str) -> list[Rollout]:
    from deepretrieval.common.streams import PAYLOAD_FIELD
    from deepretrieval.common.wire import decode

    entries = await client.xrange(rollouts_stream(run))
    return [decode(fields[PAYLOAD_FIELD]) for _, fields in entries]


async def test_admission_bounds_groups_in_flight_and_new_versions_load_between_batches(tmp_path, redis_url, data_root, hf_engine, policy_dir):
    book = PromptBook.from_files([prepared_prompts("sparse", "scifact", data_root, tmp_path)], limit=20)
    client = redis_client(redis_url)
    transport = RedisStreamTransport(client, TransportConfig(url=redis_url))
    coord = Coordinator(client, "a1")
    tok = hf_engine.tokenizer
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    actor = Actor(hf_engine, transport, coord, "a1", book.epochs(seed=1),
                  lambda p: build_prompt_ids(tok, p.messages, p.prefill),
                  SamplingConfig(n=2, temperature=1.0, max_new_tokens=12),
                  ActorConfig(groups_per_batch=2, max_in_flight_groups=4), tracer=provider.get_tracer("t"))
    stop = asyncio.Event()
    task = asyncio.create_task(actor.run(stop))
    # Nobody consumes: the actor publishes 2 batches (4 groups) and then waits for admission.
    await _wait_for(lambda: _count_is(client, "a1", 8))
    await asyncio.sleep(0.5)  # give a buggy actor the chance to over-publish
    assert len(await _published(client, "a1")) == 8 and await coord.in_flight() == 4

    # The learner announces v1 and consumes 2 groups: the next batch is sampled by v1.
    await coord.announce(1, policy_dir)
    first_groups = list(dict.fromkeys(r.group_id for r in await _published(client, "a1")))
    assert await coord.consume(first_groups[:2]) == 2
    assert await coord.consume(first_groups[:2]) == 0  # consuming a group again frees nothing
    await _wait_for(lambda: _count_is(client, "a1", 12))
    stop.set()
    await coord.consume(list(dict.fromkeys(r.group_id for r in await _published(client, "a1"))))  # unblock admission
    stats = await asyncio.wait_for(task, 60)
    rollouts = await _published(client, "a1")
    assert [r.policy_version for r in rollouts] == [0] * 8 + [1] * 4
    assert stats.weight_loads == 1 and hf_engine.policy_version == 1
    groups: dict[str, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r)
        assert len(r.logprobs) == len(r.response_token_ids) > 0
        assert r.traceparent.startswith("00-") and r.engine == "hf"
    assert len(groups) == 6 and all(len(g) == 2 for g in groups.values())
    assert len({r.uid for r in rollouts}) == 12
    # One rl.generate span per sample, whose id is the parent the rollout carries downstream.
    generate = {s.attributes["rl.uid"]: s for s in spans.get_finished_spans() if s.name == "rl.generate"}
    assert set(generate) == {r.uid for r in rollouts}
    for r in rollouts:
        assert r.traceparent.split("-")[2] == format(generate[r.uid].context.span_id, "016x")
    # The two samples of a group share one prompt and its exact token ids.
    for g in groups.values():
        assert g[0].prompt_uid == g[1].prompt_uid and list(g[0].prompt_token_ids) == list(g[1].prompt_token_ids)
    await client.aclose()


async def _count_is(client, run: str, n: int) -> bool:
    return int(await client.xlen(rollouts_stream(run))) >= n
