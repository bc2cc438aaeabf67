"""Retrieval metrics with trec_eval semantics (pytrec_eval), not hand-rolled formulas.

Names follow the eval table: ndcg@10, recall@10, recall@100, recall@1000, mrr@10.
"""

from __future__ import annotations

from statistics import fmean

import pytrec_eval

from deepretrieval.common.errors import DeepRetrievalError

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "recall@1000", "mrr@10")

# our name -> (trec_eval measure family, the key pytrec_eval reports, run cut-off or None)
_TREC: dict[str, tuple[str, str, int | None]] = {
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10", None),
    "recall@10": ("recall.10", "recall_10", None),
    "recall@100": ("recall.100", "recall_100", None),
    "recall@1000": ("recall.1000", "recall_1000", None),
    # trec_eval's recip_rank has no cut-off: MRR@10 is recip_rank over the top-10 of the run.
    "mrr@10": ("recip_rank", "recip_rank", 10),
}


def _parse(name: str) -> tuple[str, str, int | None]:
    if name in _TREC:
        return _TREC[name]
    family, _, k = name.partition("@")
    if family in ("ndcg", "recall", "P") and k.isdigit():
        measure = {"ndcg": "ndcg_cut", "recall": "recall", "P": "P"}[family]
        return f"{measure}.{k}", f"{measure}_{k}", None
    if family == "mrr" and k.isdigit():
        return "recip_rank", "recip_rank", int(k)
    raise DeepRetrievalError(f"unknown metric {name!r}; use ndcg@K, recall@K, P@K or mrr@K")


def _top(run: Run, k: int) -> Run:
    out: Run = {}
    for qid, docs in run.items():
        # trec_eval order: score descending, then doc id descending
        ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]
        out[qid] = dict(ranked)
    return out


def per_query(qrels: Qrels, run: Run, metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, float]]:
    """Each metric for each query in `qrels`; a query missing from `run` scores 0.

    Args:
        qrels: query id -> {doc id -> grade}.
        run: query id -> {doc id -> score}.
        metrics: metric names (see METRICS).

    Returns:
        query id -> {metric -> value}.
    """
    parsed = {m: _parse(m) for m in metrics}
    by_cut: dict[int | None, list[str]] = {}
    for m, (_, _, cut) in parsed.items():
        by_cut.setdefault(cut, []).append(m)
    full_run = {q: dict(run.get(q, {})) for q in qrels}
    out: dict[str, dict[str, float]] = {q: {} for q in qrels}
    for cut, names in by_cut.items():
        this_run = _top(full_run, cut) if cut else full_run
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {parsed[m][0] for m in names})
        # pytrec_eval skips queries with an empty run; they score 0 on every measure.
        scores = evaluator.evaluate({q: d for q, d in this_run.items() if d})
        for q in qrels:
            for m in names:
                out[q][m] = float(scores.get(q, {}).get(parsed[m][1], 0.0))
    return out


def aggregate(per_q: dict[str, dict[str, float]], metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Macro average over queries."""
    if not per_q:
        return {m: 0.0 for m in metrics}
    return {m: fmean(v[m] for v in per_q.values()) for m in metrics}


def evaluate(qrels: Qrels, run: Run, metrics: tuple[str, ...] = METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean metrics, per-query metrics) of a run."""
    pq = per_query(qrels, run, metrics)
    return aggregate(pq, metrics), pq
