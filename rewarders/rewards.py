"""Reward functions: format term + outcome term, from a backend's answer (TASKS.md §2).

Pure and synchronous. Each `score_*` takes evidence that the backend answered (a `SearchResult`
or a `SqlRun`), so a numeric reward can only come from a real answer; an engine that failed is
`Reward.unavailable(...)`, whose reward is None and can never be summed into a loss by accident.
One threshold mechanism (`threshold_reward`) serves the recall tables (higher is better) and the
QA rank table (lower is better).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deepretrieval.common.errors import DatasetError
from deepretrieval.common.metrics import per_query
from deepretrieval.common.reward_config import (
    AnswerRankRewardConfig,
    ExecutionRewardConfig,
    NdcgRewardConfig,
    RecallRewardConfig,
    RewardConfig,
    ThresholdTable,
)
from deepretrieval.common.targets import AnswersTarget, IdsTarget
from deepretrieval.common.wire import RewardStatus
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.sql_backend import SqlRun, results_match


@dataclass(frozen=True)
class Reward:
    """The scalar reward of one completion and how it was made.

    Args:
        status: `ok` (scored on the engine's answer), `invalid` (the policy's fault: bad format,
            empty or rejected query; the format-failure reward), `unavailable` (the engine failed;
            no reward, the group is masked).
        reward: the total; None exactly when unavailable.
        components: `format` and `outcome` terms and the `metric` (recall, nDCG, rank, match)
            plus task-specific extras (`hit`, `ran`).
        error: a machine-readable reason for invalid/unavailable (e.g. a FormatError code).
        message: a short human-readable explanation.
    """

    status: RewardStatus
    reward: float | None
    components: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if (self.status == "unavailable") != (self.reward is None):
            raise ValueError(f"Reward: status {self.status!r} with reward {self.reward!r}; only 'unavailable' has no reward, and it never has one")

    @classmethod
    def unavailable(cls, reason: str, message: str = "") -> Reward:
        """The engine could not answer (after retries): no reward at all."""
        return cls("unavailable", None, {}, reason, message)


def invalid_reward(cfg: RewardConfig, error: str, message: str = "") -> Reward:
    """The format-failure reward: bad format (a FormatError code) or a query the engine rejected.

    Args:
        cfg: the task's reward config.
        error: why (e.g. "answer_not_json", "query_syntax", "sql_invalid").
        message: details.
    """
    failed = cfg.format.failed
    return Reward("invalid", failed, {"format": failed}, error, message)


def _ok(cfg: RewardConfig, outcome: float, metric: float | None, total: float | None = None, **extra: float) -> Reward:
    """An `ok` reward: format.ok + outcome, or `total` when given (the format term is then what is left)."""
    format_term = cfg.format.ok if total is None else total - outcome
    components = {"format": format_term, "outcome": outcome, **extra}
    total = format_term + outcome if total is None else total
    if metric is not None:
        components["metric"] = metric
    return Reward("ok", total, components)


def threshold_reward(table: ThresholdTable, value: float | None) -> float:
    """The reward of the first row `value` meets, else the fallback.

    Args:
        table: rows best first; met when value >= threshold (higher_is_better) or <= (lower_is_better).
        value: the metric; None (e.g. no passage found) gets the fallback.
    """
    if value is None:
        return table.fallback
    for step in table.steps:
        met = value >= step.threshold if table.direction == "higher_is_better" else value <= step.threshold
        if met:
            return step.reward
    return table.fallback


def _unique_top_k(ids: Sequence[str], k: int) -> list[str]:
    """The first k distinct ids, in rank order (an engine returning a duplicate gets no extra credit)."""
    return list(dict.fromkeys(ids))[:k]


def recall_at_k(ranked_ids: Sequence[str], relevant: set[str], k: int) -> float:
    """Fraction of the relevant ids among the top k.

    Raises:
        DatasetError: no relevant ids (a data problem, not the policy's).
    """
    if not relevant:
        raise DatasetError("recall target has no relevant ids (grade > 0); drop the request when preparing data")
    return len(relevant.intersection(_unique_top_k(ranked_ids, k))) / len(relevant)


def ndcg_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded linear gains, by trec_eval (pytrec_eval `ndcg_cut.k`, via common.metrics).

    The run is scored in the engine's order: ids get strictly decreasing scores by rank, so
    trec_eval's tie-breaking (by doc id) never reorders them. IDCG comes from all judged grades
    sorted descending.

    Raises:
        DatasetError: the qrels have no relevant (grade > 0) document.
    """
    if not any(g > 0 for g in qrels.values()):
        raise DatasetError("nDCG target has no relevant ids (grade > 0); drop the request when preparing data")
    top = _unique_top_k(ranked_ids, k)
    run = {doc: float(len(top) - i) for i, doc in enumerate(top)}
    metric = f"ndcg@{k}"
    return per_query({"q": dict(qrels)}, {"q": run}, (metric,))["q"][metric]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def first_answer_rank(ranked_ids: Sequence[str], passages: Mapping[str, str], target: AnswersTarget, k: int) -> int | None:
    """1-based rank of the first passage in the top k that holds an answer, or None.

    A passage holds an answer when its id is a known answer passage, or its normalised text
    contains a normalised answer string on word boundaries.

    Raises:
        DatasetError: a retrieved id has no passage text (and answer strings must be checked).
    """
    answers = [a for a in (normalize_answer(s) for s in target.answers) if a]
    known = set(target.passage_ids)
    for rank, doc in enumerate(_unique_top_k(ranked_ids, k), 1):
        if doc in known:
            return rank
        if answers:
            try:
                text = f" {normalize_answer(passages[doc])} "
            except KeyError as e:
                raise DatasetError(f"retrieved passage {doc!r} is not in the passage texts; index and corpus differ") from e
            if any(f" {a} " in text for a in answers):
                return rank
    return None


def score_recall(result: SearchResult, target: IdsTarget, cfg: RecallRewardConfig, k: int) -> Reward:
    """pubmed / ctgov: format.ok + table(recall@k)."""
    recall = recall_at_k(result.ids, target.relevant(), k)
    return _ok(cfg, threshold_reward(cfg.table, recall), recall)


def score_ndcg(result: SearchResult, target: IdsTarget, cfg: NdcgRewardConfig, k: int) -> Reward:
    """sparse / dense: format.ok + nDCG@k when nDCG > 0, else `zero_total`."""
    ndcg = ndcg_at_k(result.ids, target.ids, k)
    if ndcg > 0:
        return _ok(cfg, ndcg, ndcg)
    return _ok(cfg, 0.0, ndcg, total=cfg.zero_total)


def score_answer_rank(result: SearchResult, passages: Mapping[str, str], target: AnswersTarget, cfg: AnswerRankRewardConfig, k: int) -> Reward:
    """qa: format.ok + table(rank of the first passage holding an answer); fallback when none."""
    rank = first_answer_rank(result.ids, passages, target, k)
    return _ok(cfg, threshold_reward(cfg.table, rank), None if rank is None else float(rank), hit=float(rank is not None))


def score_execution(predicted: SqlRun, gold: SqlRun, cfg: ExecutionRewardConfig) -> Reward:
    """sql: format.ok + match / runs-but-wrong / mismatch; an `invalid` statement is a format failure.

    Raises:
        DatasetError: the gold SQL did not run (status not ok) or hit the row cap.
    """
    if gold.status != "ok" or gold.truncated:
        raise DatasetError(f"gold SQL did not give a complete result (status {gold.status}, truncated {gold.truncated}): {gold.message}")
    if predicted.status == "invalid":
        return invalid_reward(cfg, "sql_invalid", predicted.message)
    if results_match(predicted, gold):
        return _ok(cfg, cfg.match, 1.0, ran=1.0)
    ran = predicted.status == "ok"
    outcome = cfg.runs_but_wrong if ran and cfg.runs_but_wrong is not None else cfg.mismatch
    return _ok(cfg, outcome, 0.0, ran=float(ran))
