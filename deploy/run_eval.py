"""Held-out evaluation of a run's policy: original requests vs the policy's rewrites, per task.

Used by `train` before and after training (`eval_before_after`). BEIR retrieval tasks (bm25 and
dense backends) are scored with trec_eval metrics; search-API tasks (pubmed, ctgov: the real
service or a managed emulator) by mean recall@k through the run's rewarder, a format failure
counting as recall 0 (TASKS.md §5); sql is skipped with a note.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.train_config import TrainConfig

log = logging.getLogger(__name__)


def evaluate_policy(cfg: TrainConfig, model_dir: Path, label: str) -> dict[str, dict]:
    """Rewrite each task's held-out requests with the policy in `model_dir` and score them.

    One engine holds the policy for every task (an engine start is 20-30 s on CPU, as long as a
    task's rewrites), started at the first task that needs it.

    Returns:
        task -> {"metrics": {"original": {...}, "rewritten": {...}, "rewritten+fallback": {...}},
        "format_broken_share": ..., "queries": n} (or {"skipped": reason}).
    """
    from transformers import AutoTokenizer

    from deepretrieval.actors.engines import make_engine
    from deepretrieval.common.engine_config import on_cores

    @functools.cache
    def policy() -> tuple:
        return make_engine(model_dir, on_cores(cfg.actors.engine, "all"), cfg.model.dtype), AutoTokenizer.from_pretrained(str(model_dir))

    try:
        out = _evaluate_tasks(cfg, model_dir, label, policy)
    finally:
        if policy.cache_info().currsize:  # started: some task needed it
            policy()[0].close()
    (cfg.run_dir / f"eval-{label}.json").write_text(json.dumps(out, indent=2))
    return out


def _evaluate_tasks(cfg: TrainConfig, model_dir: Path, label: str, policy) -> dict[str, dict]:
    """`evaluate_policy`'s tasks, each rewritten by the engine `policy()` returns."""
    from deepretrieval.common.significance import compare_sets, paired_to_json
    from deepretrieval.deploy.evaluation import rewrite_with_policy
    from deepretrieval.deploy.rollout_scoring import task_specs
    from deepretrieval.rewarders.result_feedback import ResultFeedbackSource
    from deepretrieval.rewarders.retrieval import evaluate_query_sets, open_retriever

    out: dict[str, dict] = {}
    specs = task_specs(cfg)
    for t in cfg.tasks:
        if t.eval_split is None:
            continue
        if t.backend.type in ("pubmed", "ctgov"):
            out[t.task] = evaluate_api_task(cfg, t, model_dir, policy())
            log.info("%s eval (%s): recall@%d original %.4f, rewritten %.4f", label, t.task, out[t.task]["k"],
                     out[t.task]["metrics"]["original"]["recall"], out[t.task]["metrics"]["rewritten"]["recall"])
            continue
        if t.backend.type not in ("bm25", "dense"):
            out[t.task] = {"skipped": f"held-out eval during train covers retrieval tasks; use `deepretrieval eval` for {t.backend.type}"}
            continue
        ds = BeirDataset.open(t.dataset, cfg.paths.data_root)
        queries, qrels = ds.split_queries(t.eval_split)
        keep = sorted(queries)[: t.eval_max_queries] if t.eval_max_queries else sorted(queries)
        queries, qrels = {q: queries[q] for q in keep}, {q: qrels[q] for q in keep}
        spec = specs[t.task]
        backend = BeirDataset.open(t.backend.dataset, cfg.paths.data_root)
        retriever = open_retriever(backend, cfg.paths.index_dir, t.backend.type,
                                   bm25=getattr(t.backend, "bm25", None), dense=getattr(t.backend, "dense", None))
        shown = ResultFeedbackSource(retriever, backend, spec.feedback).for_requests(queries) if spec.feedback else None
        strict, fallback, stats = rewrite_with_policy(model_dir, spec, queries, engine=cfg.actors.engine.type,
                                                      max_new_tokens=cfg.sampling.max_new_tokens, loaded=policy(), results=shown)
        means, per_q, _ = evaluate_query_sets(retriever, qrels, {"original": queries, "rewritten": strict, "rewritten+fallback": fallback})
        out[t.task] = {"metrics": means, "paired_vs_original": paired_to_json(compare_sets(per_q, "original", ("ndcg@10",))),
                       "queries": len(queries), "format_broken_share": stats["format_broken_share"],
                       "query_mode": stats["query_mode"],
                       "split": t.eval_split, "policy": str(model_dir)}
        log.info("%s eval (%s): nDCG@10 original %.4f, rewritten %.4f, format broken %.0f%%", label, t.task,
                 means["original"]["ndcg@10"], means["rewritten"]["ndcg@10"], 100 * stats["format_broken_share"])
    return out


def evaluate_api_task(cfg: TrainConfig, t, model_dir: Path, loaded: tuple) -> dict:
    """Mean recall@k of a search-API task's held-out requests: sent as is vs rewritten by the policy (greedy).

    Both are scored by the run's rewarder (same client, limiter, retries, cache) from the prepared
    eval-split prompts; a rewrite that breaks the format counts as recall 0, and a request the
    service could not answer is left out of both means (counted in "unavailable"). `loaded`: the
    engine and tokenizer holding the policy in `model_dir`.
    """
    import asyncio

    from deepretrieval.common.prompt_book import PromptBook
    from deepretrieval.common.sampling import SamplingConfig
    from deepretrieval.common.significance import compare_paired, paired_to_json
    from deepretrieval.deploy.rollout_scoring import original_rollouts, sample_rollouts, score_rollouts, task_specs

    spec = task_specs(cfg)[t.task]
    prompts = sorted(PromptBook.from_files([cfg.run_dir / "prompts" / t.task / f"{t.eval_split}.jsonl"]), key=lambda p: p.uid)
    prompts = prompts[: t.eval_max_queries] if t.eval_max_queries else prompts
    engine, tokenizer = loaded
    params = SamplingConfig(n=1, temperature=spec.eval_temperature, max_new_tokens=cfg.sampling.max_new_tokens, stop=spec.answer.stop)
    rewritten = sample_rollouts(engine, tokenizer, prompts, params)
    originals = original_rollouts(prompts, tokenizer, cfg)
    scored = asyncio.run(score_rollouts(cfg, originals + rewritten, "eval_split"))
    pairs = list(zip(scored[:len(prompts)], scored[len(prompts):]))
    answered = [(o, r) for o, r in pairs if o.status != "unavailable" and r.status != "unavailable"]

    def recall(s) -> float:
        return float(s.components.get("metric", 0.0)) if s.status == "ok" else 0.0

    n = max(1, len(answered))
    paired = {}
    if answered:
        paired = {"rewritten": {"recall": compare_paired({o.rollout.prompt_uid: recall(o) for o, _ in answered},
                                                         {o.rollout.prompt_uid: recall(r) for o, r in answered})}}
    return {"metrics": {"original": {"recall": sum(recall(o) for o, _ in answered) / n},
                        "rewritten": {"recall": sum(recall(r) for _, r in answered) / n}},
            "paired_vs_original": paired_to_json(paired),
            "k": t.k or spec.k_train, "queries": len(prompts), "unavailable": len(pairs) - len(answered),
            "format_broken_share": sum(r.status == "invalid" for _, r in pairs) / max(1, len(pairs)),
            "split": t.eval_split, "policy": str(model_dir)}


LEARNING_STAGES: tuple[tuple[str, str], ...] = (("untrained", "before"), ("warmup", "warmup"), ("rl", "after"))
"""(row label, eval file label): the policies of a run's learning table, in order."""


def learning_table(run_dir: Path) -> dict[str, dict]:
    """Per task, the held-out metric of the original requests and of each stage's policy.

    Reads eval-before.json (untrained), eval-warmup.json and eval-after.json (whichever exist) and
    returns task -> {"metric": name, "rows": {"original": x, "untrained": x, "warmup": x, "rl": x},
    "format_broken_share": {stage: share}}; writes it to learning.json in the run folder.
    """
    table: dict[str, dict] = {}
    for row, label in LEARNING_STAGES:
        path = Path(run_dir) / f"eval-{label}.json"
        if not path.is_file():
            continue
        for task, res in json.loads(path.read_text()).items():
            if "metrics" not in res:
                continue
            metric = "ndcg@10" if "ndcg@10" in res["metrics"]["original"] else "recall"
            entry = table.setdefault(task, {"metric": metric if metric != "recall" else f"recall@{res.get('k')}",
                                            "queries": res["queries"], "rows": {}, "format_broken_share": {}})
            entry["rows"].setdefault("original", res["metrics"]["original"][metric])
            entry["rows"][row] = res["metrics"]["rewritten"][metric]
            entry["format_broken_share"][row] = res["format_broken_share"]
            paired = res.get("paired_vs_original", {}).get("rewritten", {}).get(metric)
            if paired is not None:
                entry.setdefault("paired_vs_original", {})[row] = paired
    (Path(run_dir) / "learning.json").write_text(json.dumps(table, indent=2))
    return table


def learning_lines(table: dict[str, dict]) -> list[str]:
    """`learning_table`'s rows as text, one line per task, and the last stage against the original requests."""
    from deepretrieval.common.significance import PairedComparison

    lines = []
    for task, entry in table.items():
        rows = ", ".join(f"{row} {value:.4f}" for row, value in entry["rows"].items())
        lines.append(f"{task} {entry['metric']} on {entry['queries']} held-out requests: {rows}")
        paired = entry.get("paired_vs_original", {})
        if paired:
            last = list(paired)[-1]
            lines.append(f"  {last} against the original, per request: {PairedComparison(**paired[last]).describe()}")
    return lines
