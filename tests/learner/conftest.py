"""Fixtures of the learner tests: a tiny real LlamaForCausalLM, scored rollouts, train samples."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deepretrieval.common.wire import Rollout, SamplingParams, Scored

# Tokenizer-like files of the tiny model's folder: exports must copy them byte for byte.
TOKENIZER_FILES = {"tokenizer.json": '{"version": "tiny"}', "tokenizer_config.json": '{"pad_token": "<pad>"}',
                   "chat_template.jinja": "{{ messages }}"}


def tiny_llama_config():
    """2 layers, hidden 64, vocab 128, tied embeddings: SmolLM2's architecture at toy size."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random tiny Llama saved as a Hugging Face folder (float32 safetensors)."""
    import torch
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(1234)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(path)
    for name, text in TOKENIZER_FILES.items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def tokenizer_files() -> dict[str, str]:
    """The tokenizer-like files written into `tiny_model_dir`: name -> text."""
    return dict(TOKENIZER_FILES)


@pytest.fixture
def tiny_model(tiny_model_dir: Path):
    """A fresh float32 copy of the tiny Llama."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture
def make_scored() -> Callable[..., Scored]:
    """Factory of a Scored rollout with token ids drawn from a seeded RNG."""

    def make(group_id: str, index: int, reward: float | None, *, status: str = "ok", prompt_len: int = 3,
             response_len: int = 2, constrained: bool = False, top_p: float = 1.0, version: int = 0,
             temperature: float = 1.0, backend: str = "test") -> Scored:
        rng = np.random.default_rng(zlib.crc32(f"{group_id}/{index}".encode()))
        rollout = Rollout(
            uid=f"{group_id}-{index}", group_id=group_id, prompt_uid=f"p-{group_id}", policy_version=version,
            prompt_token_ids=rng.integers(3, 128, prompt_len).astype(np.int32),
            response_token_ids=rng.integers(3, 128, response_len).astype(np.int32),
            logprobs=np.full(response_len, -4.0, np.float32),
            sampling=SamplingParams(temperature, top_p, 16, constrained), finish_reason="stop", completion="x",
            engine="test", created_at=0.0)
        return Scored(rollout=rollout, reward=reward, components={}, status=status, query="q", retrieved_ids=[],
                      backend=backend, index_version="v0", latency_s=0.0, retries=0, cache_hit=False)

    return make


@pytest.fixture
def train_batch(make_scored: Callable[..., Scored]):
    """8 samples in 2 groups of 4 (rewards 1,0,0,1 and 0.5,0,1,0), varied prompt/response lengths."""
    from deepretrieval.common.learner_config import LossConfig
    from deepretrieval.learner.sequences import build_samples

    rewards = {"g0": [1.0, 0.0, 0.0, 1.0], "g1": [0.5, 0.0, 1.0, 0.0]}
    scored = [make_scored(g, i, r, prompt_len=2 + (i % 3), response_len=1 + (3 * i + len(g)) % 5)
              for g, rs in rewards.items() for i, r in enumerate(rs)]
    samples, _ = build_samples(scored, LossConfig(), dynamic_sampling=True)
    return samples
