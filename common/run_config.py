"""Config of the scoring side of a run: tasks with their backends, retries, rewarder processes.

Lives in `common` so the run's root config (train, bench, serve) can compose it; the code it
configures is in `rewarders/`. A config module: no torch or vLLM.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from deepretrieval.common.backend_config import BackendSpec
from deepretrieval.common.config import StrictModel


class RetryConfig(StrictModel):
    """How a failed search is retried before the reward is declared `unavailable`."""

    max_attempts: int = Field(6, ge=1, le=100, description="Attempts per search, the first included.")
    backoff_base_s: float = Field(0.25, gt=0, description="Backoff before the 2nd attempt, in s; doubles each retry (full jitter).")
    backoff_max_s: float = Field(8.0, gt=0, description="Cap of one backoff, in s.")
    budget_s: float = Field(60.0, gt=0, description="Give up when the next wait would pass this much time since the first attempt, in s.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one attempt, in s (a hanging API counts as a failed attempt).")
    retry_after_default_s: float = Field(1.0, ge=0, description="Pause after a 429 without a Retry-After header, in s.")


class RewarderConfig(StrictModel):
    """One rewarder process."""

    concurrency: int = Field(64, ge=1, le=4096, description="Samples scored at once by this process (searches in flight).")
    read_count: int = Field(32, ge=1, le=1024, description="Most rollouts read from the stream per call.")
    block_ms: int = Field(200, ge=0, description="How long an empty read waits for new rollouts, in ms.")
    retrieved_ids_kept: int = Field(10, ge=0, le=1000, description="Top ids copied into each Scored record (provenance).")


class TaskRunConfig(StrictModel):
    """One task of a run and the backend that scores it."""

    task: str = Field(description="Task registry name: pubmed, ctgov, sparse, dense, qa or sql.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Overrides of the task spec (e.g. {'reward': {'format': {'ok': 0.2}}}).")
    backend: BackendSpec = Field(description="The backend answering the task's queries.")
    k: int | None = Field(None, ge=1, description="Results fetched per training query; None = the task's k_train.")
