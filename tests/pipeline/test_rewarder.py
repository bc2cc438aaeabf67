"""The rewarder process against a real redis-server and a real Lucene index."""

from __future__ import annotations

import asyncio

import pytest

from deepretrieval.common.backend_config import LuceneBackendSpec
from deepretrieval.common.config import BM25Config, PathsConfig
from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.metrics import evaluate
from deepretrieval.common.run_config import RewarderConfig, TaskRunConfig
from deepretrieval.deploy.bench_common import drain_scored, publish_rollouts
from deepretrieval.rewarders.bm25 import BM25Backend
from deepretrieval.rewarders.lucene_index import ensure_lucene_index
from deepretrieval.rewarders.service import RewarderServiceConfig, serve_rewarder
from tests.pipeline.helpers import answer, prepared_prompts, read_prompts, rollout


def service_config(url: str, run: str, prompt_file, data_root, index_root, **rewarder) -> RewarderServiceConfig:
    return RewarderServiceConfig(
        run=run, prompt_files=[prompt_file],
        tasks=[TaskRunConfig(task="sparse", backend=LuceneBackendSpec(dataset="scifact"), k=50)],
        transport=TransportConfig(url=url, block_ms=100, claim_idle_ms=1500),
        rewarder=RewarderConfig(**rewarder), paths=PathsConfig(data_root=data_root, index_dir=index_root))


async def test_rewarder_scores_valid_and_malformed_outputs(tmp_path, redis_url, data_root, index_root):
    prompt_file = prepared_prompts("sparse", "scifact", data_root, tmp_path)
    prompts = read_prompts(prompt_file, 12)
    cases = []
    for i, p in enumerate(prompts[:8]):
        cases.append(rollout(p, answer(p.request), index=i))  # the claim itself as the query
    bad = {
        "empty": rollout(prompts[8], ""),
        "endless": rollout(prompts[9], "I think " * 200, finish_reason="length"),
        "not_utf8": rollout(prompts[10], b"\xff\xfe\x80 \xc3(</think".decode("utf-8", "surrogateescape")),
        "empty_query": rollout(prompts[11], answer("   ")),
    }
    await publish_rollouts(redis_url, "t1", [*cases, *bad.values()])

    stats = await serve_rewarder(service_config(redis_url, "t1", prompt_file, data_root, index_root),
                                 asyncio.Event(), max_samples=len(cases) + len(bad))
    scored = {s.rollout.uid: s for s in await drain_scored(redis_url, "t1", len(cases) + len(bad), timeout_s=60)}
    assert len(scored) == 12 and stats.scored == 12

    # Valid answers: reward = 0.1 + nDCG@50 of the same query searched directly (or 0 when nDCG = 0).
    ds = BeirDataset.open("scifact", data_root)
    backend = BM25Backend(ensure_lucene_index(ds, index_root, progress=False), BM25Config())
    _, qrels = ds.split_queries("test")
    for r in cases:
        s = scored[r.uid]
        prompt = next(p for p in prompts if p.uid == r.prompt_uid)
        qid = next(q for q, docs in qrels.items() if {d for d, g in docs.items() if g > 0} == {d for d, g in prompt.target["ids"].items() if g > 0})
        hits = backend.search_sync(prompt.request, 50)
        _, pq = evaluate({qid: qrels[qid]}, {qid: dict(zip(hits.ids, hits.scores))}, ("ndcg@50",))
        expected = 0.1 + pq[qid]["ndcg@50"] if pq[qid]["ndcg@50"] > 0 else 0.0
        assert s.status == "ok" and s.reward == pytest.approx(expected, abs=1e-6)
        assert s.query == prompt.request and s.retrieved_ids == hits.ids[:10] and s.backend == "bm25"
    # Malformed outputs are the policy's fault: invalid with the format penalty, never an exception.
    for name, r in bad.items():
        s = scored[r.uid]
        assert s.status == "invalid", name
        assert s.reward == -2.0, name
    assert stats.by_status == {"ok": 8, "invalid": 4, "unavailable": 0}


async def test_unknown_prompt_is_masked_not_scored(tmp_path, redis_url, data_root, index_root):
    prompt_file = prepared_prompts("sparse", "scifact", data_root, tmp_path)
    prompt = read_prompts(prompt_file, 1)[0]
    stranger = rollout(prompt, answer("x"))
    object.__setattr__(stranger, "prompt_uid", "no-such-prompt")
    await publish_rollouts(redis_url, "t2", [stranger])
    await serve_rewarder(service_config(redis_url, "t2", prompt_file, data_root, index_root), asyncio.Event(), max_samples=1)
    (s,) = await drain_scored(redis_url, "t2", 1, timeout_s=60)
    assert s.status == "unavailable" and s.reward is None and "no-such-prompt" in (s.error or "")
