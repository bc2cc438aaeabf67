"""The rewriting endpoint on a real local Ray Serve: the default policy on the transformers engine,
grammar-constrained, plus a BM25 index of a tiny SciFact subset.

Two applications share one Serve instance for the whole module: "/" (answers within the token cap)
and "/tiny" (a 3-token cap, so every completion is cut off and falls back to the original query,
which makes its searches predictable). Generation is kept short because 2 shared cores run it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deepretrieval.common import trace_names as names
from deepretrieval.common.backend_config import LuceneBackendSpec
from deepretrieval.common.config import PathsConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.engine_config import HFEngineConfig
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.serve_config import ReplicasConfig, ServeConfig
from deepretrieval.deploy.serve_app import serve_config_from_args
from deepretrieval.deploy.serve_local import free_port, local_serve

MAX_QUERY_CHARS = 200


@dataclass
class Served:
    url: str
    trace_file: Path
    first_pid: int


def call(url: str, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict, dict[str, str]]:
    """One HTTP request; returns (status, JSON body, headers)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        conn.request(method, parts.path + path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {}), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(policy_dir: Path, tiny_beir: Path, data_root: Path, index_root: Path, tmp_path_factory: pytest.TempPathFactory):
    trace_file = tmp_path_factory.mktemp("serve") / "spans.jsonl"
    config = ServeConfig(
        model=str(policy_dir), dtype="float32", engine=HFEngineConfig(), tasks=["sparse", "dense"], constrained=True, max_reasoning_chars=0,
        max_new_tokens=32, max_n=3, max_query_chars=MAX_QUERY_CHARS, max_batch_size=4, batch_wait_timeout_s=0.5,
        replicas=ReplicasConfig(num_cpus=0.5), backend=LuceneBackendSpec(dataset=str(tiny_beir), batch_window_ms=0),
        paths=PathsConfig(data_root=data_root, index_dir=index_root, models_dir=policy_dir.parent), trace_file=trace_file,
    )
    tiny = config.model_copy(update={"max_new_tokens": 3, "constrained": False})
    feedback = tiny.model_copy(update={"task_overrides": {"sparse": {"feedback": {"docs": 2}}}})
    with local_serve({"/": config, "/tiny": tiny, "/feedback": feedback}, port=free_port(), num_cpus=2) as url:
        status, health, _ = call(url, "GET", "/healthz")
        assert status == 200, health
        yield Served(url, trace_file, health["pid"])


def test_healthz_names_the_policy(served: Served, policy_dir: Path):
    status, body, _ = call(served.url, "GET", "/healthz")
    assert status == 200
    assert body["status"] == "ok" and body["model"] == policy_dir.name and body["policy_version"] == 0
    assert body["engine"] == "hf" and body["constrained"] is True and body["search"] == "bm25"
    assert body["tasks"] == ["sparse", "dense"] and body["default_task"] == "sparse"


def test_good_request_is_rewritten_within_the_format(served: Served, policy_dir: Path):
    status, body, _ = call(served.url, "POST", "/v1/rewrite", {"query": "statins and muscle pain", "return_reasoning": True})
    assert status == 200, body
    # Constrained decoding closes the answer within 32 tokens, so the policy's own query is served.
    assert body["fallback"] is False and body["fallback_reason"] is None
    assert isinstance(body["query"], str) and body["query"].strip()
    assert body["reasoning"] == ""  # max_reasoning_chars=0: the constrained policy closes </think> at once
    assert body["model"] == policy_dir.name and body["policy_version"] == 0 and body["task"] == "sparse"
    assert "ids" not in body


def test_concurrent_requests_share_engine_batches(served: Served):
    before = call(served.url, "GET", "/healthz")[1]
    bodies = [{"query": "vitamin D and respiratory infections"}, {"query": "aspirin after heart attack", "task": "dense"},
              {"query": "sleep and memory", "n": 2}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: call(served.url, "POST", "/v1/rewrite", b), bodies))
    after = call(served.url, "GET", "/healthz")[1]
    assert [a[0] for a in answers] == [200, 200, 200], answers
    assert [a[1]["task"] for a in answers] == ["sparse", "dense", "sparse"]
    assert after["generated"] - before["generated"] == 3
    # Sent together and waited for up to 0.5 s: at least two of them went to the engine in one batch.
    assert after["batches"] - before["batches"] < 3


BAD_REQUESTS = [
    ("POST", "/v1/rewrite", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/rewrite", b"[1, 2]", 400, "invalid_json"),
    ("POST", "/v1/rewrite", b"", 400, "invalid_json"),
    ("POST", "/v1/rewrite", {}, 400, "missing_query"),
    ("POST", "/v1/rewrite", {"query": "   "}, 400, "empty_query"),
    ("POST", "/v1/rewrite", {"query": 5}, 400, "invalid_type"),
    ("POST", "/v1/rewrite", {"query": "statins", "n": "2"}, 400, "invalid_type"),
    ("POST", "/v1/rewrite", {"query": "statins", "n": True}, 400, "invalid_type"),
    ("POST", "/v1/rewrite", {"query": "statins", "search": "yes"}, 400, "invalid_type"),
    ("POST", "/v1/rewrite", {"query": "statins", "n": 0}, 400, "invalid_n"),
    ("POST", "/v1/rewrite", {"query": "statins", "n": 4}, 400, "invalid_n"),
    ("POST", "/v1/rewrite", {"query": "statins", "top_k": 3}, 400, "unknown_field"),
    ("POST", "/v1/rewrite", {"query": "statins", "task": "nope"}, 400, "unknown_task"),
    ("POST", "/v1/rewrite", {"query": "statins", "task": "pubmed"}, 400, "unknown_task"),
    ("POST", "/v1/rewrite", {"query": "statins", "task": "dense", "search": True}, 400, "search_unavailable"),
    ("POST", "/v1/rewrite", b'{"query": "\\ud800 statins"}', 400, "invalid_query"),
    ("POST", "/v1/rewrite", {"query": "x" * (MAX_QUERY_CHARS + 1)}, 413, "query_too_long"),
    ("POST", "/v1/rewrite", b'{"query": "' + b"y" * 2_000_000 + b'"}', 413, "body_too_large"),
    ("GET", "/v1/rewrite", None, 405, "method_not_allowed"),
    ("POST", "/healthz", b"{}", 405, "method_not_allowed"),
    ("GET", "/v2/rewrite", None, 404, "not_found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS, ids=[f"{r[4]}-{i}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_json_error(served: Served, method: str, path: str, body, status: int, code: str):
    got_status, got, headers = call(served.url, method, path, body)
    assert (got_status, got.get("error", {}).get("code")) == (status, code), got
    assert len(got["error"]["message"]) > 10
    if code == "unknown_task":
        assert "sparse, dense" in got["error"]["message"]  # says which tasks exist
    if status == 405:
        assert headers["allow"] in ("GET", "POST")


def test_replica_survives_bad_input(served: Served):
    status, health, _ = call(served.url, "GET", "/healthz")
    assert status == 200 and health["pid"] == served.first_pid
    status, body, _ = call(served.url, "POST", "/v1/rewrite", {"query": "statins and muscle pain"})
    assert status == 200 and body["fallback"] is False


def test_cut_off_answer_falls_back_to_the_original_query(served: Served):
    query = "statins and muscle pain"
    status, body, _ = call(served.url, "POST", "/tiny/v1/rewrite", {"query": query, "return_reasoning": True})
    assert status == 200, body
    assert body["fallback"] is True and body["query"] == query
    assert body["fallback_reason"].startswith("truncated")  # 3 new tokens cannot close </answer>
    assert body["reasoning"] is None


def test_search_returns_the_top_ids_of_the_served_query(served: Served, tiny_beir: Path, data_root: Path, index_root: Path):
    from deepretrieval.rewarders.retrieval import open_retriever

    ds = BeirDataset.open(tiny_beir, data_root)
    bm25 = open_retriever(ds, index_root, "bm25")
    queries, _ = ds.split_queries("test")
    qid = next(iter(queries))
    status, body, _ = call(served.url, "POST", "/tiny/v1/rewrite", {"query": queries[qid], "search": True})
    assert status == 200, body
    assert body["fallback"] is True and body["query"] == queries[qid]  # so BM25 ran the original request
    try:
        assert body["ids"] == bm25.search_sync(queries[qid], 10).ids  # k: the sparse task's evaluation k
    finally:
        asyncio.run(bm25.close())


def test_a_feedback_task_searches_the_request_before_writing(served: Served):
    """A policy trained with `feedback` sees the request's top results: the endpoint searches it first (traced as a child search)."""
    status, body, _ = call(served.url, "POST", "/feedback/v1/rewrite", {"query": "vitamin D and bone density"})
    assert status == 200 and body["query"] == "vitamin D and bone density", body
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [json.loads(line) for line in served.trace_file.read_text().splitlines()] if served.trace_file.is_file() else []
        shown = [s for s in spans if s["name"] == names.SERVE_REWRITE and s["attributes"].get(names.SERVE_RESULTS) is not None]
        if shown and any(s["parent_id"] == shown[0]["span_id"] for s in spans):
            break
        time.sleep(0.2)
    assert shown and shown[0]["attributes"][names.SERVE_RESULTS] == 2 and shown[0]["attributes"][names.SERVE_SEARCH] is False
    assert any(s["name"] == names.search_span("bm25") and s["parent_id"] == shown[0]["span_id"] for s in spans)


def test_requests_are_traced(served: Served):
    deadline = time.monotonic() + 15
    spans: list[dict] = []
    all_spans: list[dict] = []
    while time.monotonic() < deadline:
        if served.trace_file.is_file():
            all_spans = [json.loads(line) for line in served.trace_file.read_text().splitlines()]
            spans = [s for s in all_spans if s["name"] == names.SERVE_REWRITE]
            if any(names.SERVE_FALLBACK in s["attributes"] for s in spans) and any(names.SERVE_ERROR in s["attributes"] for s in spans) \
                    and any(s["name"] == names.search_span("bm25") for s in all_spans):
                break
        time.sleep(0.2)
    ok = [s for s in spans if names.SERVE_FALLBACK in s["attributes"]]
    assert ok and all(s["attributes"][names.HTTP_STATUS] == 200 and s["attributes"][names.SERVE_TASK] for s in ok)
    assert {s["attributes"].get(names.SERVE_ERROR) for s in spans} >= {"invalid_json", "query_too_long"}
    searches = [s for s in all_spans if s["name"] == names.search_span("bm25")]
    assert searches and {s["parent_id"] for s in searches} <= {s["span_id"] for s in ok}  # each search is a child of its request


def test_app_args_take_a_config_file_and_overrides(tmp_path: Path):
    path = tmp_path / "serve.yaml"
    path.write_text("model: /models/policy\nmax_new_tokens: 64\nreplicas: {num_replicas: null, autoscaling: {min_replicas: 1, max_replicas: 3}}\n")
    cfg = serve_config_from_args({"config_file": str(path), "max_new_tokens": 32})
    assert (cfg.model, cfg.max_new_tokens, cfg.replicas.autoscaling.max_replicas) == ("/models/policy", 32, 3)
    with pytest.raises(ConfigError, match="max_batch_size"):
        serve_config_from_args({"max_batch_size": 0})
