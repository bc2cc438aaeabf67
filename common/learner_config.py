"""Config of the learner: the GRPO/DAPO loss, the optimizer, batching, sharding and checkpoints.

Lives in `common` so the run's root config can compose it; the code it configures is in
`learner/`. A config module: imports no torch or vLLM.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import StrictModel

LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
ConstrainedPolicy = Literal["exclude", "importance"]


class LossConfig(StrictModel):
    """The policy loss (learner/grpo_loss.py has the derivation)."""

    eps_low: float = Field(0.2, ge=0.0, lt=1.0, description="PPO clip, lower edge: a token with advantage < 0 stops pushing once pi/mu < 1 - eps_low.")
    eps_high: float = Field(0.28, ge=0.0, description="PPO clip, upper edge: a token with advantage > 0 stops pushing once pi/mu > 1 + eps_high (DAPO clip-higher: 0.28 > eps_low).")
    tis_cap: float = Field(2.0, ge=1.0, description="Truncated importance sampling cap C: no token's importance weight pi/mu exceeds C (Yao et al. 2025; verl tis_imp_ratio_cap). Bounds the one branch PPO clipping leaves open (advantage < 0, pi/mu large).")
    kl_coef: float = Field(0.0, ge=0.0, description="Weight of the k3 KL estimate to a frozen reference policy; 0 turns it off (and no reference model is kept).")
    entropy_coef: float = Field(0.0, ge=0.0, description="Weight of the entropy bonus (subtracted from the loss); the entropy is logged whatever the weight.")
    loss_agg: LossAggregation = Field("token-mean", description="How token losses become one number: 'token-mean' (DAPO: sum over every token of the global batch / its token count), 'seq-mean-token-mean' (original GRPO: mean per sequence, then over sequences), 'seq-mean-token-sum' (sum per sequence, mean over sequences: no length normalisation, cf. Dr. GRPO).")
    adv_eps: float = Field(1e-6, gt=0.0, description="Added to the group's reward std before dividing (a group of equal rewards gets advantage 0, not NaN).")
    scale_adv_by_std: bool = Field(True, description="Divide group-centred rewards by the group std (GRPO); False keeps only the centring (Dr. GRPO).")
    constrained_policy: ConstrainedPolicy = Field("exclude", description="Samples whose behaviour log-probs come from a restricted distribution (grammar-constrained decoding, or top_p < 1): 'exclude' keeps them out of the policy loss (they serve the SFT warm-up only); 'importance' trains on them as they are, with the cap C bounding their weight.")


class OptimConfig(StrictModel):
    """AdamW with linear warm-up, then a constant learning rate."""

    lr: float = Field(1e-5, gt=0.0, description="Peak learning rate (1e-5 suits a 135M-parameter policy).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2).")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this; 0 turns clipping off (the norm is still logged).")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps over which the learning rate rises linearly to `lr`; 0 starts at `lr`.")

    @model_validator(mode="after")
    def _betas_in_range(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self


class LearnerConfig(StrictModel):
    """The learner process: what it admits, how it batches, shards and checkpoints."""

    max_staleness: int = Field(4, ge=0, description="Most policy versions a sample may lag the learner and still be trained on.")
    groups_per_step: int = Field(8, ge=1, description="Full GRPO groups per optimizer step (the global batch).")
    micro_batch_seqs: int = Field(8, ge=1, description="Most sequences in one forward/backward pass (per rank); the step accumulates gradients over micro-batches.")
    micro_batch_tokens: int | None = Field(None, ge=1, description="Most padded tokens (sequences x longest prompt+response) in one micro-batch; None = only micro_batch_seqs bounds it. A single sequence longer than this still runs alone.")
    dtype: str = Field("auto", description="Compute dtype: 'auto' (bf16 only with bf16 hardware, else float32; common/hardware.py), 'float32' or 'bfloat16'. Master params stay float32.")
    fsdp: bool = Field(True, description="Shard the model with FSDP2 (fully_shard per decoder layer, then the root) when a process group is initialised; off, or with one process, trains unsharded.")
    dynamic_sampling: bool = Field(True, description="DAPO dynamic sampling: drop groups whose rewards are all equal (zero advantage) so they do not dilute the token-mean.")
    fill_with_spread: bool = Field(False, description="With dynamic_sampling, DAPO's over-sampling: a step waits for groups_per_step groups whose rewards differ, dropping groups of equal rewards as they arrive (acked, admission slot released, so actors sample more). Off, they are dropped inside the step, which trains on fewer groups (none when every group ties).")
    fill_max_groups: int = Field(4, ge=1, description="With fill_with_spread: a step stops waiting once it has read this many complete groups, as a multiple of groups_per_step (DAPO's max_num_gen_batches), and trains on the groups with a spread it found, maybe none: a policy whose groups all tie cannot stall the run.")
    checkpoint_every: int = Field(50, ge=0, description="Save a DCP checkpoint every this many optimizer steps; 0 never.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept on disk; older ones are deleted after a new one is complete.")
    seed: int = Field(0, description="Seed of torch, numpy and random on every rank (rank added).")
    cpu_cores: list[int] | None = Field(None, description="CPU only: pin the learner process and its torch threads to these cores (e.g. [1] with the actor's engine bound to core 0, so generation and training do not compete); None = every core.")
    loss: LossConfig = Field(default_factory=LossConfig, description="The policy loss.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="The optimizer.")

    @model_validator(mode="after")
    def _fill_needs_dynamic_sampling(self) -> LearnerConfig:
        if self.fill_with_spread and not self.dynamic_sampling:
            raise ValueError("fill_with_spread needs dynamic_sampling: true (without it groups of equal rewards are trained on, not replaced)")
        return self

    @model_validator(mode="after")
    def _dtype_known(self) -> LearnerConfig:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        return self

