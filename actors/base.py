"""The generation-engine seam: what an actor asks of vLLM or transformers, and what it gets back.

Engines satisfy `GenerationEngine` structurally (no subclassing). Their output is engine-level;
the actor loop turns it into wire `Rollout`s.

Behaviour log-probs (`Sample.logprobs`) follow one convention in every engine: the log-prob of
the sampled token under the distribution it was drawn from, i.e. `log_softmax` of the logits
divided by the temperature and restricted to the top-p nucleus (vLLM's "processed_logprobs";
actors/logprobs.py has the reference implementation). With temperature 0 (greedy) the logits are
not divided, so the value is the untempered model log-prob of the argmax token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from deepretrieval.common.sampling import SamplingConfig

FinishReason = Literal["stop", "length"]
"""Why a sample ended: 'stop' = a stop string or an end-of-sequence token; 'length' = max_new_tokens."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample a group from.

    Args:
        prompt_token_ids: the chat-templated prompt (common/chat.py), shape [prompt_len].
        constraint: a regex the completion must match (grammar-constrained decoding), or None.
    """

    prompt_token_ids: list[int]
    constraint: str | None = None


@dataclass(frozen=True)
class Sample:
    """One sampled completion.

    Args:
        token_ids: generated token ids, shape [n_tokens]; includes the token that completed a stop
            string and a final end-of-sequence token, when there is one.
        logprobs: behaviour log-prob of each generated token (module docstring), shape [n_tokens],
            each <= 0.
        text: the decoded completion without special tokens; when a stop string ended it, cut right
            after that string (so it ends with it, even if the last token decodes to more).
        finish_reason: 'stop' or 'length'.
        stop_string: the stop string that ended the sample, or None (end-of-sequence token, length).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    stop_string: str | None = field(default=None)

    @property
    def hit_stop_string(self) -> bool:
        """Whether a stop string (e.g. `</answer>`) ended the sample."""
        return self.stop_string is not None


@runtime_checkable
class GenerationEngine(Protocol):
    """Samples GRPO groups from a policy whose weights can be replaced in place."""

    @property
    def name(self) -> str:
        """A short label for metrics and rollouts (e.g. 'vllm', 'hf')."""
        ...

    @property
    def policy_version(self) -> int:
        """The version of the weights now loaded (0 = the initial checkpoint)."""
        ...

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[list[Sample]]:
        """Sample `params.n` completions for each request.

        Args:
            requests: the prompts, length B.
            params: sampling parameters shared by all requests.

        Returns:
            B groups in request order, each a list of `params.n` samples.
        """
        ...

    def load_weights(self, weights_dir: Path, version: int) -> float:
        """Replace the weights in place from a Hugging Face safetensors folder.

        Args:
            weights_dir: folder with `*.safetensors` of the same architecture.
            version: the policy version these weights are; becomes `policy_version`.

        Returns:
            Seconds the reload took.
        """
        ...

    def close(self) -> None:
        """Stop the engine and free its memory; the engine is unusable afterwards."""
        ...
