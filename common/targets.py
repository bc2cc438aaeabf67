"""Ground truth of one request, as written into the prepared prompt files (`data prepare`).

Three kinds, keyed on `type`: graded document ids (pubmed, ctgov, sparse, dense), answers (qa),
gold SQL (sql).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import StrictModel


class IdsTarget(StrictModel):
    """Judged documents of a request with their grades (BEIR qrels; PMIDs; NCT ids)."""

    type: Literal["ids"] = "ids"
    ids: dict[str, int] = Field(description="Document id -> graded relevance; grade > 0 is relevant, 0 judged non-relevant.")

    def relevant(self) -> set[str]:
        """Ids with grade > 0 (the recall targets)."""
        return {doc for doc, grade in self.ids.items() if grade > 0}


class AnswersTarget(StrictModel):
    """What counts as finding the answer: passages holding an answer string, or known answer passages."""

    type: Literal["answers"] = "answers"
    answers: list[str] = Field(default_factory=list, description="Answer strings; a passage containing one (after SQuAD normalisation) is a hit.")
    passage_ids: list[str] = Field(default_factory=list, description="Ids of passages known to hold the answer (BEIR sets whose qrels give answers as passages).")

    @model_validator(mode="after")
    def _not_empty(self) -> AnswersTarget:
        if not any(a.strip() for a in self.answers) and not self.passage_ids:
            raise ValueError("answers target needs a non-blank answer string or a passage id")
        return self


class SqlTarget(StrictModel):
    """Gold SQL, executed on the task's database to get the reference result."""

    type: Literal["sql"] = "sql"
    sql: str = Field(min_length=1, description="The gold SQL (SQLite dialect).")


Target = Annotated[IdsTarget | AnswersTarget | SqlTarget, Field(discriminator="type")]
"""Any target, chosen by `type`."""
