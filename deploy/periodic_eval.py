"""Periodic held-out evaluation during training: every `eval_every` policy versions, in the background.

The launcher calls `poll()` once a tick. When the learner has published a version at or past the
next multiple of `eval_every`, that version's folder is copied out of the weight store (which
prunes old versions) and evaluated in a child process with `run_eval.evaluate_policy`, on at
most `eval_max_queries` held-out requests per task. A process, not a thread: the BM25 retriever
runs in the JVM, and JNI calls from a second Python thread of the launcher crashed it. One evaluation runs at a time; versions
published meanwhile are skipped, not queued, so evaluation never falls behind training. Results:
`eval-step000010.json` per evaluation and one line per evaluation in `evals.jsonl` (plotted with the
training curves as `eval/<task>/<metric>`).
"""

from __future__ import annotations

import json
import logging
import shutil
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
    """Evaluates published policy versions every `cfg.eval_every` versions, one at a time, in a child process.

    Args:
        cfg: the run config (with the run's Redis URL and managed emulator URLs resolved).
    """

    def __init__(self, cfg: TrainConfig):
        self._every = cfg.eval_every or 0
        tasks = [t.model_copy(update={"eval_max_queries": min(t.eval_max_queries or cfg.eval_every_max_queries, cfg.eval_every_max_queries)})
                 for t in cfg.tasks]
        self._cfg = cfg.model_copy(update={"tasks": tasks})
        self._next = self._every
        self._proc = None
        self._running: tuple[int, Path] | None = None
        self.done: list[int] = []

    def poll(self) -> None:
        """Start an evaluation of the newest eligible published version, if none is running."""
        import multiprocessing as mp

        from deepretrieval.learner.weight_sync import published_versions, version_dir_name

        if not self._every or self._reap(block=False):
            return
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
        self._proc = mp.get_context("spawn").Process(target=evaluate_version, args=(self._cfg.model_dump_json(), version, str(copy)),
                                                     name=f"periodic-eval-v{version}")  # not daemonic: vLLM spawns its own children
        self._proc.start()
        self._running = (version, copy)

    def _reap(self, *, block: bool) -> bool:
        """Collect a finished evaluation; True while one is still running (after waiting, when `block`)."""
        if self._proc is None:
            return False
        self._proc.join(None if block else 0)
        if self._proc.is_alive():
            return True
        version, copy = self._running  # type: ignore[misc]
        if self._proc.exitcode == 0:
            self.done.append(version)
        else:
            log.warning("periodic eval of version %d failed (exit code %s)", version, self._proc.exitcode)
        shutil.rmtree(copy, ignore_errors=True)
        self._proc, self._running = None, None
        return False

    def close(self, wait: bool = True) -> None:
        """Wait for a running evaluation, or stop it (by pid) with `wait=False`."""
        if self._proc is not None and not wait:
            self._proc.terminate()
        self._reap(block=True)


def evaluate_version(cfg_json: str, version: int, model_dir: str) -> None:
    """Child-process body: evaluate one copied version and append its line to evals.jsonl."""
    import logging as _logging

    from deepretrieval.deploy.run_eval import evaluate_policy

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = TrainConfig.model_validate_json(cfg_json)
    results = evaluate_policy(cfg, Path(model_dir), f"step{version:06d}")
    with (cfg.run_dir / EVALS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(eval_record(version, results)) + "\n")
