"""Reward configs: format term + outcome term, one model per outcome kind (TASKS.md §2).

Data only; the functions that apply them live in `deepretrieval.rewarders.rewards`. Every number
here is a default from TASKS.md §2 and can be overridden per run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import StrictModel


class FormatTerm(StrictModel):
    """Reward of the format check alone."""

    ok: float = Field(description="Added when the completion follows the answer format.")
    failed: float = Field(description="The whole reward when it does not (or the query is invalid: bad JSON, empty or with no letter or digit, SQL that writes or fails to parse).")


class ThresholdStep(StrictModel):
    """One row of a threshold table: metrics at least as good as `threshold` earn `reward`."""

    threshold: float = Field(description="Boundary value of the metric (inclusive).")
    reward: float = Field(description="Outcome reward for a metric that meets the threshold.")


class ThresholdTable(StrictModel):
    """Ordered (threshold, reward) rows plus a fallback; the first row the metric meets wins.

    Serves both directions: recall (higher is better, `metric >= threshold`) and rank (lower is
    better, `metric <= threshold`).
    """

    direction: Literal["higher_is_better", "lower_is_better"] = Field(description="'higher_is_better': a row is met when metric >= threshold; 'lower_is_better': when metric <= threshold.")
    steps: list[ThresholdStep] = Field(min_length=1, description="Rows from the best threshold to the worst.")
    fallback: float = Field(description="Outcome reward when no row is met (or there is no metric, e.g. no answer found).")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> ThresholdTable:
        values = [s.threshold for s in self.steps]
        ordered = sorted(set(values), reverse=self.direction == "higher_is_better")
        if values != ordered:
            need = "strictly decreasing" if self.direction == "higher_is_better" else "strictly increasing"
            raise ValueError(f"steps: thresholds must be {need} (best first) for {self.direction}; got {values}")
        return self


def recall_table() -> ThresholdTable:
    """PubMed / ClinicalTrials.gov recall table (TASKS.md §2; DeepRetrieval paper)."""
    rows = [(0.7, 5.0), (0.5, 4.0), (0.4, 3.0), (0.3, 1.0), (0.1, 0.5), (0.05, 0.1)]
    return ThresholdTable(direction="higher_is_better", steps=[ThresholdStep(threshold=t, reward=r) for t, r in rows], fallback=-3.5)


def answer_rank_table() -> ThresholdTable:
    """Evidence-seeking QA rank table (TASKS.md §2). SQuAD used fallback -2.5 in the paper."""
    rows = [(5, 5.0), (20, 4.0), (50, 2.0), (100, 1.0), (1000, 0.5), (3000, 0.1)]
    return ThresholdTable(direction="lower_is_better", steps=[ThresholdStep(threshold=t, reward=r) for t, r in rows], fallback=-3.5)


class RecallRewardConfig(StrictModel):
    """Recall of the target ids in the top-k, through a threshold table (pubmed, ctgov)."""

    type: Literal["recall"] = "recall"
    format: FormatTerm = Field(default_factory=lambda: FormatTerm(ok=1.0, failed=-4.0), description="Format term: +1 / -4.")
    table: ThresholdTable = Field(default_factory=recall_table, description="Recall -> outcome reward.")


class NdcgRewardConfig(StrictModel):
    """nDCG@k with graded qrels (sparse, dense): total = format.ok + nDCG when nDCG > 0."""

    type: Literal["ndcg"] = "ndcg"
    format: FormatTerm = Field(default_factory=lambda: FormatTerm(ok=0.1, failed=-2.0), description="Format term: +0.1 / -2.")
    zero_total: float = Field(0.0, description="Total reward when nDCG is 0 (the format bonus is withheld).")


class AnswerRankRewardConfig(StrictModel):
    """Rank of the first retrieved passage holding an answer, through a threshold table (qa)."""

    type: Literal["answer_rank"] = "answer_rank"
    format: FormatTerm = Field(default_factory=lambda: FormatTerm(ok=1.0, failed=-4.0), description="Format term: +1 / -4.")
    table: ThresholdTable = Field(default_factory=answer_rank_table, description="Rank (1-based) -> outcome reward; fallback when no passage holds an answer.")


class ExecutionRewardConfig(StrictModel):
    """Execution match of predicted vs gold SQL (sql)."""

    type: Literal["execution"] = "execution"
    format: FormatTerm = Field(default_factory=lambda: FormatTerm(ok=0.1, failed=-2.0), description="Format term: +0.1 / -2.")
    match: float = Field(1.0, description="Outcome when the result multisets match (ordered lists when the gold SQL has ORDER BY).")
    mismatch: float = Field(0.0, description="Outcome when the SQL does not run (runtime error, timeout) or its result differs.")
    runs_but_wrong: float | None = Field(None, description="Outcome when the SQL runs but the result differs; None = `mismatch`. The BIRD variant uses 0.3.")


RewardConfig = Annotated[
    RecallRewardConfig | NdcgRewardConfig | AnswerRankRewardConfig | ExecutionRewardConfig,
    Field(discriminator="type"),
]
"""A task's reward, chosen by `type`."""
