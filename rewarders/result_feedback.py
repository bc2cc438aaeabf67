"""The request's own top search results, as a prompt shows them (`TaskSpec.feedback`).

A task with `feedback` searches each request as is with its backend before the policy writes a
query, and the prompt lists the titles of the top results (`common.tasks.render_results`). The
same `ResultFeedbackSource` serves prompt files (`prepare`), held-out evaluation and the serving
endpoint, so a policy sees the same kind of list wherever it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deepretrieval.common.config import BM25Config, DenseConfig
from deepretrieval.common.datasets import BeirDataset, Document
from deepretrieval.common.tasks import ResultFeedback, TaskSpec

ELLIPSIS = "…"


def shown_text(doc: Document, max_chars: int) -> str:
    """What a result shows: the document's title (its text when it has none), whitespace folded,
    cut at a word boundary to at most `max_chars` characters plus an ellipsis."""
    text = " ".join((doc.title or doc.text).split())
    if len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else text[:max_chars]
    return cut.rstrip(" ,;:.") + ELLIPSIS


class ResultFeedbackSource:
    """Searches requests with a retriever and returns their top results as shown.

    Holds one shown line per document of the collection in memory (read once from the corpus).

    Args:
        retriever: a BM25Backend or DenseBackend over `ds` (`batch_search`, async `search`); the serving
            endpoint passes its search backend, which `for_request` alone uses.
        ds: the searched collection (for the titles).
        feedback: how many results, how long each.
    """

    def __init__(self, retriever, ds: BeirDataset, feedback: ResultFeedback):
        self._retriever = retriever
        self._feedback = feedback
        self._shown = {d.doc_id: shown_text(d, feedback.max_chars) for d in ds.iter_corpus()}

    def for_requests(self, requests: Mapping[str, str]) -> dict[str, list[str]]:
        """id -> the request's top results as shown, best first (empty when it found nothing)."""
        run = self._retriever.batch_search(dict(requests), k=self._feedback.docs)
        return {q: [self._shown[d] for d in list(run.get(q, {}))[: self._feedback.docs]] for q in requests}

    async def for_request(self, request: str) -> list[str]:
        """One request's top results as shown (the serving endpoint's path)."""
        hits = await self._retriever.search(request, self._feedback.docs)
        return [self._shown[d] for d in hits.ids[: self._feedback.docs]]


def open_feedback(spec: TaskSpec, ds: BeirDataset, index_root: Path, kind: str, *, bm25: BM25Config | None = None,
                  dense: DenseConfig | None = None) -> ResultFeedbackSource | None:
    """The results source of a task with `feedback` over the collection it searches; None without.

    Args:
        spec: the task.
        ds: the collection its backend searches.
        index_root: where the indexes live (built when missing).
        kind: "bm25" or "dense".
        bm25, dense: the backend's parameters.
    """
    if spec.feedback is None:
        return None
    from deepretrieval.rewarders.retrieval import open_retriever

    return ResultFeedbackSource(open_retriever(ds, index_root, kind, bm25=bm25, dense=dense), ds, spec.feedback)
