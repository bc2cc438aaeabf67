"""The policy trainer: model + AdamW, optionally FSDP2-sharded, one optimizer step per global batch.

Run it in a plain process (no process group: unsharded, tests and 1-rank runs) or under torchrun
(`init_process_group` first; gloo on CPU, NCCL on GPU): every rank builds the same model, the
Trainer shards it, and each rank's `train_step` gets its own share of the global batch
(`sequences.shard_for_rank`). Loss denominators are summed over micro-batches and ranks, so the
update is the same however the batch is split (tests/learner/test_trainer.py checks 2 ranks
against 1).
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from deepretrieval.common.errors import ConfigError
from deepretrieval.common.hardware import pick_dtype
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.learner import checkpoint as ckpt
from deepretrieval.learner.export import full_state_dict, tied_parameter_names, write_hf_checkpoint
from deepretrieval.learner.grpo_loss import loss_denominator, loss_mask, policy_loss
from deepretrieval.learner.sft import sft_loss
from deepretrieval.learner.sequences import PackedBatch, TrainSample, collate, split_micro_batches, token_logprobs
from deepretrieval.learner.sharding import all_reduce, barrier, rank_and_world, shard_model, torch_dtype

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    """Owns the policy and its optimizer; `train_step` takes one optimizer step.

    Args:
        model: a Hugging Face causal LM (e.g. LlamaForCausalLM), the same on every rank.
        cfg: the learner config.
        device: where to train ("cpu" or "cuda:N").
        source_dir: the folder the model was loaded from; exports copy its tokenizer files.
        ref_model: the frozen reference for the KL term; None with kl_coef > 0 copies `model`.

    Raises:
        ConfigError: several ranks with `fsdp: false` (unsharded data parallelism is not built).
    """

    def __init__(self, model: torch.nn.Module, cfg: LearnerConfig, *, device: torch.device | str = "cpu",
                 source_dir: Path | None = None, ref_model: torch.nn.Module | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = rank_and_world()
        if self.world_size > 1 and not cfg.fsdp:
            raise ConfigError(f"learner.fsdp is false but {self.world_size} ranks are running; set learner.fsdp: true or run one rank")
        self.sharded = self.world_size > 1
        self.compute_dtype = torch_dtype(pick_dtype(cfg.dtype, cuda=self.device.type == "cuda"))
        seed_everything(cfg.seed + self.rank)
        self.source_dir = Path(source_dir) if source_dir is not None else None
        self.model = model.to(device=self.device, dtype=torch.float32)
        self.model_config = model.config
        self.generation_config = getattr(model, "generation_config", None)
        self.tied_names = tied_parameter_names(model)
        pad = getattr(model.config, "pad_token_id", None)
        self.pad_id = int(pad) if isinstance(pad, int) and 0 <= pad < model.config.vocab_size else 0
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            ref = ref_model if ref_model is not None else copy.deepcopy(model)
            ref.to(device=self.device, dtype=torch.float32).eval().requires_grad_(False)
            self.ref_model = ref
        if self.sharded:
            shard_model(self.model, param_dtype=self.compute_dtype, device=self.device)
            if self.ref_model is not None:
                shard_model(self.ref_model, param_dtype=self.compute_dtype, device=self.device)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.step = 0
        self.policy_version = 0

    @classmethod
    def from_pretrained(cls, model_dir: Path, cfg: LearnerConfig, *, device: torch.device | str = "cpu") -> Trainer:
        """A Trainer for the Hugging Face checkpoint folder `model_dir` (float32 master weights)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return cls(model, cfg, device=device, source_dir=Path(model_dir))

    # ------------------------------------------------------------------ training

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up, then constant."""
        o = self.cfg.optim
        return o.lr if o.warmup_steps == 0 else o.lr * min(1.0, (step + 1) / o.warmup_steps)

    def _autocast(self) -> Any:
        # Sharded: FSDP's MixedPrecisionPolicy casts. Unsharded low precision: autocast.
        if self.sharded or self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _micro_batches(self, samples: Sequence[TrainSample]) -> list[PackedBatch]:
        """This rank's micro-batches, padded to the most any rank has (FSDP needs every rank to run
        the same number of forward/backward passes); padding batches hold one empty response."""
        groups = split_micro_batches(samples, max_seqs=self.cfg.micro_batch_seqs, max_tokens=self.cfg.micro_batch_tokens)
        batches = [collate(g, self.pad_id) for g in groups]
        most = int(all_reduce(torch.tensor(len(batches)), dist.ReduceOp.MAX).item())
        filler = TrainSample(uid="<filler>", group_id="<filler>", policy_version=self.policy_version,
                             prompt_ids=np.array([self.pad_id], np.int32), response_ids=np.zeros(0, np.int32),
                             behaviour_logprobs=np.zeros(0, np.float32), advantage=0.0, reward=0.0,
                             temperature=1.0, restricted=False)
        return batches + [collate([filler], self.pad_id) for _ in range(most - len(batches))]

    def _logprobs(self, model: torch.nn.Module, b: PackedBatch, *, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self._autocast():
            return token_logprobs(model, b.input_ids, b.attention_mask, b.response_mask, b.temperatures,
                                  position_ids=b.position_ids, with_entropy=with_entropy,
                                  entropy_grad=self.cfg.loss.entropy_coef > 0)

    def train_step(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """One policy-gradient optimizer step on this rank's share of the global batch (collective under torchrun).

        Gradients accumulate over micro-batches; each micro-batch's loss is divided by the global
        denominator (tokens or sequences, summed over every micro-batch of every rank). The step is
        skipped (metric "step/skipped" = 1) when the batch has no loss token or the gradient is not
        finite.

        Args:
            samples: this rank's samples (possibly none).

        Returns:
            metrics: "loss", the token-weighted means of `policy_loss`'s metrics, "grad_norm",
            "lr", "tokens", "samples", "staleness/mean", "staleness/max", "step", "step/skipped".
        """
        loss_cfg = self.cfg.loss

        def compute(b: PackedBatch, denominator: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logprobs, entropy = self._logprobs(self.model, b, with_entropy=True)
            ref_logprobs = None
            if self.ref_model is not None:
                with torch.no_grad():
                    ref_logprobs, _ = self._logprobs(self.ref_model, b, with_entropy=False)
            return policy_loss(logprobs, b.behaviour_logprobs, b.advantages, b.response_mask, loss_cfg,
                               ref_logprobs=ref_logprobs, entropy=entropy, constrained=b.restricted,
                               denominator=denominator)

        return self._step(samples, lambda b: loss_mask(b.response_mask, loss_cfg, b.restricted),
                          lambda m: loss_denominator(m, loss_cfg.loss_agg), compute)

    def sft_step(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """One supervised optimizer step: mean cross-entropy of the response tokens (the warm-up).

        Same sharding, micro-batching, clipping and skipping as `train_step`; the samples'
        advantages and behaviour log-probs are ignored and log-probs are taken at temperature 1.

        Returns:
            metrics: "loss" (mean token NLL of the batch), "nll", "grad_norm", "lr", "tokens",
            "samples", "step", "step/skipped" (plus staleness keys, 0 for warm-up samples).
        """
        def compute(b: PackedBatch, denominator: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            with self._autocast():
                logprobs, _ = token_logprobs(self.model, b.input_ids, b.attention_mask, b.response_mask,
                                             torch.ones_like(b.temperatures), position_ids=b.position_ids)
            return sft_loss(logprobs, b.response_mask, denominator=denominator)

        return self._step(samples, lambda b: b.response_mask, lambda m: m.sum().to(torch.float32), compute)

    def _step(self, samples: Sequence[TrainSample], mask_of: Callable[[PackedBatch], torch.Tensor],
              denominator_of: Callable[[torch.Tensor], torch.Tensor],
              compute: Callable[[PackedBatch, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]) -> dict[str, float]:
        """Accumulate `compute`'s loss over this rank's micro-batches, then take one optimizer step.

        Args:
            samples: this rank's samples.
            mask_of: a micro-batch's loss mask [B, T].
            denominator_of: a loss mask's share of the global denominator (summed over micro-batches and ranks).
            compute: (micro-batch on device, global denominator) -> (loss share, metrics incl. "tokens").
        """
        batches = self._micro_batches(samples)
        masks = [mask_of(b) for b in batches]
        denominator = all_reduce(torch.stack([denominator_of(m) for m in masks]).sum()
                                 if masks else torch.tensor(0.0))
        counts = all_reduce(torch.tensor([float(len(samples)), float(sum(self.policy_version - s.policy_version for s in samples))], dtype=torch.float64))
        staleness_max = all_reduce(torch.tensor(max((self.policy_version - s.policy_version for s in samples), default=0)), dist.ReduceOp.MAX)
        base = {"samples": float(counts[0]), "staleness/mean": float(counts[1] / max(counts[0].item(), 1.0)),
                "staleness/max": float(staleness_max), "lr": self.lr_at(self.step)}
        if float(denominator) == 0.0:
            log.warning("step %d: no loss tokens in the global batch; skipping the step", self.step)
            return {**base, "step": float(self.step), "step/skipped": 1.0, "tokens": 0.0}

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        loss_sum = 0.0
        for i, b in enumerate(batches):
            b = b.to(self.device)
            if self.sharded:
                self.model.set_requires_gradient_sync(i == len(batches) - 1)  # type: ignore[operator]
            loss, metrics = compute(b, denominator)
            # FSDP averages gradients over ranks; the loss is already a share of the global mean.
            (loss * self.world_size).backward()
            loss_sum += float(loss.detach())
            tokens = metrics.pop("tokens")
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * tokens
            sums["tokens"] = sums.get("tokens", 0.0) + tokens

        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        skipped = not math.isfinite(grad_norm)
        if skipped:
            log.warning("step %d: gradient norm is %s; skipping the optimizer step", self.step, grad_norm)
            self.optimizer.zero_grad(set_to_none=True)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = base["lr"]
            self.optimizer.step()
            self.step += 1
            self.policy_version += 1

        keys = sorted(sums)
        reduced = all_reduce(torch.tensor([sums[k] for k in keys] + [loss_sum], dtype=torch.float64)).tolist()
        total = dict(zip(keys, reduced[:-1]))
        tokens = total.pop("tokens")
        out = {k: v / max(tokens, 1.0) for k, v in total.items()}
        out.update(base, loss=reduced[-1], tokens=tokens, grad_norm=grad_norm, step=float(self.step),
                   **{"step/skipped": float(skipped)})
        return out

    # ------------------------------------------------------------------ weights out

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The consolidated CPU state dict on rank 0 ({} elsewhere). Collective; read-only tensors."""
        return full_state_dict(self.model)

    def export_safetensors(self, out_dir: Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write the current policy as a Hugging Face folder (rank 0 writes; collective).

        Tied weights (SmolLM2's lm_head) are written once, under the embedding's name.

        Args:
            out_dir: the folder, replaced atomically when it exists.
            dtype: cast the weights (e.g. torch.bfloat16 for GPU actors); None keeps float32.
        """
        state = self.full_state_dict()
        if self.rank == 0:
            write_hf_checkpoint(Path(out_dir), state, self.model_config, source_dir=self.source_dir,
                                drop_keys=self.tied_names, dtype=dtype, generation_config=self.generation_config)
        barrier()
        return Path(out_dir)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: Path, extra: dict[str, Any] | None = None) -> Path:
        """Save a resumable checkpoint to `path` (collective; see learner/checkpoint.py).

        Args:
            path: the checkpoint folder (e.g. `checkpoint.checkpoint_path(root, trainer.step)`).
            extra: JSON-serialisable caller state stored with it (e.g. the consumed-uid ledger).
        """
        state = ckpt.TrainerState(step=self.step, policy_version=self.policy_version, extra=dict(extra or {}))
        return ckpt.save_checkpoint(Path(path), self.model, self.optimizer, state)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Restore model, optimizer, RNG, step and policy version from `path`; returns its `extra`."""
        state = ckpt.load_checkpoint(Path(path), self.model, self.optimizer)
        self.step, self.policy_version = state.step, state.policy_version
        return state.extra
