"""How far an engine's behaviour log-probs are from the learner's recomputation of the same tokens.

The learner scores a rollout by teacher forcing: one forward pass over prompt + response, logits
divided by the sampling temperature, `log_softmax`, the log-prob of each response token read off.
Where the engine computed something else (other kernels, batch shapes, dtype, a stale policy),
π_θ/μ drifts from 1 even on-policy; that gap is what truncated importance weights correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

from deepretrieval.actors.base import GenerationRequest, Sample
from deepretrieval.actors.logprobs import processed_logprobs
from deepretrieval.common.errors import EngineError

if TYPE_CHECKING:
    import torch


class LogprobGap(TypedDict):
    """Per-token |engine log-prob − recomputed log-prob| over every response token."""

    mean_abs: float
    max_abs: float
    tokens: int


def recompute_logprobs(model: torch.nn.Module, prompt_ids: Sequence[int], response_ids: Sequence[int],
                       temperature: float, top_p: float = 1.0) -> list[float]:
    """Teacher-forced log-probs of `response_ids` after `prompt_ids`, as a learner computes them.

    Args:
        model: a causal LM returning `.logits` [1, T, V].
        prompt_ids: [P] prompt tokens (P >= 1).
        response_ids: [R] sampled tokens.
        temperature: the sampling temperature (0 = greedy: logits are not divided).
        top_p: 1.0 for the learner's quantity; < 1 also applies the engine's nucleus, to separate
            numerics from the truncation term.

    Returns:
        [R] log-probs, float32 values as Python floats.
    """
    import torch

    if not response_ids:
        return []
    p, r = len(prompt_ids), len(response_ids)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], dtype=torch.long, device=device)  # [1, P+R]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, p - 1:p + r - 1]  # [R, V]: position t predicts token t+1
    logprobs = processed_logprobs(logits, temperature, top_p)  # [R, V]
    targets = ids[0, p:].unsqueeze(-1)  # [R, 1]
    return logprobs.gather(-1, targets).squeeze(-1).tolist()


def logprob_gap(model: torch.nn.Module, requests: Sequence[GenerationRequest], groups: Sequence[Sequence[Sample]],
                temperature: float, top_p: float = 1.0) -> LogprobGap:
    """Compare every sample's engine log-probs with `recompute_logprobs`.

    Args:
        model: the learner-side model (same weights as the engine).
        requests: B requests as given to `generate`.
        groups: B groups of samples, as returned by `generate`.
        temperature: the temperature the samples were drawn with.
        top_p: see `recompute_logprobs`.

    Returns:
        mean and max absolute difference per token, and the number of tokens compared.

    Raises:
        EngineError: groups and requests differ in number, or a sample's log-probs and tokens differ
            in length.
    """
    if len(requests) != len(groups):
        raise EngineError(f"{len(groups)} groups for {len(requests)} requests")
    total, worst, count = 0.0, 0.0, 0
    for request, group in zip(requests, groups):
        for sample in group:
            if len(sample.logprobs) != len(sample.token_ids):
                raise EngineError(f"sample has {len(sample.logprobs)} logprobs for {len(sample.token_ids)} tokens")
            ref = recompute_logprobs(model, request.prompt_token_ids, sample.token_ids, temperature, top_p)
            for a, b in zip(sample.logprobs, ref):
                d = abs(a - b)
                total += d
                worst = max(worst, d)
            count += len(ref)
    return LogprobGap(mean_abs=total / count if count else 0.0, max_abs=worst, tokens=count)
