"""Scored GRPO groups → training samples → padded micro-batches → the learner's token log-probs.

Layout of a packed micro-batch (B sequences, P = longest prompt, T = longest response, L = P + T):
prompts are left-padded and responses right-padded, so every response starts at column P:

    input_ids  [B, L]   pad… prompt | response …pad
    response_* [B, T]   column j is response token j (the token at input column P + j)

The logit predicting input column c sits at column c − 1. So the T response tokens are predicted
by the last T + 1 positions minus the final one, and the model is asked for those T + 1 logits
only (`logits_to_keep`), never for the prompt's. Position ids count real tokens only
(cumsum(attention_mask) − 1), so a left-padded prompt gets the same positions as the unpadded
prompt the actor saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepretrieval.common.learner_config import LossConfig
from deepretrieval.common.wire import Scored
from deepretrieval.learner.grpo_loss import entropy_from_logits, group_advantages


@dataclass(frozen=True)
class TrainSample:
    """One sequence ready to train on.

    Args:
        uid: the rollout uid.
        group_id: its GRPO group.
        policy_version: the version that sampled it.
        prompt_ids: [P_b] int, at least one token.
        response_ids: [T_b] int.
        behaviour_logprobs: [T_b] float32 log μ of each response token.
        advantage: its group-normalised advantage.
        reward: its reward.
        temperature: the sampling temperature (0 = greedy: log-probs of the untempered model).
        restricted: sampled under a restricted distribution (grammar-constrained, or top_p < 1),
            so its μ is not the policy's (see grpo_loss "Constrained samples").
    """

    uid: str
    group_id: str
    policy_version: int
    prompt_ids: np.ndarray
    response_ids: np.ndarray
    behaviour_logprobs: np.ndarray
    advantage: float
    reward: float
    temperature: float
    restricted: bool

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass(frozen=True)
class GroupStats:
    """What `build_samples` kept and dropped, in groups and samples."""

    groups_in: int
    groups_unavailable: int
    groups_uniform: int
    samples_restricted_dropped: int
    samples_out: int


@dataclass(frozen=True)
class PackedBatch:
    """A padded micro-batch (layout in the module docstring).

    Args:
        input_ids: [B, L] int64.
        attention_mask: [B, L] int64, 1 on real tokens.
        position_ids: [B, L] int64.
        response_mask: [B, T] bool, real response tokens.
        behaviour_logprobs: [B, T] float32, 0 at padded positions.
        advantages: [B] float32.
        temperatures: [B] float32.
        restricted: [B] bool.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    temperatures: torch.Tensor
    restricted: torch.Tensor

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})


def _is_restricted(item: Scored) -> bool:
    sampling = item.rollout.sampling
    return bool(sampling.constrained) or sampling.top_p < 1.0


def _trainable(group: Sequence[Scored], cfg: LossConfig) -> list[Scored]:
    """The samples of a group the loss uses: all, or with `constrained_policy == "exclude"` the unrestricted ones."""
    if cfg.constrained_policy == "exclude":
        return [item for item in group if not _is_restricted(item)]
    return list(group)


def _rewards_differ(group: Sequence[Scored]) -> bool:
    return len({float(item.reward) for item in group}) > 1  # type: ignore[arg-type]


def has_spread(group: Sequence[Scored], cfg: LossConfig) -> bool:
    """Whether a complete group (no `unavailable` member) gives the loss any advantage.

    True when the rewards of its trainable samples differ: exactly the groups `build_samples`
    keeps under dynamic sampling. The batcher uses it to fill a step with such groups.
    """
    return _rewards_differ(_trainable(group, cfg))


def build_samples(scored: Sequence[Scored], cfg: LossConfig, *, dynamic_sampling: bool) -> tuple[list[TrainSample], GroupStats]:
    """Group scored rollouts by `group_id` and turn each kept group into samples with advantages.

    A group with any `unavailable` member is dropped whole (DESIGN.md §4: an engine failure is
    never scored). With `cfg.constrained_policy == "exclude"` restricted samples are removed
    *before* the advantages are taken, so the baseline is over samples of the policy itself. With
    `dynamic_sampling` (DAPO) a group whose remaining rewards are all equal is dropped: its
    advantages are all 0 and it would only dilute the token mean. Groups keep first-seen order.

    Args:
        scored: the scored rollouts of whole groups.
        cfg: the loss config (advantage scaling, constrained policy).
        dynamic_sampling: drop groups of equal rewards.

    Returns:
        (samples, stats).
    """
    groups: dict[str, list[Scored]] = {}
    for item in scored:
        groups.setdefault(item.rollout.group_id, []).append(item)
    samples: list[TrainSample] = []
    unavailable = uniform = restricted_dropped = 0
    for group in groups.values():
        if any(item.status == "unavailable" for item in group):
            unavailable += 1
            continue
        kept = _trainable(group, cfg)
        restricted_dropped += len(group) - len(kept)
        group = kept
        if not group:
            continue
        if dynamic_sampling and not _rewards_differ(group):
            uniform += 1
            continue
        rewards = torch.tensor([float(item.reward) for item in group], dtype=torch.float64)  # type: ignore[arg-type]
        advantages = group_advantages(rewards, scale_by_std=cfg.scale_adv_by_std, eps=cfg.adv_eps)
        for item, adv in zip(group, advantages.tolist()):
            r = item.rollout
            samples.append(TrainSample(
                uid=r.uid, group_id=r.group_id, policy_version=r.policy_version,
                prompt_ids=r.prompt_token_ids, response_ids=r.response_token_ids,
                behaviour_logprobs=r.logprobs, advantage=float(adv), reward=float(item.reward),  # type: ignore[arg-type]
                temperature=r.sampling.temperature, restricted=_is_restricted(item)))
    stats = GroupStats(groups_in=len(groups), groups_unavailable=unavailable, groups_uniform=uniform,
                       samples_restricted_dropped=restricted_dropped, samples_out=len(samples))
    return samples, stats


def collate(samples: Sequence[TrainSample], pad_id: int = 0) -> PackedBatch:
    """Pad samples into one `PackedBatch` (prompts left-padded, responses right-padded).

    T is at least 1, so a batch of empty responses still has a (fully masked) response column.

    Raises:
        ValueError: no samples, or a sample with an empty prompt (nothing predicts its first token).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    for s in samples:
        if len(s.prompt_ids) == 0:
            raise ValueError(f"sample {s.uid!r} has an empty prompt; the first response token needs a preceding position")
    B = len(samples)
    P = max(len(s.prompt_ids) for s in samples)
    T = max(1, max(len(s.response_ids) for s in samples))
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.bool)
    behaviour = torch.zeros((B, T), dtype=torch.float32)
    for b, s in enumerate(samples):
        p, t = len(s.prompt_ids), len(s.response_ids)
        # torch.tensor copies: wire arrays are read-only views of the message bytes.
        input_ids[b, P - p:P] = torch.tensor(s.prompt_ids, dtype=torch.long)
        input_ids[b, P:P + t] = torch.tensor(s.response_ids, dtype=torch.long)
        attention_mask[b, P - p:P + t] = 1
        response_mask[b, :t] = True
        behaviour[b, :t] = torch.tensor(s.behaviour_logprobs, dtype=torch.float32)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return PackedBatch(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        response_mask=response_mask, behaviour_logprobs=behaviour,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        temperatures=torch.tensor([s.temperature for s in samples], dtype=torch.float32),
        restricted=torch.tensor([s.restricted for s in samples], dtype=torch.bool))


def split_micro_batches(samples: Sequence[TrainSample], *, max_seqs: int, max_tokens: int | None = None) -> list[list[TrainSample]]:
    """Pack samples into micro-batches of ≤ max_seqs sequences and ≤ max_tokens padded tokens.

    Longest first, so sequences of similar length share padding. The padded size of a micro-batch
    is its sequence count × (longest prompt + longest response). A sequence over `max_tokens` runs
    alone.

    Returns:
        micro-batches, each a non-empty list.
    """
    order = sorted(samples, key=lambda s: (s.num_tokens, s.uid), reverse=True)
    batches: list[list[TrainSample]] = []
    current: list[TrainSample] = []
    max_p = max_t = 0
    for s in order:
        p, t = max(max_p, len(s.prompt_ids)), max(max_t, len(s.response_ids), 1)
        fits = len(current) < max_seqs and (max_tokens is None or (len(current) + 1) * (p + t) <= max_tokens)
        if current and not fits:
            batches.append(current)
            current, p, t = [], len(s.prompt_ids), max(len(s.response_ids), 1)
        current.append(s)
        max_p, max_t = p, t
    if current:
        batches.append(current)
    return batches


def shard_for_rank(samples: Sequence[TrainSample], rank: int, world_size: int) -> list[TrainSample]:
    """This rank's share of a global batch: longest-first round robin, so token counts balance."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    order = sorted(samples, key=lambda s: (s.num_tokens, s.uid), reverse=True)
    return order[rank::world_size]


def _temperature_divisor(temperature: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """[B, 1, 1] divisor: the temperature, with 0 (greedy) mapped to 1 as the actors record it."""
    t = torch.as_tensor(temperature, dtype=torch.float32, device=device)
    t = t.expand(batch) if t.ndim == 0 else t
    return torch.where(t > 0, t, torch.ones_like(t))[:, None, None]


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float | torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
    with_entropy: bool = True,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens under log_softmax(logits / temperature), the actors' convention.

    Only the T + 1 last positions get logits; log p = z[y] − logsumexp(z) with z = logits / T, so
    no [B, L, V] (or [B, T, V]) log_softmax is materialised beyond z itself.

    Args:
        model: a causal LM taking (input_ids, attention_mask, position_ids, logits_to_keep).
        input_ids: [B, L], responses in the last T columns (module docstring).
        attention_mask: [B, L].
        response_mask: [B, T] bool, real response tokens.
        temperature: a float or [B]; 0 means greedy, whose log-probs are untempered.
        position_ids: [B, L]; None = cumsum(attention_mask) − 1.
        with_entropy: also return the per-token entropy of the tempered distribution.
        entropy_grad: let the entropy carry gradient (for an entropy bonus).

    Returns:
        (logprobs [B, T] float32, 0 at padded positions; entropy [B, T] float32 or None).
    """
    B, T = response_mask.shape
    if position_ids is None:
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=T + 1, use_cache=False)
    logits = out.logits[:, :-1, :]  # [B, T, V]: column j predicts response token j
    z = logits.float() / _temperature_divisor(temperature, B, logits.device)
    targets = input_ids[:, -T:].long()
    picked = z.gather(-1, targets[..., None]).squeeze(-1)  # [B, T]
    logprobs = picked - torch.logsumexp(z, dim=-1)
    logprobs = torch.where(response_mask, logprobs, torch.zeros_like(logprobs))
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(z if entropy_grad else z.detach())
            entropy = torch.where(response_mask, entropy, torch.zeros_like(entropy))
    return logprobs, entropy
