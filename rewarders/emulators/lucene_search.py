"""Boolean search over a Lucene index for the emulators: query tree -> Lucene query -> ranked ids.

Each term is parsed alone by Lucene's classic `QueryParser` with the analyzer Anserini indexed
with (`DefaultEnglishAnalyzer`: Porter stemming, English stopwords), so a term matches exactly
what an indexed word would; the boolean structure is then built with `BooleanQuery.Builder`.
Ranking is BM25 (k1=0.9, b=0.4 unless told otherwise) over the whole boolean query.

Every method blocks in the JVM: the servers call them from a thread pool, and a lock lets one
thread at a time into the JVM. pyjnius binds a Java method to its instance by mutating an object
shared by all instances of the class (kivy/pyjnius#563, #287), so two threads calling the same
method on different instances (two BooleanQuery builders) can swap them; it also holds the GIL
during Java calls, so the lock costs no parallelism. For the same reason no JVM call is nested in
the argument list of another. `prepare_pyserini()` runs before pyserini (and the JVM) is imported.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from deepretrieval.rewarders.emulators.query_ast import (
    TITLE,
    And,
    MatchAll,
    Node,
    Not,
    Or,
    Term,
    TermStatus,
)
from deepretrieval.rewarders.lucene_env import prepare_pyserini
from deepretrieval.rewarders.lucene_index import LuceneIndex

log = logging.getLogger(__name__)

JQuery = Any
"""A `org.apache.lucene.search.Query` proxy (pyjnius)."""

_CLASSIC_SPECIAL = set('\\+-!():^[]"{}~*?|&/')
_LEAF_CACHE_MAX = 200_000


class SearchBackendError(RuntimeError):
    """Lucene refused or failed a query (e.g. too many clauses); the API answers a backend error."""


@dataclass(frozen=True)
class Hits:
    """One ranked answer.

    Args:
        total: how many documents match in all.
        ids: document ids of the requested window, best first.
        scores: their BM25 scores.
    """

    total: int
    ids: list[str]
    scores: list[float]


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _CLASSIC_SPECIAL else c for c in text)


class LuceneEngine:
    """Evaluate query trees on one Lucene index.

    Args:
        index: the built index (multifield, so `[ti]` terms have a `title` field to search).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.

    Raises:
        IndexMissingError: (from the caller's `ensure_lucene_index`) when the index is absent.
    """

    def __init__(self, index: LuceneIndex, *, k1: float = 0.9, b: float = 0.4):
        prepare_pyserini()
        import pyserini.search.lucene  # noqa: F401  (puts Anserini's jar on the JVM classpath)
        from jnius import autoclass, cast

        self.index = index
        self._paths = autoclass("java.nio.file.Paths")
        directory = autoclass("org.apache.lucene.store.FSDirectory").open(self._paths.get(str(index.path)))
        self._reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(cast("org.apache.lucene.index.IndexReader", self._reader))
        self._searcher.setSimilarity(autoclass("org.apache.lucene.search.similarities.BM25Similarity")(k1, b))
        self._analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
        self._parser_cls = autoclass("org.apache.lucene.queryparser.classic.QueryParser")
        self._builder_cls = autoclass("org.apache.lucene.search.BooleanQuery$Builder")
        self._occur = autoclass("org.apache.lucene.search.BooleanClause$Occur")
        self._match_all = autoclass("org.apache.lucene.search.MatchAllDocsQuery")()
        self._lock = threading.Lock()
        self._parser = self._parser_cls("contents", self._analyzer)
        self._leaf_cache: dict[tuple[str, str, bool, bool, int], tuple[JQuery | None, int]] = {}
        stored = self._searcher.storedFields()
        # Lucene doc number -> BEIR id, read once: a stored-field lookup per hit costs a JNI call.
        self._ids: list[str] = [stored.document(i).get("id") for i in range(self._reader.maxDoc())]
        self.has_title = TITLE in {f.name for f in autoclass("org.apache.lucene.index.FieldInfos").getMergedFieldInfos(self._reader).iterator()}
        log.debug("opened %s: %d docs, title field: %s", index.path, len(self._ids), self.has_title)

    @property
    def num_docs(self) -> int:
        """Documents in the index."""
        return len(self._ids)

    def _leaf(self, term: Term) -> tuple[JQuery | None, int]:
        """The Lucene query of one term and how many documents it matches (cached)."""
        field = term.field if (term.field != TITLE or self.has_title) else "contents"
        key = (field, term.text, term.quoted, term.prefix, term.slop)
        hit = self._leaf_cache.get(key)
        if hit is not None:
            return hit
        if term.prefix:
            syntax = f"{field}:{_escape(term.text.lower())}*"
        else:
            # Quoted even when the user did not quote: a word the analyzer splits
            # ("covid-19") is searched as a phrase, as PubMed does with hyphenated words.
            inner = term.text.replace("\\", " ").replace('"', " ")
            syntax = f'{field}:"{inner}"' + (f"~{term.slop}" if term.slop else "")
        try:
            query = self._parser.parse(syntax)
        except Exception as e:  # jnius.JavaException: a ParseException we did not foresee
            log.debug("term %r not parseable (%s): ignored", term.text, e)
            query = None
        if query is not None and query.toString() == "":
            query = None
        count = int(self._searcher.count(query)) if query is not None else 0
        if len(self._leaf_cache) >= _LEAF_CACHE_MAX:
            self._leaf_cache.clear()
        self._leaf_cache[key] = (query, count)
        return query, count

    def term_status(self, term: Term) -> TermStatus:
        """Whether the index finds `term` on its own."""
        with self._lock:
            query, count = self._leaf(term)
        if query is None:
            return TermStatus.IGNORED
        return TermStatus.FOUND if count > 0 else TermStatus.NOT_FOUND

    def _compile(self, node: Node) -> JQuery:
        """The Lucene query of a (pruned) tree (caller holds the lock)."""
        occur = self._occur
        if isinstance(node, Term):
            query, _ = self._leaf(node)
            if query is None:  # pruning removes these; a bare one matches nothing
                return self._builder_cls().build()
            return query
        if isinstance(node, MatchAll):
            return self._match_all
        if isinstance(node, Not):
            builder = self._builder_cls()
            builder.add(self._match_all, occur.FILTER)
            negated = self._compile(node.child)
            builder.add(negated, occur.MUST_NOT)
            return builder.build()
        builder = self._builder_cls()
        if isinstance(node, And):
            positives = [c for c in node.children if not isinstance(c, Not)]
            for child in positives:
                sub = self._compile(child)
                builder.add(sub, occur.MUST)
            if not positives:
                builder.add(self._match_all, occur.FILTER)
            for child in node.children:
                if isinstance(child, Not):
                    sub = self._compile(child.child)
                    builder.add(sub, occur.MUST_NOT)
        elif isinstance(node, Or):
            for child in node.children:
                sub = self._compile(child)
                builder.add(sub, occur.SHOULD)
        return builder.build()

    def search(self, node: Node | None, start: int, rows: int) -> Hits:
        """Count the matches of a tree and return ranks [start, start + rows).

        Args:
            node: the pruned tree; None matches nothing.
            start: index of the first hit returned (0-based).
            rows: how many hits at most.

        Returns:
            The total and the window of ranked ids.

        Raises:
            SearchBackendError: Lucene refused the query (too many clauses, ...).
        """
        if node is None:
            return Hits(0, [], [])
        with self._lock:
            try:
                query = self._compile(node)
                total = int(self._searcher.count(query))
                if rows <= 0 or start >= total:
                    return Hits(total, [], [])
                window = self._searcher.search(query, start + rows).scoreDocs[start : start + rows]
                return Hits(total, [self._ids[sd.doc] for sd in window], [float(sd.score) for sd in window])
            except Exception as e:  # jnius.JavaException carries the Java class and message
                raise SearchBackendError(f"Lucene failed the query: {e}") from e

    def close(self) -> None:
        """Close the index reader."""
        with self._lock:
            self._reader.close()
