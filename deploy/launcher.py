"""`deepretrieval train`: one command runs the whole system.

On one machine: a private redis-server when no Redis URL is configured, Ray started locally, then
the learner, the rewarder fleet and the actor pool as Ray actors. With `transport.url` and
`ray.address` set, the same config runs on a cluster. Ctrl-C stops every worker cleanly; the
learner commits a checkpoint on the way out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from deepretrieval.common.redis_server import RedisServer
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.deploy.workers import ActorWorker, LearnerWorker, RewarderWorker

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    seconds: float
    learner: dict
    actors: list[dict] = field(default_factory=list)
    rewarders: list[dict] = field(default_factory=list)
    interrupted: bool = False


def prepare_run(cfg: TrainConfig) -> None:
    """Write the resolved config and the prompt files; build the indexes the backends need."""
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.common.prepare import prepare
    from deepretrieval.common.tasks import get_task

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    for t in cfg.tasks:
        out = cfg.run_dir / "prompts" / t.task
        splits = [t.train_split] + ([t.eval_split] if t.eval_split and t.eval_split != t.train_split else [])
        files = prepare(get_task(t.task, t.overrides), t.dataset, cfg.paths.data_root, out, splits)
        if t.max_prompts is not None:
            train = next(f.path for f in files if f.split == t.train_split)
            lines = train.read_text().splitlines()[: t.max_prompts]
            train.write_text("\n".join(lines) + "\n")
        if t.backend.type in ("bm25", "dense"):
            from deepretrieval.rewarders.retrieval import ensure_index

            ensure_index(BeirDataset.open(t.backend.dataset, cfg.paths.data_root), cfg.paths.index_dir, t.backend.type,
                         dense=getattr(t.backend, "dense", None))


def _ray_init(cfg: TrainConfig):
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local cluster on loopback (STACK.md §6)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=cfg.ray.object_store_mb * 2**20)
    return ray


class _Progress:
    """Tails metrics.jsonl into a progress bar."""

    def __init__(self, cfg: TrainConfig):
        self._file = cfg.run_dir / "metrics.jsonl"
        self._offset = self._file.stat().st_size if self._file.exists() else 0
        self._bar = tqdm(total=cfg.max_steps, desc=f"train {cfg.run}", unit="step")
        self._t0 = time.monotonic()

    def update(self, api_calls: int) -> None:
        if not self._file.exists():
            return
        with self._file.open() as f:
            f.seek(self._offset)
            lines = f.readlines()
            self._offset = f.tell()
        for line in lines:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._bar.n = int(m.get("step", self._bar.n))
            self._bar.set_postfix(reward=f"{m.get('reward_mean', float('nan')):.3f}", fmt_err=f"{m.get('format_error_share', 0):.2f}",
                                  stale=f"{m.get('staleness_mean', 0):.1f}", api_rps=f"{api_calls / max(1e-9, time.monotonic() - self._t0):.1f}",
                                  cache=f"{m.get('cache_hit_rate', 0):.2f}")
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def launch(cfg: TrainConfig) -> RunResult:
    """Run training end to end and return what every worker reported."""
    t0 = time.monotonic()
    redis_server = None
    if cfg.transport.url is None:
        redis_server = RedisServer(cfg.run_dir / "redis").start()
        cfg = cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"url": redis_server.url})})
    if cfg.trace_file is None:
        cfg = cfg.model_copy(update={"trace_file": cfg.run_dir / "traces.jsonl"})
    interrupted = False
    try:
        prepare_run(cfg)
        ray = _ray_init(cfg)
        cfg_json = cfg.model_dump_json()
        learner = ray.remote(num_cpus=0)(LearnerWorker).remote(cfg_json, "0")
        rewarders = [ray.remote(num_cpus=0)(RewarderWorker).remote(cfg_json, str(i)) for i in range(cfg.rewarders.processes)]
        actors = [ray.remote(num_cpus=0)(ActorWorker).remote(cfg_json, str(i)) for i in range(cfg.actors.processes)]
        learner_ref = learner.run.remote()
        rewarder_refs = [r.run.remote() for r in rewarders]
        actor_refs = [a.run.remote() for a in actors]
        progress = _Progress(cfg)
        try:
            while True:
                done, _ = ray.wait([learner_ref, *rewarder_refs, *actor_refs], timeout=1.0, num_returns=1)
                api_calls = sum(s.get("api_calls", 0) for s in ray.get([r.stats.remote() for r in rewarders]))
                progress.update(api_calls)
                if done:
                    ray.get(done)  # a worker that failed raises here, with its traceback
                    if learner_ref in done:
                        break
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping workers; the learner commits a checkpoint")
        finally:
            progress.close()
            learner.stop.remote()
            for w in [*actors, *rewarders]:
                w.stop.remote()
        learner_out = ray.get(learner_ref)
        actor_out = ray.get(actor_refs, timeout=300)
        rewarder_out = ray.get(rewarder_refs, timeout=300)
        ray.shutdown()
    finally:
        if redis_server is not None:
            redis_server.stop()
    result = RunResult(cfg.run_dir, time.monotonic() - t0, learner_out, actor_out, rewarder_out, interrupted)
    _finish(cfg, result)
    return result


def _finish(cfg: TrainConfig, result: RunResult) -> None:
    """Plots and a summary next to the metrics."""
    summary = {"run": cfg.run, "mode": cfg.mode, "seconds": result.seconds, "interrupted": result.interrupted,
               "learner": result.learner, "actors": result.actors, "rewarders": result.rewarders}
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    try:
        from deepretrieval.learner.plots import plot_run

        plot_run(cfg.run_dir)
    except (ImportError, OSError, ValueError) as e:
        log.warning("plots not drawn: %s", e)
