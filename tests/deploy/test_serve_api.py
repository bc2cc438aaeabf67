"""The endpoint's contract without a server: config rules, request rules that need another config
than the served one, and the answer for a valid rewrite (the untrained test policy rarely writes one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepretrieval.actors.rewrite import parse_rewrite
from deepretrieval.common.config import load_config, validate_config
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.serve_config import ServeConfig
from deepretrieval.common.tasks import get_task
from deepretrieval.deploy.serve_api import ApiError, parse_rewrite_request, rewrite_answer

SERVE_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "serve").glob("*.yaml"))


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=[p.stem for p in SERVE_CONFIGS])
def test_shipped_serve_configs_validate(path: Path):
    cfg = load_config(ServeConfig, path)
    assert cfg.task in cfg.tasks


@pytest.mark.parametrize(("data", "field"), [
    ({"tasks": ["sparse", "sql"]}, "tasks"),
    ({"task": "qa", "tasks": ["sparse"]}, "task"),
    ({"replicas": {"num_replicas": 2, "autoscaling": {"max_replicas": 3}}}, "replicas"),
    ({"replicas": {"num_replicas": None, "autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "replicas.autoscaling"),
    ({"backend": {"type": "pubmed", "client": {"base_url": "http://127.0.0.1:1"}}}, "redis_url"),
    ({"backend": {"type": "pubmed", "client": {"base_url": "http://127.0.0.1:1", "api_key": "k"}}, "redis_url": "redis://x"}, "api_key"),
    ({"engine": {"type": "tgi"}}, "engine"),
    ({"max_batch_size": 0}, "max_batch_size"),
])
def test_bad_serve_config_names_the_field(data: dict, field: str):
    with pytest.raises(ConfigError, match=field.split(".")[0]):
        validate_config(ServeConfig, data)


def test_the_answer_bound_and_the_request_limit_are_two_settings():
    """`max_rewrite_chars` bounds the policy's query in the grammar; `max_query_chars` the request text (HTTP 413)."""
    cfg = validate_config(ServeConfig, {"max_rewrite_chars": 24})
    assert (cfg.max_rewrite_chars, cfg.max_query_chars) == (24, 2000)
    assert ServeConfig().max_rewrite_chars is None


def test_search_without_a_backend_is_refused():
    with pytest.raises(ApiError) as e:
        parse_rewrite_request(json.dumps({"query": "statins", "search": True}).encode(), ServeConfig())
    assert (e.value.status, e.value.code) == (400, "search_unavailable")


def test_valid_rewrite_is_served_with_its_reasoning_on_request():
    req = parse_rewrite_request(b'{"query": "do statins hurt muscles", "return_reasoning": true}', ServeConfig())
    chosen = parse_rewrite('muscle side effects</think>\n<answer>{"query": "statin myopathy"}</answer>', get_task("sparse"))
    answer = rewrite_answer(req, chosen, model="m", policy_version=7)
    assert answer == {"query": "statin myopathy", "reasoning": "muscle side effects", "model": "m", "policy_version": 7,
                      "task": "sparse", "fallback": False, "fallback_reason": None}
    quiet = parse_rewrite_request(b'{"query": "do statins hurt muscles"}', ServeConfig())
    assert rewrite_answer(quiet, chosen, model="m", policy_version=7)["reasoning"] is None


def test_expanding_task_answers_the_request_followed_by_the_policy_terms():
    cfg = ServeConfig(task_overrides={"sparse": {"query": {"mode": "expand", "original_repeats": 2}}})
    req = parse_rewrite_request(b'{"query": "statins"}', cfg)
    chosen = parse_rewrite('x</think><answer>{"query": "myopathy"}</answer>', get_task("sparse"))
    task = get_task("sparse", cfg.task_overrides["sparse"])
    answer = rewrite_answer(req, chosen, model="m", policy_version=1, composition=task.query)
    assert (answer["query"], answer["rewrite"], answer["fallback"]) == ("statins statins myopathy", "myopathy", False)
    broken = parse_rewrite("x</think><answer>{}</answer>", get_task("sparse"))
    fallback = rewrite_answer(req, broken, model="m", policy_version=1, composition=task.query)
    assert (fallback["query"], fallback["fallback"]) == ("statins", True) and "rewrite" not in fallback


@pytest.mark.parametrize("overrides, message", [({"ctgov": {"query": {"mode": "expand"}}}, "not among tasks"),
                                                ({"pubmed": {"query": {"mode": "expand"}}}, "bag-of-words backend"),
                                                ({"sparse": {"feedback": {"docs": 3}}}, "needs a bm25 or dense backend")])
def test_task_overrides_are_checked_at_the_edge(overrides, message):
    from deepretrieval.common.errors import ConfigError
    from deepretrieval.common.config import validate_config

    with pytest.raises(ConfigError, match=message):
        validate_config(ServeConfig, {"tasks": ["sparse", "pubmed"], "task_overrides": overrides})
