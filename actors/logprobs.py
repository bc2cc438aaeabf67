"""The behaviour log-prob convention shared by the engines and the learner-side recomputation.

vLLM (with `logprobs_mode="processed_logprobs"`) reports, for a sampled token, the log-prob under
the distribution it actually sampled from: logits / temperature, then the top-p nucleus kept and
renormalised. `processed_logprobs` computes exactly that, so the transformers engine and the
log-prob gap measurement agree with vLLM by construction, not by accident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the top-p nucleus to -inf (vLLM's rule: the most likely token always stays).

    Args:
        logits: [..., V] (already divided by the temperature).
        top_p: nucleus mass in (0, 1]; 1.0 returns `logits` unchanged.

    Returns:
        [..., V] masked logits (a new tensor).
    """
    import torch

    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    # Ascending cumulative mass: a token is dropped when everything up to it is <= 1 - p.
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1.0 - top_p
    drop[..., -1] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def processed_logprobs(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs of the distribution a token is sampled from.

    Args:
        logits: [..., V] raw model logits (any float dtype; computed in float32).
        temperature: > 0 divides the logits; 0 (greedy) leaves them as they are.
        top_p: nucleus mass in (0, 1]; tokens outside it get -inf.

    Returns:
        [..., V] float32 log-probs.
    """
    scaled = logits.float()
    if temperature > 0:
        scaled = scaled / temperature
        scaled = top_p_mask(scaled, top_p)
    return scaled.log_softmax(dim=-1)
