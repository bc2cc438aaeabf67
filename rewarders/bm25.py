"""Lucene BM25 search backend through pyserini (bag-of-words queries, BEIR "flat" index)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor

from deepretrieval.common.config import BM25Config
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.lucene_env import prepare_pyserini
from deepretrieval.rewarders.lucene_index import LuceneIndex

Run = dict[str, dict[str, float]]
"""query id -> {doc id -> score}: a TREC run."""


class BM25Backend:
    """BM25 over a Lucene index.

    Boolean words in a query are plain tokens here (TASKS.md §3); the query goes through Anserini's
    bag-of-words generator with the index's analyzer, as the Pyserini BEIR regressions do.

    Args:
        index: the built index.
        config: BM25 parameters and batch threads.
        executor: where blocking JVM calls run; None = asyncio's default thread pool.
    """

    def __init__(self, index: LuceneIndex, config: BM25Config, executor: Executor | None = None):
        prepare_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        self._index = index
        self._config = config
        self._executor = executor
        self._searcher = LuceneSearcher(str(index.path))
        self._searcher.set_bm25(config.k1, config.b)
        if config.rm3 is not None:
            self._searcher.set_rm3(config.rm3.fb_terms, config.rm3.fb_docs, config.rm3.original_query_weight)
        # pyjnius binds Java methods through state shared by every object of a class, so two
        # Python threads calling into the same searcher can swap targets (kivy/pyjnius#563):
        # one Python thread at a time enters the JVM; batch_search still runs Java threads.
        self._jvm = threading.Lock()

    @property
    def name(self) -> str:
        return "bm25"

    @property
    def version(self) -> str:
        rm3 = self._config.rm3
        return f"{self._index.version}-k1={self._config.k1}-b={self._config.b}" + (
            f"-rm3={rm3.fb_terms},{rm3.fb_docs},{rm3.original_query_weight}" if rm3 is not None else "")

    def search_sync(self, query: str, k: int) -> SearchResult:
        """Blocking search of one query."""
        with self._jvm:
            hits = self._searcher.search(query, k=k)
        return SearchResult(ids=[h.docid for h in hits], scores=[float(h.score) for h in hits])

    async def search(self, query: str, k: int) -> SearchResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.search_sync, query, k)

    def batch_search(self, queries: dict[str, str], k: int) -> Run:
        """Search many queries with the configured threads; returns a TREC run.

        Args:
            queries: query id -> text.
            k: hits per query.
        """
        qids = list(queries)
        texts = [queries[q] for q in qids]
        out: Run = {q: {} for q in qids}
        if not qids:
            return out
        with self._jvm:
            results = self._searcher.batch_search(texts, qids, k=k, threads=self._config.threads)
        for qid, hits in results.items():
            out[qid] = {h.docid: float(h.score) for h in hits}
        return out

    def doc_text(self, doc_id: str) -> str | None:
        """The stored `contents` of a document (for answer-string checks); None if absent."""
        import json

        with self._jvm:
            doc = self._searcher.doc(doc_id)
            raw = doc.raw() if doc is not None else None
        if raw is None:
            return None
        try:
            return json.loads(raw).get("contents", raw)
        except (TypeError, ValueError):
            return raw

    async def close(self) -> None:
        self._searcher.close()
