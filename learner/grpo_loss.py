"""GRPO/DAPO policy loss: PPO clipping against the behaviour policy, with truncated importance weights.

Notation, per response token t of a sequence with advantage A (one per sequence, from its group):
π = πθ(y_t | ·) under the current parameters (the learner's forward pass, with gradient);
μ = the probability the actor sampled y_t with (`Rollout.logprobs`, log_softmax(logits / T));
r = π / μ; C = `tis_cap`; [1 − εl, 1 + εh] the clip range (DAPO clip-higher: εh > εl).

Why a single ratio. The learner takes one optimizer step per batch and does not recompute an "old
policy" before stepping, so the only off-policyness is between μ and π: staleness (μ is up to
`max_staleness` versions behind) plus the actor/learner numeric mismatch (vLLM kernels vs ours).
r covers both. The alternatives need a second policy: verl's TIS (Yao et al. 2025) clips π/π_old
and weights by min(π_old/μ, C) with π_old recomputed by the learner; decoupled PPO (AReaL) clips
π/π_prox and weights by min(π_prox/μ, C) with π_prox the parameters at the start of the step. With
one step per batch π_prox *is* π at the forward pass, so that clip ratio is identically 1, the clip
never acts, and the objective collapses to min(r, C)·A·∇log π: a capped weight and no trust region.
We keep the trust region around the policy that generated the data, and cap the weight:

    clipped_t   = (A > 0 and r > 1 + εh) or (A < 0 and r < 1 − εl)
    surrogate_t = clip(r, 1 − εl, 1 + εh)·A         if clipped_t     (a constant: no gradient)
                = w·A, w = min(r, C) in value        otherwise
    loss_t      = −surrogate_t + kl_coef·k3_t − entropy_coef·H_t

`w` is r·sg(min(r, C)/r) (computed as exp(log r − sg(max(log r − log C, 0)))), so its gradient is
min(r, C)·∇log π. An unclipped token's gradient is therefore −min(r, C)·A·∇log π: the importance-
weighted policy gradient E_μ[r·A·∇log π] = E_π[A·∇log π] with the weight truncated at C. That is
PPO-clip with r replaced by min(r, C). Where the cap acts: for A > 0, r > 1 + εh is already
clipped, so (with C ≥ 1 + εh) only A < 0 tokens with r > C are truncated. PPO leaves that branch
unbounded, and it is where stale or mismatched samples blow up: a token the actor drew with a tiny
μ that the learner now finds likely. Dual-clip PPO (Ye et al. 2020) zeroes such a token; we keep a
bounded, biased weight C as truncated importance sampling does (Ionides 2008). The loss value is
PPO's −min(r·A, clip(r)·A), except that it is truncated at −C·A. On-policy (staleness 0, no
mismatch) r = 1 at the forward pass: nothing is clipped or truncated, and the gradient is plain
GRPO's −A·∇log π.

Constrained samples. Under grammar-constrained decoding (`sampling.constrained`), and likewise with
top_p < 1, the actor's μ is the probability under a *masked and renormalised* distribution, while π
is the unmasked policy. So r = π/μ is not an importance ratio of one policy to another: it is
biased low by the mass the mask removed, differently at every token, so neither the clip nor the
cap means what it should. 'exclude' (default) leaves such samples out of the policy loss. They still
serve the SFT warm-up, where they are plain targets. 'importance' trains on them as they are, with
only the cap C bounding their weight. That fits a mask that removes little mass.

Shapes: B sequences, T response positions (right-padded); `mask` marks real response tokens.
"""

from __future__ import annotations

import math

import torch

from deepretrieval.common.learner_config import LossAggregation, LossConfig

# Log-ratios are clamped here before exp() for *logging* only (the loss never exponentiates more
# than log C): e^20 ≈ 5e8 keeps a diverged token from turning the mean ratio into inf.
_LOG_RATIO_LOG_CLAMP = 20.0


def group_advantages(rewards: torch.Tensor, *, scale_by_std: bool, eps: float) -> torch.Tensor:
    """GRPO advantages of one group: rewards centred on the group mean, optionally scaled by its std.

    The std is the unbiased (Bessel-corrected) one, as in verl and TRL. A group of one sample, or of
    equal rewards, gets advantage 0.

    Args:
        rewards: [G] rewards of the G samples of one prompt.
        scale_by_std: divide by (std + eps) (GRPO); False only centres (Dr. GRPO).
        eps: added to the std.

    Returns:
        [G] float32 advantages.
    """
    rewards = rewards.float()
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [G], got shape {tuple(rewards.shape)}")
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    centred = rewards - rewards.mean()
    if not scale_by_std:
        return centred
    return centred / (rewards.std(unbiased=True) + eps)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, without materialising log_softmax.

    H = logsumexp(z) − Σ softmax(z)·z.

    Args:
        logits: [..., V] (already divided by the temperature); computed in float32 at least.

    Returns:
        [...] entropies in nats.
    """
    z = logits if logits.dtype == torch.float64 else logits.float()
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def loss_mask(mask: torch.Tensor, cfg: LossConfig, constrained: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens the policy loss is taken over: `mask`, less constrained sequences when excluded.

    Args:
        mask: [B, T] bool (or 0/1), real response tokens.
        cfg: the loss config (its `constrained_policy`).
        constrained: [B] bool, sequences whose μ is under a restricted distribution; None = none.

    Returns:
        [B, T] bool.
    """
    out = mask.bool()
    if constrained is not None and cfg.constrained_policy == "exclude":
        out = out & ~constrained.bool().to(out.device)[:, None]
    return out


def loss_denominator(mask: torch.Tensor, loss_agg: LossAggregation) -> torch.Tensor:
    """What `policy_loss` divides the summed token losses by, for a (micro-)batch.

    The trainer sums this over micro-batches and ranks and passes the total back as `denominator`,
    so a step's loss is the same however the global batch is split.

    Args:
        mask: [B, T] bool, the tokens in the loss (the output of `loss_mask`).
        loss_agg: "token-mean" counts tokens; the "seq-mean-*" modes count sequences with ≥ 1 token.

    Returns:
        [] float32 count.
    """
    if loss_agg == "token-mean":
        return mask.float().sum()
    return (mask.sum(dim=1) > 0).float().sum()


def _aggregate(token_loss: torch.Tensor, mask: torch.Tensor, loss_agg: LossAggregation, denominator: torch.Tensor | float) -> torch.Tensor:
    """Sum of the masked token losses in the `loss_agg` sense, divided by `denominator` (≥ 1)."""
    m = mask.float()
    # where(), not a product: a non-finite value at a masked position must not leak in as NaN.
    summed = torch.where(mask, token_loss, torch.zeros_like(token_loss))
    if loss_agg == "token-mean":
        total = summed.sum()
    elif loss_agg == "seq-mean-token-mean":
        total = (summed.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).sum()
    elif loss_agg == "seq-mean-token-sum":
        total = summed.sum()
    else:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; use token-mean, seq-mean-token-mean or seq-mean-token-sum")
    return total / max(float(denominator), 1.0)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): exp(ref − logp) − (ref − logp) − 1 (≥ 0, Schulman 2020).

    Args:
        logprobs: [B, T] log π of the sampled tokens.
        ref_logprobs: [B, T] log π_ref of the same tokens.

    Returns:
        [B, T].
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    kept = torch.where(mask, x, torch.zeros_like(x))
    return float(kept.sum() / mask.float().sum().clamp(min=1.0))


def policy_loss(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    *,
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    constrained: torch.Tensor | None = None,
    denominator: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped, truncated-importance-weighted policy loss (module docstring has the derivation).

    Args:
        logprobs: [B, T] log π of the response tokens, with gradient.
        behaviour_logprobs: [B, T] log μ recorded by the actor (anything at padded positions).
        advantages: [B] one advantage per sequence.
        mask: [B, T] bool, real response tokens.
        cfg: the loss config.
        ref_logprobs: [B, T] log π_ref, needed when cfg.kl_coef > 0.
        entropy: [B, T] per-token entropy of π (with gradient when cfg.entropy_coef > 0);
            logged when given.
        constrained: [B] bool, sequences sampled under a restricted distribution (see
            `cfg.constrained_policy`); None = none.
        denominator: what the summed loss is divided by (`loss_denominator` summed over the whole
            global batch); None = this call's own. Values below 1 count as 1, so an empty mask
            gives a zero loss, not NaN.

    Returns:
        (loss, metrics): loss is a scalar with gradient; metrics are token means over the loss
        mask (detached floats) plus "tokens", the count they were taken over, so parts merge as
        token-weighted means: "loss/policy", "ratio/mean", "clip/low_frac", "clip/high_frac",
        "tis/truncated_frac" (r > C), "kl/behaviour_k3" (k3 estimate of KL(μ‖π)), and when given
        "entropy" and "kl/ref_k3".

    Raises:
        ValueError: kl_coef > 0 without ref_logprobs, or shapes that disagree.
    """
    if logprobs.shape != behaviour_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, behaviour_logprobs {tuple(behaviour_logprobs.shape)} and mask {tuple(mask.shape)} must all be [B, T]")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")
    if cfg.kl_coef > 0 and ref_logprobs is None:
        raise ValueError(f"kl_coef={cfg.kl_coef} needs ref_logprobs (a frozen reference policy's log-probs)")

    in_loss = loss_mask(mask, cfg, constrained)
    # Padded positions may hold -inf or garbage; a 0 log-ratio keeps them finite (they are masked).
    log_ratio = torch.where(in_loss, logprobs - behaviour_logprobs.to(logprobs.dtype), torch.zeros_like(logprobs))
    adv = advantages.to(logprobs.dtype)[:, None].expand_as(log_ratio)
    log_lo, log_hi = math.log(1.0 - cfg.eps_low), math.log(1.0 + cfg.eps_high)
    log_cap = math.log(cfg.tis_cap)

    clipped_low = (adv < 0) & (log_ratio < log_lo)
    clipped_high = (adv > 0) & (log_ratio > log_hi)
    clipped = clipped_low | clipped_high
    # value min(r, C); gradient min(r, C)·∇log π (the excess over log C is a constant).
    weight = torch.exp(log_ratio - (log_ratio - log_cap).clamp(min=0.0).detach())
    clip_value = torch.exp(log_ratio.detach().clamp(min=log_lo, max=log_hi))
    surrogate = torch.where(clipped, clip_value * adv, weight * adv)
    pg_token = -surrogate

    token_loss = pg_token
    kl_ref = None
    if ref_logprobs is not None:
        kl_ref = k3_kl(logprobs, ref_logprobs.to(logprobs.dtype).detach())
        kl_ref = torch.where(in_loss, kl_ref, torch.zeros_like(kl_ref))
        if cfg.kl_coef > 0:
            token_loss = token_loss + cfg.kl_coef * kl_ref
    if entropy is not None and cfg.entropy_coef > 0:
        token_loss = token_loss - cfg.entropy_coef * entropy

    denom = loss_denominator(in_loss, cfg.loss_agg) if denominator is None else denominator
    loss = _aggregate(token_loss, in_loss, cfg.loss_agg, denom)

    with torch.no_grad():
        lr_log = log_ratio.detach().clamp(min=-_LOG_RATIO_LOG_CLAMP, max=_LOG_RATIO_LOG_CLAMP)
        ratio = torch.exp(lr_log)
        metrics = {
            "loss/policy": _masked_mean(pg_token.detach(), in_loss),
            "ratio/mean": _masked_mean(ratio, in_loss),
            "clip/low_frac": _masked_mean(clipped_low.float(), in_loss),
            "clip/high_frac": _masked_mean(clipped_high.float(), in_loss),
            "tis/truncated_frac": _masked_mean((log_ratio.detach() > log_cap).float(), in_loss),
            # k3 of KL(μ‖π) from samples of μ: r − 1 − log r (Schulman 2020), r = π/μ.
            "kl/behaviour_k3": _masked_mean(ratio - 1.0 - lr_log, in_loss),
            "tokens": float(in_loss.sum()),
        }
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy.detach(), in_loss)
        if kl_ref is not None:
            metrics["kl/ref_k3"] = _masked_mean(kl_ref.detach(), in_loss)
    return loss, metrics
