"""Open the retriever of a BEIR data set by kind and evaluate query sets against it.

The single place that maps `--retriever bm25|dense` to an index and a backend, used by
`index build`, `eval`, the rewarders and the serving endpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deepretrieval.common.config import BM25Config, DenseConfig
from deepretrieval.common.datasets import BeirDataset, Qrels
from deepretrieval.common.metrics import METRICS, evaluate
from deepretrieval.common.significance import PairedComparison, paired_to_json

RetrieverKind = Literal["bm25", "dense"]


def ensure_index(ds: BeirDataset, index_root: Path, kind: RetrieverKind, *, dense: DenseConfig | None = None, multifield: bool = False, progress: bool = True):
    """Build the index of `kind` unless an up-to-date one exists; returns it."""
    if kind == "bm25":
        from deepretrieval.rewarders.lucene_index import ensure_lucene_index

        return ensure_lucene_index(ds, index_root, multifield=multifield, progress=progress)
    from deepretrieval.rewarders.dense import ensure_dense_index

    return ensure_dense_index(ds, index_root, dense or DenseConfig(), progress=progress)


def open_retriever(ds: BeirDataset, index_root: Path, kind: RetrieverKind, *, bm25: BM25Config | None = None, dense: DenseConfig | None = None, build: bool = True):
    """A BM25Backend or DenseBackend over `ds` (building the index first when `build`)."""
    if kind == "bm25":
        from deepretrieval.rewarders.bm25 import BM25Backend
        from deepretrieval.rewarders.lucene_index import ensure_lucene_index, open_lucene_index

        index = ensure_lucene_index(ds, index_root) if build else open_lucene_index(ds, index_root)
        return BM25Backend(index, bm25 or BM25Config())
    from deepretrieval.rewarders.dense import DenseBackend, ensure_dense_index, open_dense_index

    cfg = dense or DenseConfig()
    index = ensure_dense_index(ds, index_root, cfg) if build else open_dense_index(ds, index_root, cfg)
    return DenseBackend(index, cfg)


@dataclass
class EvalReport:
    """Original vs rewritten queries on one split: mean and per-query metrics."""

    dataset: str
    split: str
    retriever: str
    num_queries: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    #: set -> metric -> that set against the original queries, query by query (common/significance.py)
    paired: dict[str, dict[str, PairedComparison]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"dataset": self.dataset, "split": self.split, "retriever": self.retriever,
                "num_queries": self.num_queries, "metrics": self.metrics, "per_query": self.per_query,
                "paired_vs_original": paired_to_json(self.paired),
                **self.extra}

    def table(self) -> str:
        """A side-by-side text table, one row per metric."""
        cols = list(self.metrics)
        width = {c: max(10, len(c)) + 2 for c in cols}
        delta = "original" in self.metrics and len(cols) > 1
        head = f"{'metric':<12}" + "".join(f"{c:>{width[c]}}" for c in cols)
        if delta:
            head += f"{'Δ ' + cols[1]:>{width[cols[1]] + 2}}"
        lines = [f"{self.dataset} / {self.split} / {self.retriever}: {self.num_queries} queries", head, "-" * len(head)]
        for m in METRICS:
            row = f"{m:<12}" + "".join(f"{self.metrics[c][m]:>{width[c]}.4f}" for c in cols)
            if delta:
                row += f"{self.metrics[cols[1]][m] - self.metrics['original'][m]:>+{width[cols[1]] + 2}.4f}"
            lines.append(row)
        if self.paired:
            lines.append(f"{METRICS[0]} against the original queries, per query: mean difference [95% bootstrap interval], "
                         "paired randomization test")
            lines += [f"  {name}: {by_m[METRICS[0]].describe()}" for name, by_m in self.paired.items() if METRICS[0] in by_m]
        return "\n".join(lines)


def evaluate_query_sets(retriever, qrels: Qrels, query_sets: dict[str, dict[str, str]], depth: int = 1000) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    """Run every query set (e.g. "original", "rewritten") and score it.

    Args:
        retriever: a backend with `batch_search(queries, k) -> run`.
        qrels: judgements of the split.
        query_sets: set name -> {query id -> text}; a query id absent from a set scores 0.
        depth: hits retrieved per query.

    Returns:
        (set -> mean metrics, query id -> set -> metrics, set -> seconds spent searching).
    """
    means: dict[str, dict[str, float]] = {}
    per_q: dict[str, dict[str, dict[str, float]]] = {q: {} for q in qrels}
    seconds: dict[str, float] = {}
    for name, queries in query_sets.items():
        t0 = time.perf_counter()
        run = retriever.batch_search({q: t for q, t in queries.items() if q in qrels and t.strip()}, depth)
        seconds[name] = time.perf_counter() - t0
        mean, pq = evaluate(qrels, run)
        means[name] = mean
        for q, vals in pq.items():
            per_q[q][name] = vals
    return means, per_q, seconds
