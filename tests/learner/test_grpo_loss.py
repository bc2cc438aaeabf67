"""GRPO/DAPO loss on tiny hand-computed cases; every expected value is derived in a comment.

Defaults throughout: eps_low 0.2 (low edge 0.8), eps_high 0.28 (high edge 1.28), tis_cap C = 2.
Ratios are built as r = π/μ with μ = 0.5, so log π = log(0.5·r).
"""

from __future__ import annotations

import math

import pytest
import torch

from deepretrieval.common.learner_config import LossConfig
from deepretrieval.learner.grpo_loss import (entropy_from_logits, group_advantages, k3_kl, loss_denominator, loss_mask,
                                             policy_loss)

MU = math.log(0.5)


def _one_token(ratio: float, advantage: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A [1, 1] batch: log π (leaf with grad) giving `ratio` against μ = 0.5."""
    logp = torch.tensor([[math.log(0.5 * ratio)]], dtype=torch.float64, requires_grad=True)
    return logp, torch.tensor([[MU]], dtype=torch.float64), torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool)


# ------------------------------------------------------------------ advantages

def test_group_advantages_scaled_by_unbiased_std():
    # rewards 1,0,0,1: mean 0.5, centred ±0.5; unbiased var = 4·0.25/3 = 1/3, std = 0.57735;
    # advantages ±0.5/0.57735 = ±0.866025 (eps 0 here).
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), scale_by_std=True, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([0.866025, -0.866025, -0.866025, 0.866025]), atol=1e-6, rtol=0)


def test_group_advantages_centred_only_and_degenerate_groups():
    # Dr. GRPO: only centring, ±0.5.
    torch.testing.assert_close(group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), scale_by_std=False, eps=1e-6),
                               torch.tensor([0.5, -0.5, -0.5, 0.5]))
    # equal rewards: centred 0, divided by (0 + eps): 0, not NaN.
    assert group_advantages(torch.tensor([2.0, 2.0, 2.0]), scale_by_std=True, eps=1e-6).tolist() == [0.0, 0.0, 0.0]
    # one sample: no baseline to compare with (its unbiased std is NaN): 0.
    assert group_advantages(torch.tensor([3.0]), scale_by_std=True, eps=1e-6).tolist() == [0.0]


# ------------------------------------------------------------------ clipped, truncated surrogate

# (ratio r, advantage A, loss, d loss / d log π, clipped low, clipped high, truncated)
# unclipped: loss = −min(r, C)·A and gradient −min(r, C)·A; clipped: loss = −clip(r)·A, gradient 0.
CLIP_CASES = [
    (1.20, +1.0, -1.20, -1.20, 0, 0, 0),  # A>0 inside the range (1.2 < 1.28)
    (1.40, +1.0, -1.28, 0.0, 0, 1, 0),    # A>0 past the high edge: −1.28·1, no gradient
    (0.50, +1.0, -0.50, -0.50, 0, 0, 0),  # A>0 below the low edge is not clipped (PPO's min keeps r·A)
    (3.00, +1.0, -1.28, 0.0, 0, 1, 1),    # A>0, r > C: clipped anyway; r > C still counts as truncated
    (0.90, -1.0, +0.90, +0.90, 0, 0, 0),  # A<0 inside the range: −(0.9·−1) = 0.9, gradient −0.9·−1 = 0.9
    (0.70, -1.0, +0.80, 0.0, 1, 0, 0),    # A<0 past the low edge (0.7 < 0.8): −(0.8·−1) = 0.8, no gradient
    (1.50, -1.0, +1.50, +1.50, 0, 0, 0),  # A<0 above the high edge: PPO's open branch, weight r = 1.5
    (3.00, -1.0, +2.00, +2.00, 0, 0, 1),  # A<0, r = 3 > C = 2: weight truncated to 2: loss 2, gradient 2
]


@pytest.mark.parametrize("ratio,adv,loss_expected,grad_expected,low,high,trunc", CLIP_CASES)
def test_clipped_objective_each_side_of_each_edge(ratio, adv, loss_expected, grad_expected, low, high, trunc):
    logp, mu, a, mask = _one_token(ratio, adv)
    loss, metrics = policy_loss(logp, mu, a, mask, LossConfig())
    loss.backward()
    assert loss.item() == pytest.approx(loss_expected, abs=1e-9)
    assert float(logp.grad[0, 0]) == pytest.approx(grad_expected, abs=1e-9)
    assert (metrics["clip/low_frac"], metrics["clip/high_frac"], metrics["tis/truncated_frac"]) == (low, high, trunc)
    assert metrics["ratio/mean"] == pytest.approx(ratio, rel=1e-9)
    assert metrics["tokens"] == 1


def test_truncation_changes_the_weight_exactly_when_ratio_exceeds_cap():
    # A = −1, so the gradient is the weight itself: min(r, 2) under cap 2, r under cap 10.
    ratios = [1.9, 1.99, 2.0, 2.01, 2.5]
    grads = {}
    for cap in (2.0, 10.0):
        logp = torch.tensor([[math.log(0.5 * r) for r in ratios]], dtype=torch.float64, requires_grad=True)
        mu = torch.full((1, len(ratios)), MU, dtype=torch.float64)
        # token-mean over 5 tokens: multiply by 5 to read the per-token weight
        loss, metrics = policy_loss(logp, mu, torch.tensor([-1.0], dtype=torch.float64), torch.ones(1, 5, dtype=torch.bool),
                                    LossConfig(tis_cap=cap))
        loss.backward()
        grads[cap] = (logp.grad[0] * 5).tolist()
        if cap == 2.0:
            assert metrics["tis/truncated_frac"] == pytest.approx(2 / 5)  # 2.01 and 2.5
    assert grads[2.0] == pytest.approx([1.9, 1.99, 2.0, 2.0, 2.0], abs=1e-9)
    assert grads[10.0] == pytest.approx([1.9, 1.99, 2.0, 2.01, 2.5], abs=1e-9)


def test_gradient_of_token_mean_and_sequence_means_by_hand():
    # seq 0: A = +0.5, ratios 1.0, 1.1, pad; seq 1: A = −2, ratio 0.9, pad, pad. All unclipped.
    # token losses: −1.0·0.5 = −0.5, −1.1·0.5 = −0.55, −0.9·−2 = 1.8; per-token gradient = the same value.
    ratios = [[1.0, 1.1, 1.0], [0.9, 1.0, 1.0]]
    mask = torch.tensor([[True, True, False], [True, False, False]])
    cases = {
        # token-mean: 3 tokens. loss (−0.5 − 0.55 + 1.8)/3 = 0.25; gradients token/3.
        "token-mean": (0.25, [[-0.5 / 3, -0.55 / 3, 0.0], [0.6, 0.0, 0.0]]),
        # per-sequence means −0.525 and 1.8, averaged: 0.6375; gradients token/(len·2).
        "seq-mean-token-mean": (0.6375, [[-0.125, -0.1375, 0.0], [0.9, 0.0, 0.0]]),
        # per-sequence sums −1.05 and 1.8, averaged: 0.375; gradients token/2.
        "seq-mean-token-sum": (0.375, [[-0.25, -0.275, 0.0], [0.9, 0.0, 0.0]]),
    }
    for agg, (loss_expected, grad_expected) in cases.items():
        logp = torch.tensor([[math.log(0.5 * r) for r in row] for row in ratios], dtype=torch.float64, requires_grad=True)
        mu = torch.full((2, 3), MU, dtype=torch.float64)
        mu[0, 2] = mu[1, 1] = mu[1, 2] = float("-inf")  # whatever sits at padded positions must not leak
        loss, _ = policy_loss(logp, mu, torch.tensor([0.5, -2.0], dtype=torch.float64), mask, LossConfig(loss_agg=agg))
        loss.backward()
        assert loss.item() == pytest.approx(loss_expected, abs=1e-9), agg
        torch.testing.assert_close(logp.grad, torch.tensor(grad_expected, dtype=torch.float64), atol=1e-9, rtol=0)


def test_global_denominator_makes_split_batches_sum_to_the_whole():
    # Halves of the batch above, each divided by the whole batch's 3 tokens, add up to its 0.25.
    mask = torch.ones(1, 2, dtype=torch.bool)
    first, _ = policy_loss(torch.tensor([[math.log(0.5), math.log(0.55)]]), torch.full((1, 2), MU), torch.tensor([0.5]),
                           mask, LossConfig(), denominator=3.0)
    second, _ = policy_loss(torch.tensor([[math.log(0.45)]]), torch.full((1, 1), MU), torch.tensor([-2.0]),
                            torch.ones(1, 1, dtype=torch.bool), LossConfig(), denominator=3.0)
    assert (first + second).item() == pytest.approx(0.25, abs=1e-6)


# ------------------------------------------------------------------ KL, entropy, logged KL

def test_k3_kl_value_and_gradient():
    # π = 0.5, π_ref = 0.25: δ = log 0.25 − log 0.5 = −0.693147; k3 = e^δ − δ − 1 = 0.5 + 0.693147 − 1 = 0.193147.
    # d k3 / d log π = −e^δ + 1 = 0.5; with kl_coef 0.1 and A = 0 (no policy term): loss 0.0193147, gradient 0.05.
    logp = torch.tensor([[math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]], dtype=torch.float64)
    assert k3_kl(logp, ref).item() == pytest.approx(0.193147, abs=1e-6)
    loss, metrics = policy_loss(logp, logp.detach().clone(), torch.tensor([0.0], dtype=torch.float64),
                                torch.ones(1, 1, dtype=torch.bool), LossConfig(kl_coef=0.1), ref_logprobs=ref)
    loss.backward()
    assert loss.item() == pytest.approx(0.0193147, abs=1e-7)
    assert float(logp.grad) == pytest.approx(0.05, abs=1e-9)
    assert metrics["kl/ref_k3"] == pytest.approx(0.193147, abs=1e-6)


def test_kl_coef_without_reference_is_an_error():
    logp, mu, a, mask = _one_token(1.0, 1.0)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, mu, a, mask, LossConfig(kl_coef=0.1))


def test_behaviour_kl_metric_is_k3_of_kl_mu_pi():
    # r = 1.5: r − 1 − log r = 0.5 − 0.405465 = 0.094535.
    logp, mu, a, mask = _one_token(1.5, 1.0)
    _, metrics = policy_loss(logp, mu, a, mask, LossConfig())
    assert metrics["kl/behaviour_k3"] == pytest.approx(0.094535, abs=1e-6)


def test_entropy_from_logits_and_entropy_bonus():
    # logits (0, 0): H = ln 2 = 0.693147. logits (0, ln 3): p = (1/4, 3/4),
    # H = −(0.25 ln 0.25 + 0.75 ln 0.75) = 0.346574 + 0.215762 = 0.562335.
    h = entropy_from_logits(torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], dtype=torch.float64))
    torch.testing.assert_close(h, torch.tensor([0.693147, 0.562335], dtype=torch.float64), atol=1e-6, rtol=0)
    # The bonus subtracts entropy_coef·H: with A = 0, loss = −0.1·0.693147 = −0.0693147.
    logp, mu, _, mask = _one_token(1.0, 0.0)
    entropy = torch.tensor([[math.log(2.0)]], dtype=torch.float64)
    loss, metrics = policy_loss(logp, mu, torch.tensor([0.0], dtype=torch.float64), mask, LossConfig(entropy_coef=0.1), entropy=entropy)
    assert loss.item() == pytest.approx(-0.0693147, abs=1e-7)
    assert metrics["entropy"] == pytest.approx(0.693147, abs=1e-6)


# ------------------------------------------------------------------ constrained samples, empty masks

@pytest.mark.parametrize("policy,loss_expected,grads_expected,tokens", [
    # exclude: only seq 1 (A = −1, r = 1) is in the loss: loss −(1·−1) = 1, gradient +1; seq 0 gets 0.
    ("exclude", 1.0, [0.0, 1.0], 1),
    # importance: both, token-mean over 2: (−1 + 1)/2 = 0; gradients −1/2 and +1/2.
    ("importance", 0.0, [-0.5, 0.5], 2),
])
def test_constrained_samples_excluded_or_kept(policy, loss_expected, grads_expected, tokens):
    logp = torch.full((2, 1), MU, dtype=torch.float64, requires_grad=True)
    mu = torch.full((2, 1), MU, dtype=torch.float64)
    cfg = LossConfig(constrained_policy=policy)
    constrained = torch.tensor([True, False])
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss, metrics = policy_loss(logp, mu, torch.tensor([1.0, -1.0], dtype=torch.float64), mask, cfg, constrained=constrained)
    loss.backward()
    assert loss.item() == pytest.approx(loss_expected, abs=1e-12)
    assert logp.grad[:, 0].tolist() == pytest.approx(grads_expected, abs=1e-12)
    assert metrics["tokens"] == tokens
    assert float(loss_denominator(loss_mask(mask, cfg, constrained), "token-mean")) == tokens


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_empty_mask_gives_zero_loss_without_nan(agg):
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mu = torch.tensor([[float("-inf"), float("nan")]])
    loss, metrics = policy_loss(logp, mu, torch.tensor([1.0]), torch.zeros(1, 2, dtype=torch.bool), LossConfig(loss_agg=agg),
                                entropy=torch.tensor([[float("nan"), 1.0]]))
    loss.backward()
    assert loss.item() == 0.0
    assert logp.grad.tolist() == [[0.0, 0.0]]
    assert metrics["tokens"] == 0 and all(math.isfinite(v) for v in metrics.values())
