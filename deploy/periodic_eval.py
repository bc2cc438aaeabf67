"""Periodic held-out evaluation during training: every `eval_every` policy versions, in the background.

The launcher calls `poll()` once a tick. When the learner has published a version at or past the
next multiple of `eval_every`, that version's folder is copied out of the weight store (which
prunes old versions) and evaluated on a background thread with `run_eval.evaluate_policy`, on at
most `eval_max_queries` held-out requests per task. One evaluation runs at a time; versions
published meanwhile are skipped, not queued, so evaluation never falls behind training. Results:
`eval-step000010.json` per evaluation and one line per evaluation in `evals.jsonl` (plotted with the
training curves as `eval/<task>/<metric>`).
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from deepretrieval.common.train_config import TrainConfig
from deepretrieval.learner.plots import EVALS_FILE

log = logging.getLogger(__name__)



def eval_record(step: int, results: dict[str, dict]) -> dict[str, float]:
    """One evals.jsonl line: the step and each task's rewritten-query metrics (original for reference)."""
    record: dict[str, float] = {"step": float(step)}
    for task, res in results.items():
        for which in ("original", "rewritten"):
            for metric, value in res.get("metrics", {}).get(which, {}).items():
                if metric in ("ndcg@10", "recall@100", "recall"):
                    record[f"eval/{task}/{metric}" + ("" if which == "rewritten" else "/original")] = float(value)
        if "format_broken_share" in res:
            record[f"eval/{task}/format_broken_share"] = float(res["format_broken_share"])
    return record


class PeriodicEval:
    """Evaluates published policy versions every `cfg.eval_every` versions, one at a time, off the launcher's thread.

    Args:
        cfg: the run config (with the run's Redis URL and managed emulator URLs resolved).
    """

    def __init__(self, cfg: TrainConfig):
        self._every = cfg.eval_every or 0
        tasks = [t.model_copy(update={"eval_max_queries": min(t.eval_max_queries or cfg.eval_every_max_queries, cfg.eval_every_max_queries)})
                 for t in cfg.tasks]
        self._cfg = cfg.model_copy(update={"tasks": tasks})
        self._next = self._every
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="periodic-eval") if self._every else None
        self._pending: Future | None = None
        self.done: list[int] = []

    def poll(self) -> None:
        """Start an evaluation of the newest eligible published version, if none is running."""
        from deepretrieval.learner.weight_sync import published_versions, version_dir_name

        if self._pool is None or (self._pending is not None and not self._pending.done()):
            return
        self._reap()
        store = self._cfg.run_dir / "weights"
        eligible = [v for v in published_versions(store) if v >= self._next]
        if not eligible:
            return
        version = max(eligible)
        self._next = (version // self._every + 1) * self._every
        copy = self._cfg.run_dir / "evals" / version_dir_name(version)
        try:
            shutil.copytree(store / version_dir_name(version), copy, dirs_exist_ok=True)
        except (OSError, shutil.Error) as e:  # pruned between listing and copying
            log.warning("periodic eval: version %d vanished before it was copied (%s); waiting for the next", version, e)
            return
        self._pending = self._pool.submit(self._evaluate, version, copy)

    def _evaluate(self, version: int, model_dir: Path) -> None:
        from deepretrieval.deploy.run_eval import evaluate_policy

        try:
            results = evaluate_policy(self._cfg, model_dir, f"step{version:06d}")
            with (self._cfg.run_dir / EVALS_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(eval_record(version, results)) + "\n")
            self.done.append(version)
        finally:
            shutil.rmtree(model_dir, ignore_errors=True)

    def _reap(self) -> None:
        if self._pending is not None and self._pending.done():
            error = self._pending.exception()
            if error is not None:
                log.warning("periodic eval failed: %s", error)
            self._pending = None

    def close(self, wait: bool = True) -> None:
        """Wait for a running evaluation (or abandon it with `wait=False`), then stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._reap()
