"""Held-out evaluation of a run's policy: original requests vs the policy's rewrites, per task.

Used by `train` before and after training (`eval_before_after`). BEIR retrieval tasks (bm25 and
dense backends) are scored with trec_eval metrics; other tasks are skipped with a note.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.train_config import TrainConfig

log = logging.getLogger(__name__)


def evaluate_policy(cfg: TrainConfig, model_dir: Path, label: str) -> dict[str, dict]:
    """Rewrite each task's held-out requests with the policy in `model_dir` and score them.

    Returns:
        task -> {"metrics": {"original": {...}, "rewritten": {...}, "rewritten+fallback": {...}},
        "format_broken_share": ..., "queries": n} (or {"skipped": reason}).
    """
    from deepretrieval.deploy.evaluation import rewrite_with_policy
    from deepretrieval.rewarders.retrieval import evaluate_query_sets, open_retriever

    out: dict[str, dict] = {}
    for t in cfg.tasks:
        if t.eval_split is None:
            continue
        if t.backend.type not in ("bm25", "dense"):
            out[t.task] = {"skipped": f"held-out eval during train covers BEIR retrieval tasks; use `deepretrieval eval` for {t.backend.type}"}
            continue
        ds = BeirDataset.open(t.dataset, cfg.paths.data_root)
        queries, qrels = ds.split_queries(t.eval_split)
        keep = sorted(queries)[: t.eval_max_queries] if t.eval_max_queries else sorted(queries)
        queries, qrels = {q: queries[q] for q in keep}, {q: qrels[q] for q in keep}
        strict, fallback, stats = rewrite_with_policy(model_dir, t.task, queries, engine=cfg.actors.engine.type,
                                                      max_new_tokens=cfg.sampling.max_new_tokens)
        backend = BeirDataset.open(t.backend.dataset, cfg.paths.data_root)
        retriever = open_retriever(backend, cfg.paths.index_dir, t.backend.type,
                                   bm25=getattr(t.backend, "bm25", None), dense=getattr(t.backend, "dense", None))
        means, _, _ = evaluate_query_sets(retriever, qrels, {"original": queries, "rewritten": strict, "rewritten+fallback": fallback})
        out[t.task] = {"metrics": means, "queries": len(queries), "format_broken_share": stats["format_broken_share"],
                       "split": t.eval_split, "policy": str(model_dir)}
        log.info("%s eval (%s): nDCG@10 original %.4f, rewritten %.4f, format broken %.0f%%", label, t.task,
                 means["original"]["ndcg@10"], means["rewritten"]["ndcg@10"], 100 * stats["format_broken_share"])
    (cfg.run_dir / f"eval-{label}.json").write_text(json.dumps(out, indent=2))
    return out
