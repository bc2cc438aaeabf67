from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepretrieval.common.engine_config import HFEngineConfig, VLLMEngineConfig
from deepretrieval.common.sampling import SamplingConfig


def test_defaults_stop_at_answer_close():
    cfg = SamplingConfig()
    assert cfg.stop == ["</answer>"] and cfg.top_p == 1.0 and cfg.seed is None


@pytest.mark.parametrize("bad", [{"n": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"stop": [""]}, {"n": 2, "temperature": 0.0}, {"max_tokens": 5}])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        SamplingConfig(**bad)


def test_engine_configs_are_keyed_on_type():
    from pydantic import TypeAdapter

    from deepretrieval.common.engine_config import EngineConfig

    adapter = TypeAdapter(EngineConfig)
    assert isinstance(adapter.validate_python({"type": "vllm", "max_model_len": 1024}), VLLMEngineConfig)
    assert isinstance(adapter.validate_python({"type": "hf"}), HFEngineConfig)
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "hf", "max_model_len": 1024})
