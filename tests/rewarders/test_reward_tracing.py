"""One sample is one trace: rl.generate (actor) -> rl.reward -> rl.search.pubmed (rewarder) -> the
emulator's server span; the spans go through the JSON-lines exporter and `trace summary` reads them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from deepretrieval.common import trace_names as names
from deepretrieval.common.telemetry import JsonLinesSpanExporter, inject_context
from deepretrieval.common.trace_file import read_trace_file
from deepretrieval.common.trace_summary import summarize
from deepretrieval.deploy.bench_common import drain_scored, publish_rollouts
from deepretrieval.rewarders.service import serve_rewarder
from tests.pipeline.helpers import answer, prepared_prompts, read_prompts, rollout
from tests.rewarders.test_rewarder_faults import _config


def _file_tracer(path: Path) -> trace.Tracer:
    """A tracer writing finished spans to `path` synchronously, as a run's trace file."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return provider.get_tracer("test")


def _traced_rollouts(tracer: trace.Tracer, prompts, query_words: int = 3):
    """A rollout per prompt, each carrying the context of its own rl.generate span."""
    out = []
    for p in prompts:
        span = tracer.start_span(names.GENERATE, attributes={names.UID: p.uid})
        carrier = inject_context(trace.set_span_in_context(span))
        span.end()
        out.append(rollout(p, answer(" ".join(p.request.split()[:query_words])), traceparent=carrier["traceparent"]))
    return out


async def test_reward_and_search_spans_continue_the_actors_trace(tmp_path, redis_url, data_root, emu_paths, start_emulator):
    tracer = _file_tracer(tmp_path / "traces.jsonl")
    pubmed_url = start_emulator("pubmed", rate_limit=False, tracer=tracer)
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    rollouts = _traced_rollouts(tracer, read_prompts(prompt_file, 3))
    rollouts.append(rollouts[0].__class__(**{**{f: getattr(rollouts[0], f) for f in rollouts[0].__dataclass_fields__}, "uid": "dup-0"}))
    await publish_rollouts(redis_url, "trace", rollouts)
    cfg = _config("trace", redis_url, pubmed_url, prompt_file, emu_paths)
    cfg.cache.enabled = True
    await serve_rewarder(cfg, asyncio.Event(), max_samples=len(rollouts), tracer=tracer)
    await drain_scored(redis_url, "trace", len(rollouts), timeout_s=30)

    spans = read_trace_file(tmp_path / "traces.jsonl").spans
    by_id = {s.span_id: s for s in spans}
    rewards = [s for s in spans if s.name == names.REWARD_SPAN]
    searches = [s for s in spans if s.name == names.search_span("pubmed")]
    server = [s for s in spans if s.name.endswith("esearch.fcgi")]
    assert len(rewards) == 4
    # Every search is a span; the duplicate of sample 0 is a cache hit that made no API call.
    assert len(searches) == 4 and len(server) == 3
    for r in rewards:
        parent = by_id[r.parent_id]
        assert parent.name == names.GENERATE and parent.trace_id == r.trace_id
        assert {names.UID, names.POLICY_VERSION, names.QUEUE_WAIT_S, names.CACHE_HIT, names.REWARD_STATUS} <= set(r.attributes)
        assert r.attributes[names.QUEUE_WAIT_S] >= 0
    for s in searches:
        parent = by_id[s.parent_id]
        assert parent.name == names.REWARD_SPAN and s.trace_id == parent.trace_id
        assert s.attributes[names.UID] == parent.attributes[names.UID]
        assert s.attributes[names.CACHE_HIT] == parent.attributes[names.CACHE_HIT]
        assert {names.RATELIMIT_WAIT_S, names.SEARCH_API_LATENCY_S, names.SEARCH_BACKOFF_S} <= set(s.attributes)
        assert s.attributes[names.SEARCH_RETRIES] == 0
        if not s.attributes[names.CACHE_HIT]:
            assert s.attributes[names.HTTP_STATUS] == 200 and s.attributes[names.HTTP_STATUSES] == [200]
            assert 0 < s.attributes[names.SEARCH_API_LATENCY_S] <= s.duration_s
    # The emulator continued each API call's trace: its server span is a child of the search span.
    for h in server:
        assert by_id[h.parent_id].name == names.search_span("pubmed") and h.attributes[names.HTTP_STATUS] == 200
    assert sum(r.attributes[names.CACHE_HIT] for r in rewards) == 1

    summary = summarize(spans)
    pubmed = summary.backends["pubmed"]
    assert (pubmed.searches, pubmed.cache_hits, pubmed.http_status, pubmed.api_latency_s.n) == (4, 1, {"200": 3}, 3)
    # Three sample traces (the duplicate shares sample 0's), all searched, none trained here.
    assert (summary.traces.samples, summary.traces.searched, summary.traces.trained, summary.traces.complete) == (3, 3, 0, 0)
    assert summary.queue_wait_s.n == 4 and summary.api_wait_share.traces == 3
    assert 0 < summary.api_wait_share.ratio_of_sums < 1


async def test_every_attempts_http_status_is_traced(tmp_path, redis_url, data_root, emu_paths, start_emulator):
    tracer = _file_tracer(tmp_path / "traces.jsonl")
    flaky_url = start_emulator("pubmed", rate_limit=False, tracer=tracer, faults={
        "error_5xx_rate": 0.3, "burst_429_rate": 0.1, "burst_429_len": 2, "retry_after_s": 0, "seed": 5})
    prompt_file = prepared_prompts("pubmed", "scifact", data_root, tmp_path)
    rollouts = _traced_rollouts(tracer, read_prompts(prompt_file, 12), query_words=4)
    await publish_rollouts(redis_url, "flaky-trace", rollouts)
    stats = await serve_rewarder(_config("flaky-trace", redis_url, flaky_url, prompt_file, emu_paths), asyncio.Event(),
                                 max_samples=len(rollouts), tracer=tracer)
    await drain_scored(redis_url, "flaky-trace", len(rollouts), timeout_s=30)

    spans = read_trace_file(tmp_path / "traces.jsonl").spans
    by_id = {s.span_id: s for s in spans}
    server = [s for s in spans if s.name.endswith("esearch.fcgi")]
    answered = Counter(str(s.attributes[names.HTTP_STATUS]) for s in server)
    assert set(answered) > {"200"}, "the fault seed injected no 429/5xx: the test would prove nothing"
    summary = summarize(spans)
    pubmed = summary.backends["pubmed"]
    # What the client recorded per attempt is exactly what the server answered, refusals included.
    assert pubmed.http_status == dict(sorted(answered.items()))
    assert pubmed.retries == stats.retries > 0 and pubmed.searches_retried > 0
    for h in server:
        parent = by_id[h.parent_id]
        assert parent.name == names.search_span("pubmed") and parent.trace_id == h.trace_id
