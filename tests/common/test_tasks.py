"""The task registry: TASKS.md §2/§4 defaults, prompts that show the shape only, overrides."""

from __future__ import annotations

import pytest

from deepretrieval.common.errors import ConfigError
from deepretrieval.common.tasks import TASK_FACTORIES, build_messages, get_task, task_names


def test_six_tasks_in_the_registry():
    assert task_names() == ["pubmed", "ctgov", "sparse", "dense", "qa", "sql"]
    for name in task_names():
        assert get_task(name).name == name


@pytest.mark.parametrize(
    "name, backend, key, k_train, k_eval, temperature, reward_type, fmt_ok, fmt_failed",
    [
        ("pubmed", "pubmed", "query", 3000, 3000, 1.0, "recall", 1.0, -4.0),
        ("ctgov", "ctgov", "query", 3000, 3000, 1.0, "recall", 1.0, -4.0),
        ("sparse", "bm25", "query", 1000, 10, 0.6, "ndcg", 0.1, -2.0),
        ("dense", "dense", "query", 1000, 10, 0.6, "ndcg", 0.1, -2.0),
        ("qa", "bm25", "query", 3000, 100, 1.0, "answer_rank", 1.0, -4.0),
        ("sql", "sql", "sql", None, None, 0.6, "execution", 0.1, -2.0),
    ],
)
def test_defaults_follow_tasks_md(name, backend, key, k_train, k_eval, temperature, reward_type, fmt_ok, fmt_failed):
    spec = get_task(name)
    assert (spec.backend, spec.answer.key, spec.k_train, spec.k_eval) == (backend, key, k_train, k_eval)
    assert spec.temperature == temperature and spec.eval_temperature == 0.0
    assert spec.max_new_tokens == 512
    assert spec.answer.think == "prefill" and spec.answer.prefill == "<think>"
    assert spec.reward.type == reward_type
    assert (spec.reward.format.ok, spec.reward.format.failed) == (fmt_ok, fmt_failed)


def test_reward_tables_of_tasks_md():
    recall = get_task("pubmed").reward.table
    assert [(s.threshold, s.reward) for s in recall.steps] == [(0.7, 5), (0.5, 4), (0.4, 3), (0.3, 1), (0.1, 0.5), (0.05, 0.1)]
    assert recall.fallback == -3.5 and recall.direction == "higher_is_better"
    assert get_task("ctgov").reward.table == recall
    rank = get_task("qa").reward.table
    assert [(s.threshold, s.reward) for s in rank.steps] == [(5, 5), (20, 4), (50, 2), (100, 1), (1000, 0.5), (3000, 0.1)]
    assert rank.fallback == -3.5 and rank.direction == "lower_is_better"
    sql = get_task("sql").reward
    assert (sql.match, sql.mismatch, sql.runs_but_wrong) == (1.0, 0.0, None)
    assert get_task("sparse").reward.zero_total == 0.0


@pytest.mark.parametrize("name", list(TASK_FACTORIES))
def test_prompt_shows_the_answer_shape_and_no_example(name):
    spec = get_task(name)
    messages = build_messages(spec, "REQUEST TEXT", schema="CREATE TABLE t (x INTEGER);")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "REQUEST TEXT" in user
    assert f'{{"{spec.answer.key}": "..."}}' in user
    # The only JSON object in the prompt is the shape: no concrete query for the model to copy.
    assert user.count('{"') == 1
    assert ("CREATE TABLE" in user) == (name == "sql")


def test_sql_prompt_needs_a_schema():
    with pytest.raises(ConfigError, match="schema"):
        build_messages(get_task("sql"), "how big is texas")


def test_overrides_are_merged_and_validated():
    spec = get_task("sparse", {"k_train": 50, "answer": {"think": "none"}, "reward": {"format": {"ok": 0.2}}})
    assert spec.k_train == 50 and spec.k_eval == 10
    assert spec.answer.prefill == "" and spec.answer.key == "query"
    assert spec.reward.format.ok == 0.2 and spec.reward.format.failed == -2.0
    assert "<think>" not in build_messages(spec, "r")[1]["content"]
    squad = get_task("qa", {"reward": {"table": {"fallback": -2.5}}})
    assert squad.reward.table.fallback == -2.5 and len(squad.reward.table.steps) == 6


def test_bad_overrides_name_every_field():
    with pytest.raises(ConfigError) as e:
        get_task("pubmed", {"k_train": 0, "temperature": -1, "bogus": 1})
    for field in ("k_train", "temperature", "bogus"):
        assert field in str(e.value)


def test_inconsistent_specs_are_rejected():
    with pytest.raises(ConfigError, match="go together"):
        get_task("sparse", {"backend": "sql"})
    with pytest.raises(ConfigError, match="strictly decreasing"):
        get_task("pubmed", {"reward": {"table": {"steps": [{"threshold": 0.1, "reward": 1}, {"threshold": 0.5, "reward": 2}]}}})
    with pytest.raises(ConfigError, match="unknown placeholder"):
        get_task("sparse", {"prompt": {"user": "{request} {format} {example}"}})
    with pytest.raises(ConfigError, match="rename"):
        get_task("sparse", {"name": "dense"})


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid tasks: pubmed, ctgov, sparse, dense, qa, sql"):
        get_task("bm25")


def test_feedback_lists_the_requests_own_results_between_request_and_format():
    spec = get_task("sparse", {"feedback": {"docs": 2}})
    user = build_messages(spec, "statins and breast cancer", results=["Statin use and risk of breast cancer", "Statins: a review"])[1]["content"]
    assert "Request: statins and breast cancer\n\nTop search results for it:\n1. Statin use and risk of breast cancer\n2. Statins: a review\n\n" in user
    assert user.index("Top search results") < user.index('{"query": "..."}') and user.count('{"') == 1
    assert "Top search results for it: none" in build_messages(spec, "zzz", results=[])[1]["content"]
    # Without feedback the same template renders exactly as before: {results} is empty.
    assert build_messages(get_task("sparse"), "r")[1]["content"].startswith(
        "Rewrite this request as a keyword query for a BM25 search engine, so that the documents relevant to it rank at the top.\n\nRequest: r\n\nFirst think")


def test_feedback_needs_results_a_place_for_them_and_a_local_collection():
    with pytest.raises(ConfigError, match="none were given"):
        build_messages(get_task("sparse", {"feedback": {}}), "r")
    with pytest.raises(ConfigError, match="sets no `feedback`"):
        build_messages(get_task("sparse"), "r", results=["a title"])
    with pytest.raises(ConfigError, match="returns ids only"):
        get_task("pubmed", {"feedback": {"docs": 3}})
    with pytest.raises(ConfigError, match="needs \\{results\\} in prompt.user"):
        get_task("sparse", {"feedback": {"docs": 3}, "prompt": {"user": "{request} {format}"}})
    with pytest.raises(ConfigError, match="docs"):
        get_task("sparse", {"feedback": {"docs": 0}})
