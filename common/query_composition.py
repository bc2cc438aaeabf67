"""How the policy's query becomes the search query: sent as is, or appended to the request.

`rewrite` (the paper's set-up) sends the policy's query alone. `expand` sends the request
`original_repeats` times followed by the policy's query, as query-expansion work does (Query2doc;
Jagerman et al. 2023, "Query Expansion by Prompting LLMs"): the repeats weight the request's own
terms above the added ones in a bag-of-words engine. Expansion fits bag-of-words backends only; a
Boolean engine would AND the request's every word (TASKS.md §3), so it is rejected there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepretrieval.common.config import StrictModel

QueryMode = Literal["rewrite", "expand"]

#: Backends whose queries are bags of words, where appending terms to a request is meaningful.
EXPANDABLE_BACKENDS = frozenset({"bm25", "dense"})


class QueryComposition(StrictModel):
    """The search query built from a request and the policy's answer."""

    mode: QueryMode = Field("rewrite", description="rewrite: search the policy's query alone; expand: the request (repeated) followed by the policy's query.")
    original_repeats: int = Field(2, ge=1, le=10, description="expand only: how many times the request is repeated before the added terms (its terms' weight).")

    def compose(self, request: str, query: str) -> str:
        """The text sent to the search backend for the policy's `query` on `request`."""
        if self.mode == "rewrite":
            return query
        return " ".join([request.strip()] * self.original_repeats + [query.strip()])
