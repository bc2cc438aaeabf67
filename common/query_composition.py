"""How the policy's query becomes the search query: sent as is, or appended to the request.

`rewrite` (the paper's set-up) sends the policy's query alone. `expand` sends the request
`original_repeats` times followed by the policy's query, as query-expansion work does (Query2doc;
Jagerman et al. 2023, "Query Expansion by Prompting LLMs"): the repeats weight the request's own
terms above the added ones in a bag-of-words engine. Expansion fits bag-of-words backends only; a
Boolean engine would AND the request's every word (TASKS.md §3), so it is rejected there.

With `new_terms_only` the expansion is what its name says, the terms the request lacks: words the
policy copied from the request are dropped (a partial copy would otherwise re-weight the request's
own terms, first half above second), and each new word is added once. Copying the request then
searches exactly the request, a neutral answer the policy can fall back on (docs/design-notes.md).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import StrictModel

QueryMode = Literal["rewrite", "expand"]

#: Backends whose queries are bags of words, where appending terms to a request is meaningful.
EXPANDABLE_BACKENDS = frozenset({"bm25", "dense"})

_WORD = re.compile(r"\w+")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def has_terms(query: str) -> bool:
    """Whether `query` holds a letter or digit: something a search engine can match.

    "...", "?" or "- -" give an engine nothing to look for; in expand mode they would add nothing
    to the request, the same outcome as copying it, without saying so.
    """
    return _LETTER_OR_DIGIT.search(query) is not None


def term_key(word: str) -> str:
    """The form two words are compared in: lower case, plural and final-y folded as Porter's steps 1a/1c do.

    "Cells" ~ "cell", "stresses" ~ "stress", "deficiencies" ~ "deficiency"; short words ("gas") and
    "-ss" words ("glass") are kept.
    """
    w = word.lower()
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        w = w[:-1]
    return w[:-1] + "i" if w.endswith("y") and len(w) > 2 else w


def new_terms(request: str, query: str) -> list[str]:
    """The words of `query` the request does not have (compared by `term_key`), each once, in order."""
    seen = {term_key(w) for w in _WORD.findall(request)}
    out: list[str] = []
    for w in _WORD.findall(query):
        key = term_key(w)
        if key not in seen:
            seen.add(key)
            out.append(w)
    return out


class QueryComposition(StrictModel):
    """The search query built from a request and the policy's answer."""

    mode: QueryMode = Field("rewrite", description="rewrite: search the policy's query alone; expand: the request (repeated) followed by the policy's query.")
    original_repeats: int = Field(2, ge=1, le=10, description="expand only: how many times the request is repeated before the added terms (its terms' weight).")
    new_terms_only: bool = Field(False, description="expand only: append only the words the request lacks, each once (copying the request adds nothing).")

    @model_validator(mode="after")
    def _new_terms_need_expand(self) -> "QueryComposition":
        if self.new_terms_only and self.mode != "expand":
            raise ValueError("new_terms_only applies to mode 'expand' only (a rewrite is searched as written)")
        return self

    def adds_nothing(self, request: str, query: str) -> bool:
        """Whether searching `query` for `request` is searching the request itself: a copy of it,
        or in expand mode with `new_terms_only`, a query with no word the request lacks."""
        return self.compose(request, query) == self.compose(request, request)

    def compose(self, request: str, query: str) -> str:
        """The text sent to the search backend for the policy's `query` on `request`."""
        if self.mode == "rewrite":
            return query
        added = " ".join(new_terms(request, query)) if self.new_terms_only else query.strip()
        return " ".join([request.strip()] * self.original_repeats + ([added] if added else []))
