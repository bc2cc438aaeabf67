"""Reward functions (TASKS.md §2): every table boundary on both sides, hand-computed nDCG, statuses."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from deepretrieval.common.answer_format import parse_answer
from deepretrieval.common.errors import BackendUnavailable, DatasetError, QuerySyntaxError
from deepretrieval.common.reward_config import ExecutionRewardConfig, NdcgRewardConfig, answer_rank_table, recall_table
from deepretrieval.common.sql_config import SqlConfig
from deepretrieval.common.targets import AnswersTarget, IdsTarget, SqlTarget
from deepretrieval.common.tasks import get_task
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.rewards import (
    Reward,
    first_answer_rank,
    invalid_reward,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    score_answer_rank,
    score_execution,
    score_ndcg,
    score_recall,
    threshold_reward,
)
from deepretrieval.rewarders.scoring import score_completion
from deepretrieval.rewarders.sql_backend import SqlBackend, SqlRun

# ------------------------------------------------------------------ threshold tables

# (metric at the boundary, reward there, reward just on the worse side)
RECALL_BOUNDARIES = [(0.7, 5.0, 4.0), (0.5, 4.0, 3.0), (0.4, 3.0, 1.0), (0.3, 1.0, 0.5), (0.1, 0.5, 0.1), (0.05, 0.1, -3.5)]
RANK_BOUNDARIES = [(5, 5.0, 4.0), (20, 4.0, 2.0), (50, 2.0, 1.0), (100, 1.0, 0.5), (1000, 0.5, 0.1), (3000, 0.1, -3.5)]


@pytest.mark.parametrize("boundary, at, below", RECALL_BOUNDARIES)
def test_recall_table_both_sides_of_every_boundary(boundary, at, below):
    table = recall_table()
    assert threshold_reward(table, boundary) == at
    assert threshold_reward(table, math.nextafter(boundary, 0.0)) == below
    assert threshold_reward(table, math.nextafter(boundary, 1.0)) == at


@pytest.mark.parametrize("boundary, at, worse", RANK_BOUNDARIES)
def test_rank_table_both_sides_of_every_boundary(boundary, at, worse):
    table = answer_rank_table()
    assert threshold_reward(table, boundary) == at
    assert threshold_reward(table, boundary + 1) == worse
    assert threshold_reward(table, boundary - 1) == at


def test_table_extremes_and_missing_metric():
    assert threshold_reward(recall_table(), 1.0) == 5.0
    assert threshold_reward(recall_table(), 0.0) == -3.5
    assert threshold_reward(answer_rank_table(), 1) == 5.0
    assert threshold_reward(answer_rank_table(), None) == -3.5


@pytest.mark.parametrize("boundary, at, below", RECALL_BOUNDARIES)
def test_pubmed_reward_at_recall_boundaries(boundary, at, below):
    # 100 relevant ids: recall n/100 equals the table's decimal literal exactly (correctly rounded division).
    cfg = get_task("pubmed").reward
    relevant = [f"r{i}" for i in range(100)]
    target = IdsTarget(ids={d: 1 for d in relevant})
    hits = round(boundary * 100)
    for n, outcome in ((hits, at), (hits - 1, below)):
        ids = relevant[:n] + [f"x{i}" for i in range(100)]
        reward = score_recall(SearchResult(ids=ids), target, cfg, k=3000)
        assert reward.status == "ok"
        assert reward.reward == 1.0 + outcome  # format +1 plus the table's outcome
        assert reward.components == {"format": 1.0, "outcome": outcome, "metric": n / 100}


def test_recall_counts_only_the_top_k_and_distinct_ids():
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, k=2) == 0.5
    assert recall_at_k(["a", "a", "a", "b"], {"a", "b"}, k=2) == 1.0
    with pytest.raises(DatasetError):
        recall_at_k(["a"], set(), k=10)


@pytest.mark.parametrize("boundary, at, worse", RANK_BOUNDARIES)
def test_qa_reward_at_rank_boundaries(boundary, at, worse):
    cfg = get_task("qa").reward
    for rank, outcome in ((boundary, at), (boundary + 1, worse)):
        ids = [f"d{i}" for i in range(1, rank)] + ["gold"]
        reward = score_answer_rank(SearchResult(ids=ids), {}, AnswersTarget(passage_ids=["gold"]), cfg, k=3001)
        assert reward.reward == 1.0 + outcome
        assert reward.components["metric"] == rank and reward.components["hit"] == 1.0


def test_qa_answer_outside_top_k_or_absent_gets_the_fallback():
    cfg = get_task("qa").reward
    ids = [f"d{i}" for i in range(3000)] + ["gold"]
    reward = score_answer_rank(SearchResult(ids=ids), {}, AnswersTarget(passage_ids=["gold"]), cfg, k=3000)
    assert reward.reward == 1.0 - 3.5
    assert reward.components == {"format": 1.0, "outcome": -3.5, "hit": 0.0}


def test_answer_strings_match_after_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    passages = {"d1": "Paris is the capital of France.", "d2": "The Eiffel-tower; a landmark.", "d3": "Built in 1889 by Eiffel's firm, the tower..."}
    target = AnswersTarget(answers=["the Eiffel tower"])
    assert first_answer_rank(["d1", "d3", "d2"], passages, target, k=10) is None  # "eiffel-tower" normalises to "eiffeltower"
    assert first_answer_rank(["d1", "d2"], passages, AnswersTarget(answers=["Eiffel-Tower"]), k=10) == 2
    assert first_answer_rank(["d1"], passages, AnswersTarget(answers=["par"]), k=10) is None  # word boundaries
    assert first_answer_rank(["d3", "d1"], passages, AnswersTarget(answers=["PARIS"]), k=10) == 2
    with pytest.raises(DatasetError, match="not in the passage texts"):
        first_answer_rank(["nope"], passages, target, k=10)


# ------------------------------------------------------------------ nDCG (trec_eval semantics)

L3 = math.log2(3)


@pytest.mark.parametrize(
    "ranked, qrels, k, expected",
    [
        # relevant doc at rank 1: DCG = 1/log2(2) = 1 = IDCG
        (["a"], {"a": 1}, 10, 1.0),
        # at rank 2: DCG = 1/log2(3) = 0.63093; IDCG = 1
        (["x", "a"], {"a": 1}, 10, 1 / L3),
        # a judged non-relevant doc (grade 0) gains nothing: same as above
        (["z", "a"], {"a": 1, "z": 0}, 10, 1 / L3),
        # graded, linear gain: DCG = 1/1 + 2/log2(3) = 2.26186; IDCG = 2/1 + 1/log2(3) = 2.63093 -> 0.85972
        (["b", "a", "c"], {"a": 2, "b": 1, "c": 0}, 10, (1 + 2 / L3) / (2 + 1 / L3)),
        # IDCG is cut at k too: k=2, DCG = 1; IDCG@2 = 1 + 1/log2(3) = 1.63093 -> 0.61315
        (["a", "x"], {"a": 1, "b": 1, "c": 1}, 2, 1 / (1 + 1 / L3)),
        # the relevant doc at rank 3 is beyond k=2: 0
        (["x", "y", "a"], {"a": 1}, 2, 0.0),
        # a repeated id counts once: unique top-2 = [a, b] -> DCG = IDCG
        (["a", "a", "b"], {"a": 1, "b": 1}, 2, 1.0),
        # order is the engine's, not trec_eval's doc-id tie-break: [a, b] with grades 1, 2
        # DCG = 1 + 2/log2(3) = 2.26186; IDCG = 2 + 1/log2(3) = 2.63093
        (["a", "b"], {"a": 1, "b": 2}, 10, (1 + 2 / L3) / (2 + 1 / L3)),
        # nothing retrieved
        ([], {"a": 1}, 10, 0.0),
    ],
)
def test_ndcg_hand_computed(ranked, qrels, k, expected):
    assert ndcg_at_k(ranked, qrels, k) == pytest.approx(expected, abs=1e-9)


def test_ndcg_reward_is_format_plus_ndcg_or_zero():
    cfg = NdcgRewardConfig()
    target = IdsTarget(ids={"a": 1})
    hit = score_ndcg(SearchResult(ids=["x", "a"]), target, cfg, k=10)
    assert hit.reward == pytest.approx(0.1 + 1 / L3)
    assert hit.components["format"] == 0.1 and hit.components["metric"] == pytest.approx(1 / L3)
    miss = score_ndcg(SearchResult(ids=["x", "y"]), target, cfg, k=10)
    assert miss.status == "ok" and miss.reward == 0.0
    assert miss.components == {"format": 0.0, "outcome": 0.0, "metric": 0.0}
    with pytest.raises(DatasetError):
        ndcg_at_k(["a"], {"a": 0}, 10)


# ------------------------------------------------------------------ SQL execution match


def _run(status, rows=(), ordered=False, truncated=False):
    return SqlRun(status, tuple(rows), truncated, ordered, "" if status == "ok" else status, 0.0)


def test_execution_match_outcomes():
    cfg = ExecutionRewardConfig()
    gold = _run("ok", [("texas",), ("ohio",)])
    assert score_execution(_run("ok", [("ohio",), ("texas",)]), gold, cfg).reward == pytest.approx(1.1)
    assert score_execution(_run("ok", [("ohio",)]), gold, cfg).reward == pytest.approx(0.1)
    assert score_execution(_run("ok", [("ohio",), ("ohio",), ("texas",)]), gold, cfg).reward == pytest.approx(0.1)  # multiset
    assert score_execution(_run("error"), gold, cfg).components == {"format": 0.1, "outcome": 0.0, "ran": 0.0, "metric": 0.0}
    assert score_execution(_run("timeout"), gold, cfg).reward == pytest.approx(0.1)
    invalid = score_execution(_run("invalid"), gold, cfg)
    assert (invalid.status, invalid.reward, invalid.error) == ("invalid", -2.0, "sql_invalid")
    # Truncated at the row cap: never a match.
    assert score_execution(_run("ok", gold.rows, truncated=True), gold, cfg).reward == pytest.approx(0.1)


def test_order_matters_only_when_the_gold_has_order_by():
    cfg = ExecutionRewardConfig()
    ordered_gold = _run("ok", [("a",), ("b",)], ordered=True)
    assert score_execution(_run("ok", [("b",), ("a",)]), ordered_gold, cfg).reward == pytest.approx(0.1)
    assert score_execution(_run("ok", [("a",), ("b",)]), ordered_gold, cfg).reward == pytest.approx(1.1)


def test_bird_variant_rewards_sql_that_runs():
    cfg = ExecutionRewardConfig(runs_but_wrong=0.3)
    gold = _run("ok", [(1,)])
    assert score_execution(_run("ok", [(2,)]), gold, cfg).reward == pytest.approx(0.4)
    assert score_execution(_run("error"), gold, cfg).reward == pytest.approx(0.1)
    assert score_execution(_run("ok", [(1.0,)]), gold, cfg).reward == pytest.approx(1.1)


def test_gold_that_does_not_run_is_a_data_error():
    with pytest.raises(DatasetError, match="gold SQL"):
        score_execution(_run("ok"), _run("error"), ExecutionRewardConfig())


# ------------------------------------------------------------------ statuses


def test_unavailable_never_carries_a_number():
    gone = Reward.unavailable("backend_unavailable:pubmed", "503 after 5 retries")
    assert gone.reward is None and gone.status == "unavailable"
    with pytest.raises(ValueError):
        Reward("unavailable", 0.0)
    with pytest.raises(ValueError):
        Reward("ok", None)


def test_invalid_is_the_format_failure_reward():
    assert invalid_reward(get_task("pubmed").reward, "answer_not_json").reward == -4.0
    assert invalid_reward(get_task("sparse").reward, "empty").reward == -2.0


class _FixedBackend:
    """Answers every query with the same ids, or raises the given error (the status mapping under test)."""

    def __init__(self, ids: list[str], error: Exception | None = None):
        self._ids, self._error = ids, error

    @property
    def name(self) -> str:
        return "fixed"

    @property
    def version(self) -> str:
        return "0"

    async def search(self, query: str, k: int) -> SearchResult:
        if self._error is not None:
            raise self._error
        return SearchResult(ids=self._ids[:k])

    async def close(self) -> None:
        return None


GOOD = '</think><answer>{"query": "q"}</answer>'


@pytest.mark.parametrize(
    "completion, backend, status, reward",
    [
        (GOOD, _FixedBackend(["a"]), "ok", 1.1),
        ("no tags at all", _FixedBackend(["a"]), "invalid", -2.0),
        (GOOD, _FixedBackend([], QuerySyntaxError("unbalanced parenthesis")), "invalid", -2.0),
        (GOOD, _FixedBackend([], BackendUnavailable("HTTP 503 after retries")), "unavailable", None),
    ],
)
def test_score_completion_maps_outcomes_to_statuses(completion, backend, status, reward):
    scored = asyncio.run(score_completion(completion, task=get_task("sparse"), target=IdsTarget(ids={"a": 1}), backend=backend, k=10))
    assert scored.reward.status == status
    assert scored.reward.reward == (pytest.approx(reward) if reward is not None else None)
    assert scored.parsed.ok == (completion == GOOD)


def test_score_completion_sql_on_the_real_database(data_root: Path):
    task = get_task("sql")
    gold = 'SELECT state_name FROM state WHERE capital = "austin"'

    async def score(sql: str):
        backend = SqlBackend(data_root / "geoquery" / "geography.sqlite", SqlConfig(timeout_s=2.0))
        try:
            completion = "</think><answer>" + json.dumps({"sql": sql}) + "</answer>"
            return (await score_completion(completion, task=task, target=SqlTarget(sql=gold), backend=backend)).reward
        finally:
            await backend.close()

    assert asyncio.run(score("SELECT state_name FROM state WHERE capital = 'austin'")).reward == pytest.approx(1.1)
    assert asyncio.run(score("SELECT capital FROM state WHERE state_name = 'texas'")).reward == pytest.approx(0.1)
    dropped = asyncio.run(score("DROP TABLE state"))
    assert (dropped.status, dropped.reward) == ("invalid", -2.0)
    assert parse_answer('</think><answer>{"sql": "SELECT 1"}</answer>', task.answer).ok


class _Recording:
    """A real backend that also records the queries it was asked (to see what scoring searched)."""

    def __init__(self, inner):
        self.inner, self.queries = inner, []
        self.name, self.version = inner.name, inner.version

    async def search(self, query: str, k: int) -> SearchResult:
        self.queries.append(query)
        return await self.inner.search(query, k)


def test_expanding_task_searches_the_request_followed_by_the_policy_terms(data_root: Path, index_root: Path):
    from deepretrieval.common.config import BM25Config
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.common.errors import ConfigError
    from deepretrieval.rewarders.retrieval import open_retriever

    ds = BeirDataset.open("scifact", data_root)
    queries, qrels = ds.split_queries("test")
    backend = _Recording(open_retriever(ds, index_root, "bm25", bm25=BM25Config()))
    # a claim whose own words find its evidence at the top
    qid = next(q for q in sorted(queries) if backend.inner.search_sync(queries[q], 1).ids[0] in qrels[q])
    request, target = queries[qid], IdsTarget(ids=qrels[qid])
    task = get_task("sparse", {"query": {"mode": "expand", "original_repeats": 2}})
    completion = '</think><answer>{"query": "randomized trial"}</answer>'

    async def score(**kw):
        return (await score_completion(completion, task=task, target=target, backend=backend, k=50, **kw)).reward.reward

    expanded = asyncio.run(score(request=request))
    assert backend.queries[-1] == f"{request} {request} randomized trial"
    assert expanded == asyncio.run(score_completion(f'</think><answer>{json.dumps({"query": backend.queries[-1]})}</answer>',
                                                    task=get_task("sparse"), target=target, backend=backend, k=50)).reward.reward
    alone = asyncio.run(score(request=request, as_is=True))
    assert backend.queries[-1] == "randomized trial"
    assert expanded > 0.5 > alone  # the request's terms carry the search; two generic words alone do not
    with pytest.raises(ConfigError, match="pass request="):
        asyncio.run(score())


@pytest.mark.parametrize("query", ["...", "? -", " … "])
def test_a_query_with_nothing_to_search_is_invalid_and_never_searched(data_root: Path, index_root: Path, query: str):
    """In expand mode "..." would search the request alone and score as a copy of it (run L's policy
    learnt to write it); it is the policy's fault, scored as a format failure."""
    from deepretrieval.common.config import BM25Config
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.common.tasks import QUERY_NO_TERMS
    from deepretrieval.rewarders.retrieval import open_retriever

    ds = BeirDataset.open("scifact", data_root)
    queries, qrels = ds.split_queries("test")
    qid = sorted(queries)[0]
    backend = _Recording(open_retriever(ds, index_root, "bm25", bm25=BM25Config()))
    task = get_task("sparse", {"query": {"mode": "expand", "original_repeats": 2, "new_terms_only": True}})
    completion = f'</think><answer>{json.dumps({"query": query})}</answer>'
    out = asyncio.run(score_completion(completion, task=task, target=IdsTarget(ids=qrels[qid]), backend=backend, k=50, request=queries[qid]))
    assert out.parsed.ok  # well-formed: the format check is TASKS.md §1's
    assert (out.reward.status, out.reward.error, out.reward.reward) == ("invalid", QUERY_NO_TERMS, task.reward.format.failed)
    assert "nothing to search" in out.reward.message and backend.queries == []
