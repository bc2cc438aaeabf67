"""One sample is one trace: rl.generate (actor) -> rl.reward -> rl.search.pubmed (rewarder)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deepretrieval.common.telemetry import inject_context
from deepretrieval.deploy.bench_common import drain_scored, publish_rollouts
from deepretrieval.rewarders.service import serve_rewarder
from tests.pipeline.helpers import answer, prepared_prompts, read_prompts, rollout
from tests.rewarders.test_rewarder_faults import _config


async def test_reward_and_search_spans_continue_the_actors_trace(tmp_path, redis_url, data_root, emu_paths, pubmed_url):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    prompts = read_prompts(prompt_file, 3)
    rollouts = []
    for p in prompts:
        span = tracer.start_span("rl.generate")
        carrier = inject_context(trace.set_span_in_context(span))
        span.end()
        r = rollout(p, answer(" ".join(p.request.split()[:3])), traceparent=carrier["traceparent"])
        rollouts.append(r)
    rollouts.append(rollouts[0].__class__(**{**{f: getattr(rollouts[0], f) for f in rollouts[0].__dataclass_fields__}, "uid": "dup-0"}))
    await publish_rollouts(redis_url, "trace", rollouts)
    cfg = _config("trace", redis_url, pubmed_url, prompt_file, emu_paths)
    cfg.cache.enabled = True
    await serve_rewarder(cfg, asyncio.Event(), max_samples=len(rollouts), tracer=tracer)
    await drain_scored(redis_url, "trace", len(rollouts), timeout_s=30)

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    rewards = [s for s in spans if s.name == "rl.reward"]
    searches = [s for s in spans if s.name == "rl.search.pubmed"]
    assert len(rewards) == 4
    # The duplicate of sample 0 is a cache hit: it has a reward span but no API call.
    assert len(searches) == 3
    for r in rewards:
        parent = by_id[r.parent.span_id]
        assert parent.name == "rl.generate" and parent.context.trace_id == r.context.trace_id
        assert {"rl.uid", "rl.policy_version", "queue.wait_s", "rl.cache_hit", "rl.status"} <= set(r.attributes)
    for s in searches:
        parent = by_id[s.parent.span_id]
        assert parent.name == "rl.reward" and s.attributes["rl.uid"] == parent.attributes["rl.uid"]
        assert s.attributes["http.status_code"] == 200 and "ratelimit.wait_s" in s.attributes and s.attributes["search.retries"] == 0
    assert sum(r.attributes["rl.cache_hit"] for r in rewards) == 1
