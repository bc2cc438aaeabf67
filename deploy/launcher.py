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
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from deepretrieval.common.signals import keep_sigsegv_handler
from deepretrieval.common.stopwatch import Stopwatch
from deepretrieval.common.train_config import RolePlacement, TrainConfig
from deepretrieval.deploy.periodic_eval import PeriodicEval
from deepretrieval.deploy.run_budget import RLDeadline, budgeted_seconds
from deepretrieval.deploy.services import run_services
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
    #: RL stopped before max_steps because the config's `time_budget` would not hold more.
    stopped_by_budget: bool = False
    #: The RL share of the config's `time_budget`, as planned when RL started; None without one.
    deadline: RLDeadline | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)
    #: Per task, the held-out metric at each stage (`run_eval.learning_table`); empty without `eval_before_after`.
    learning: dict[str, dict] = field(default_factory=dict)

    @property
    def budgeted_s(self) -> float:
        """Seconds of the stages a run needs (setup, warm-up, RL, final evaluation): all but the
        evaluations that only show the untrained and warmed-up policies (`eval_before_after`)."""
        return budgeted_seconds(self.stages_s)


def prepare_run(cfg: TrainConfig) -> None:
    """Write the resolved config and the prompt files; build the indexes the backends need."""
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.common.prepare import prepare
    from deepretrieval.common.tasks import get_task

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    for t in cfg.tasks:
        spec = get_task(t.task, t.overrides)
        results_for = None
        if t.backend.type in ("bm25", "dense"):
            from deepretrieval.rewarders.result_feedback import open_feedback
            from deepretrieval.rewarders.retrieval import ensure_index

            backend_ds = BeirDataset.open(t.backend.dataset, cfg.paths.data_root)
            source = open_feedback(spec, backend_ds, cfg.paths.index_dir, t.backend.type,  # opening builds the index
                                   bm25=getattr(t.backend, "bm25", None), dense=getattr(t.backend, "dense", None))
            if source is None:
                ensure_index(backend_ds, cfg.paths.index_dir, t.backend.type, dense=getattr(t.backend, "dense", None))
            else:
                results_for = source.for_requests
        out = cfg.run_dir / "prompts" / t.task
        splits = [t.train_split] + ([t.eval_split] if t.eval_split and t.eval_split != t.train_split else [])
        files = prepare(spec, t.dataset, cfg.paths.data_root, out, splits, results_for)
        if t.max_prompts is not None:
            train = next(f.path for f in files if f.split == t.train_split)
            lines = train.read_text().splitlines()[: t.max_prompts]
            train.write_text("\n".join(lines) + "\n")


def warm_start(cfg: TrainConfig, clock: Stopwatch) -> TrainConfig:
    """Run the format warm-up unless the run has its warm policy already; RL then starts from it.

    A resumed run (its learner checkpoints exist) reuses the warm policy and never re-runs it.
    `clock` times the stages `warmup_s` and `eval_warmup_s`.
    """
    from deepretrieval.deploy.warmup import run_warmup, warm_policy_dir, warm_policy_ready

    if not warm_policy_ready(cfg):
        with clock.stage("warmup_s"):
            run_warmup(cfg)
        if cfg.eval_before_after:
            from deepretrieval.deploy.run_eval import evaluate_policy

            with clock.stage("eval_warmup_s"):
                evaluate_policy(cfg, warm_policy_dir(cfg), "warmup")
    else:
        log.info("warm-up: reusing %s", warm_policy_dir(cfg))
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"name_or_path": str(warm_policy_dir(cfg))})})


def _ray_init(cfg: TrainConfig):
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local cluster on loopback (STACK.md §6)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with keep_sigsegv_handler():  # Ray's failure handler would take the eval JVM's SIGSEGVs (common/signals.py)
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


def actor_options(placement: RolePlacement) -> dict:
    """`ray.remote` options of one worker: its role's resources, and no Ray-side restarts (the Supervisor restarts)."""
    options: dict = {"num_cpus": placement.num_cpus, "num_gpus": placement.num_gpus, "max_restarts": 0}
    if placement.resources:
        options["resources"] = dict(placement.resources)
    return options


@dataclass
class _Role:
    """One supervised worker: restarted (up to `restarts` times) when its process dies."""

    name: str
    cls: type
    index: int
    placement: RolePlacement = field(default_factory=RolePlacement)
    handle: object = None
    ref: object = None
    restarts: int = 0


class Supervisor:
    """Starts the workers as Ray actors and restarts any whose process died (kill -9, OOM).

    A restarted learner resumes from its newest checkpoint and gets back its uncommitted stream
    entries; a restarted rewarder's pending entries are reclaimed after the idle timeout; a
    restarted actor starts a new engine at the announced version.
    """

    def __init__(self, ray, cfg_json: str, roles: list[_Role], max_restarts: int = 3):
        self._ray = ray
        self._cfg_json = cfg_json
        self.roles = roles
        self._max_restarts = max_restarts
        for role in roles:
            self._start(role)

    def _start(self, role: _Role) -> None:
        role.handle = self._ray.remote(**actor_options(role.placement))(role.cls).remote(self._cfg_json, str(role.index))
        role.ref = role.handle.run.remote()

    def role_of(self, ref) -> _Role:
        return next(r for r in self.roles if r.ref == ref)

    def check(self, ref) -> _Role:
        """Raise the worker's own error, or restart it when its process died; returns the role."""
        from ray.exceptions import RayActorError

        role = self.role_of(ref)
        try:
            self._ray.get(ref)
        except RayActorError as e:
            if role.restarts >= self._max_restarts:
                raise
            role.restarts += 1
            log.warning("%s %d died (%s); restart %d of %d", role.name, role.index, type(e).__name__, role.restarts, self._max_restarts)
            self._start(role)
        return role

    def _live_calls(self, roles: list[_Role], method: str) -> dict[str, object]:
        """role-index -> what `method` returned, for each of `roles` whose process is alive.

        A worker killed since the last `check` is skipped (its restart comes when `check` sees
        its run end), so one dead process never fails the caller.
        """
        from ray.exceptions import RayActorError

        out: dict[str, object] = {}
        for r in roles:
            try:
                out[f"{r.name}-{r.index}"] = self._ray.get(getattr(r.handle, method).remote())
            except RayActorError:
                continue
        return out

    def pids(self) -> dict[str, int]:
        """role-index -> OS pid of each live worker (the chaos benchmark kills them)."""
        return self._live_calls(self.roles, "pid")  # type: ignore[return-value]

    def stats(self, name: str) -> list[dict]:
        """The `stats()` of each live worker of role `name` (e.g. 'rewarder')."""
        return list(self._live_calls([r for r in self.roles if r.name == name], "stats").values())  # type: ignore[arg-type]


def _run_rl(cfg: TrainConfig, deadline: RLDeadline | None, rl_mark: float, on_tick) -> tuple[dict, bool, bool]:
    """Ray, the learner, the rewarder fleet and the actor pool until the learner ends, Ctrl-C, or
    the time budget's RL share (counted from `rl_mark`) is spent.

    Returns what every worker reported, whether Ctrl-C stopped it, and whether the budget did. A
    budget that left RL nothing starts no worker (`RLDeadline.plan` warned).
    """
    if deadline is not None and deadline.spent(0.0):
        return {"learner": {"steps": 0, "policy_version": 0}, "actors": [], "rewarders": [], "restarts": {}}, False, True
    interrupted = stopped_by_budget = False
    ray = _ray_init(cfg)
    place = cfg.ray.placement
    roles = ([_Role("learner", LearnerWorker, 0, place.learner)]
             + [_Role("rewarder", RewarderWorker, i, place.rewarder) for i in range(cfg.rewarders.processes)]
             + [_Role("actor", ActorWorker, i, place.actor) for i in range(cfg.actors.processes)])
    sup = Supervisor(ray, cfg.model_dump_json(), roles)
    progress = _Progress(cfg)
    evals = PeriodicEval(cfg)
    try:
        while True:
            done, _ = ray.wait([r.ref for r in sup.roles], timeout=1.0, num_returns=1)
            api_calls = sum(s.get("api_calls", 0) for s in sup.stats("rewarder"))
            progress.update(api_calls)
            evals.poll()
            if on_tick is not None:
                on_tick(sup)
            if done:
                role = sup.check(done[0])
                if role.name == "learner" and role.ref == done[0]:
                    break
            if deadline is not None and deadline.spent(time.perf_counter() - rl_mark):
                stopped_by_budget = True
                log.warning("time budget: RL has used its %.0f s; stopping the workers (%.0f s kept for the final "
                            "evaluation and the margin)", deadline.rl_s, deadline.reserved_s)
                break
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping workers; the learner commits a checkpoint")
    finally:
        progress.close()
        for r in sup.roles:
            r.handle.stop.remote()
        evals.close(wait=not (interrupted or stopped_by_budget))
    outs = {id(r): ray.get(r.ref, timeout=300) for r in sup.roles}
    with keep_sigsegv_handler():  # ray.shutdown() resets SIGSEGV to the default action
        ray.shutdown()
    by = lambda name: [outs[id(r)] for r in sup.roles if r.name == name]  # noqa: E731
    reports = {"learner": by("learner")[0], "actors": by("actor"), "rewarders": by("rewarder"),
               "restarts": {f"{r.name}-{r.index}": r.restarts for r in sup.roles}}
    return reports, interrupted, stopped_by_budget


def launch(cfg: TrainConfig, on_tick=None, on_end=None) -> RunResult:
    """Run training end to end and return what every worker reported.

    Args:
        cfg: the run config.
        on_tick: called with the Supervisor about once a second (the chaos benchmark's hook).
        on_end: called with the Redis URL after the workers stopped, before a private Redis stops.
    """
    t0 = time.monotonic()
    clock = Stopwatch()
    services = ExitStack()
    with clock.stage("setup_s"):
        cfg = services.enter_context(run_services(cfg))
    if cfg.trace_file is None:
        cfg = cfg.model_copy(update={"trace_file": cfg.run_dir / "traces.jsonl"})
    try:
        with clock.stage("setup_s"):
            prepare_run(cfg)
        if cfg.eval_before_after and (cfg.run_dir / "eval-before.json").is_file():
            log.info("eval before: reusing %s (a resumed run)", cfg.run_dir / "eval-before.json")
        elif cfg.eval_before_after:
            from deepretrieval.common.model_fetch import resolve_model
            from deepretrieval.deploy.run_eval import evaluate_policy

            with clock.stage("eval_before_s"):
                evaluate_policy(cfg, Path(resolve_model(cfg.model.name_or_path, cfg.paths.models_dir)), "before")
        if cfg.warmup.enabled:
            cfg = warm_start(cfg, clock)
        rl_mark = time.perf_counter()
        deadline = (None if cfg.time_budget is None
                    else RLDeadline.plan(cfg.time_budget, clock.seconds, final_eval=cfg.eval_before_after))
        reports, interrupted, stopped_by_budget = _run_rl(cfg, deadline, rl_mark, on_tick)
        clock.add("rl_s", time.perf_counter() - rl_mark)
        if on_end is not None:
            on_end(cfg.transport.url)
        from deepretrieval.learner.weight_sync import version_dir_name

        final = cfg.run_dir / "weights" / version_dir_name(int(reports["learner"].get("policy_version", 0)))
        if cfg.eval_before_after and final.is_dir():
            from deepretrieval.deploy.run_eval import evaluate_policy

            with clock.stage("eval_after_s"):
                evaluate_policy(cfg, final, "after")  # API tasks need the run's Redis and emulator: still up here
    finally:
        services.close()
    result = RunResult(cfg.run_dir, time.monotonic() - t0, interrupted=interrupted, stopped_by_budget=stopped_by_budget,
                       deadline=deadline, stages_s=clock.seconds, **reports)
    _finish(cfg, result)
    return result


def _finish(cfg: TrainConfig, result: RunResult) -> None:
    """Plots and a summary next to the metrics; fills `result.learning`."""
    summary = {"run": cfg.run, "mode": cfg.mode, "seconds": result.seconds, "stages_s": result.stages_s,
               "budgeted_s": result.budgeted_s, "interrupted": result.interrupted, "stopped_by_budget": result.stopped_by_budget,
               "time_budget": None if result.deadline is None else {"minutes": cfg.time_budget.minutes, **asdict(result.deadline)},
               "restarts": result.restarts,
               "learner": result.learner, "actors": result.actors, "rewarders": result.rewarders}
    if cfg.eval_before_after:
        from deepretrieval.deploy.run_eval import learning_table

        result.learning = learning_table(cfg.run_dir)
        summary["learning"] = result.learning
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if not (cfg.run_dir / "metrics.jsonl").is_file():
        return  # no step ever trained (a budget spent before RL, Ctrl-C before the first step): nothing to plot
    try:
        from deepretrieval.learner.plots import plot_metrics

        plot_metrics(cfg.run_dir)
    except (ImportError, OSError, ValueError) as e:
        log.warning("plots not drawn: %s", e)
