"""Build a generation engine from its config: an explicit registry, nothing registers itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deepretrieval.actors.base import GenerationEngine
from deepretrieval.common.engine_config import EngineConfig, HFEngineConfig, VLLMEngineConfig


def _vllm(model_dir: Path, config: EngineConfig, dtype: str) -> GenerationEngine:
    from deepretrieval.actors.vllm_engine import VLLMEngine

    assert isinstance(config, VLLMEngineConfig)
    return VLLMEngine(model_dir, config, dtype=dtype)


def _hf(model_dir: Path, config: EngineConfig, dtype: str) -> GenerationEngine:
    from deepretrieval.actors.hf_engine import HFEngine

    assert isinstance(config, HFEngineConfig)
    return HFEngine(model_dir, config, dtype=dtype)


ENGINES: dict[str, Callable[[Path, EngineConfig, str], GenerationEngine]] = {"vllm": _vllm, "hf": _hf}


def make_engine(model_dir: Path, config: EngineConfig, dtype: str = "auto") -> GenerationEngine:
    """The engine `config.type` names, loaded from `model_dir` in `dtype` ("auto" = from the hardware)."""
    return ENGINES[config.type](Path(model_dir), config, dtype)
