"""The boolean query tree both emulated query languages parse into, and its pruning.

PubMed terms (`pubmed_query.py`) and ClinicalTrials.gov Essie expressions (`ctgov_query.py`)
parse into these nodes; `lucene_search.py` turns a tree into a Lucene query. Pure Python: no JVM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

CONTENTS = "contents"
"""Lucene field holding title + " " + text (the BEIR "flat" field)."""
TITLE = "title"
"""Lucene field holding the title alone (multifield indexes only)."""


@dataclass(frozen=True)
class Term:
    """One search term: a word or a quoted phrase, restricted to one Lucene field.

    Args:
        text: the words as written, without quotes or field tag.
        field: the Lucene field searched (`CONTENTS` or `TITLE`).
        quoted: written in double quotes (a phrase).
        prefix: written with a trailing `*` (truncation).
        slop: proximity of a quoted phrase (PubMed `[tiab:~N]`); 0 = exact phrase.
        label: the field as the API names it in its query translation (e.g. "Title/Abstract").
    """

    text: str
    field: str = CONTENTS
    quoted: bool = False
    prefix: bool = False
    slop: int = 0
    label: str = "All Fields"


@dataclass(frozen=True)
class And:
    """All children match; `Not` children exclude."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any child matches."""

    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """Documents not matching `child`; inside `And` it excludes, alone it means all others."""

    child: Node


@dataclass(frozen=True)
class MatchAll:
    """Every document (ClinicalTrials.gov without a query)."""


Node = Term | And | Or | Not | MatchAll


def make_and(left: Node, right: Node) -> Node:
    """`left AND right`, flattening nested ANDs (AND is associative)."""
    parts: list[Node] = []
    for side in (left, right):
        parts.extend(side.children if isinstance(side, And) else (side,))
    return And(tuple(parts))


def make_or(left: Node, right: Node) -> Node:
    """`left OR right`, flattening nested ORs."""
    parts: list[Node] = []
    for side in (left, right):
        parts.extend(side.children if isinstance(side, Or) else (side,))
    return Or(tuple(parts))


class TermStatus(Enum):
    """How the index answers one term on its own."""

    FOUND = "found"
    NOT_FOUND = "not_found"
    """No document contains it."""
    IGNORED = "ignored"
    """The analyzer leaves nothing of it (stopwords only)."""


@dataclass
class PruneReport:
    """Terms removed or flagged while pruning, in query order, as written."""

    not_found: list[str]
    quoted_not_found: list[str]
    ignored: list[str]


def term_display(term: Term) -> str:
    """The term as a user wrote it, for error and warning lists."""
    text = f'"{term.text}"' if term.quoted else term.text
    return text + ("*" if term.prefix and not term.quoted else "")


def prune(node: Node, status: Callable[[Term], TermStatus], *, drop_not_found: bool) -> tuple[Node | None, PruneReport]:
    """Remove terms the engine would ignore, the way the emulated API does.

    Stopword-only terms are always removed. With `drop_not_found` (PubMed), unquoted terms that
    no document contains are removed too and reported; quoted phrases that match nothing stay
    (they match nothing) and are reported separately. A boolean node that loses a child keeps
    the others; one that loses all is removed.

    Args:
        node: the parsed query.
        status: how the index answers one term (cached by the caller).
        drop_not_found: remove unquoted terms absent from the index.

    Returns:
        The pruned tree (None when nothing is left) and what was removed or flagged.
    """
    report = PruneReport([], [], [])

    def walk(n: Node) -> Node | None:
        if isinstance(n, Term):
            st = status(n)
            if st is TermStatus.IGNORED:
                report.ignored.append(term_display(n))
                return None
            if st is TermStatus.NOT_FOUND:
                if n.quoted:
                    report.quoted_not_found.append(term_display(n))
                elif drop_not_found:
                    report.not_found.append(term_display(n))
                    return None
            return n
        if isinstance(n, Not):
            child = walk(n.child)
            return Not(child) if child is not None else None
        if isinstance(n, (And, Or)):
            kept = [c for c in (walk(c) for c in n.children) if c is not None]
            if not kept:
                return None
            if len(kept) == 1 and not isinstance(kept[0], Not):
                return kept[0]
            return type(n)(tuple(kept))
        return n

    return walk(node), report
