"""Trainer on a tiny real Llama: a step lowers the loss, export reloads exactly, DCP resume is
bit-exact, and 2 FSDP2 ranks on gloo take the same step as 1 process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from deepretrieval.common.errors import ModelError
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.learner.checkpoint import checkpoint_path, latest_checkpoint
from deepretrieval.learner.sequences import TrainSample, collate, token_logprobs
from deepretrieval.learner.trainer import Trainer

WORKER = Path(__file__).with_name("fsdp_worker.py")


def _on_policy(model, samples: list[TrainSample]) -> list[TrainSample]:
    """The samples with behaviour log-probs replaced by `model`'s own, so r = 1 before any step."""
    batch = collate(samples)
    with torch.no_grad():
        logprobs, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask, batch.temperatures)
    return [dataclasses.replace(s, behaviour_logprobs=logprobs[b, :len(s.response_ids)].numpy().astype(np.float32))
            for b, s in enumerate(samples)]


def _config(**optim) -> LearnerConfig:
    # float32 on every machine: these cases check the loss and its gradient to 1e-6, which bf16
    # autocast (dtype "auto" on a CPU with bf16 hardware) does not reach.
    return LearnerConfig(dtype="float32", micro_batch_seqs=3, optim={"lr": 1e-3, **optim})


def test_one_step_lowers_the_loss_on_a_fixed_batch(tiny_model, train_batch):
    samples = _on_policy(tiny_model, train_batch)
    trainer = Trainer(tiny_model, _config())
    first = trainer.train_step(samples)
    # On-policy, r = 1 everywhere: nothing clipped, and the token-mean loss is −Σ A_b·T_b / Σ T_b.
    lengths = np.array([len(s.response_ids) for s in samples])
    advantages = np.array([s.advantage for s in samples])
    assert first["loss"] == pytest.approx(-(advantages * lengths).sum() / lengths.sum(), abs=1e-6)
    assert first["ratio/mean"] == pytest.approx(1.0, abs=1e-6)
    assert first["clip/low_frac"] == first["clip/high_frac"] == first["tis/truncated_frac"] == 0.0
    assert (first["tokens"], first["samples"], first["step"], first["step/skipped"]) == (lengths.sum(), 8, 1, 0)
    second = trainer.train_step(samples)
    assert second["loss"] < first["loss"] - 1e-3
    assert (second["staleness/mean"], second["step"], trainer.policy_version) == (1.0, 2, 2)


def test_kl_to_a_frozen_reference_starts_at_zero_and_grows(tiny_model, train_batch):
    samples = _on_policy(tiny_model, train_batch)
    trainer = Trainer(tiny_model, LearnerConfig(micro_batch_seqs=4, optim={"lr": 1e-2},
                                                loss={"kl_coef": 0.1, "entropy_coef": 0.01}))
    first = trainer.train_step(samples)
    # The reference is a copy of the initial policy: k3 = e^0 − 0 − 1 = 0 on the first step, so the
    # loss is the policy term minus 0.01 · entropy.
    assert first["kl/ref_k3"] == 0.0
    assert first["loss"] == pytest.approx(first["loss/policy"] - 0.01 * first["entropy"], abs=1e-6)
    second = trainer.train_step(samples)
    assert second["kl/ref_k3"] > 0
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())


def test_batch_without_loss_tokens_skips_the_step(tiny_model, train_batch):
    trainer = Trainer(tiny_model, LearnerConfig(loss={"constrained_policy": "exclude"}))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.train_step([dataclasses.replace(s, restricted=True) for s in train_batch])
    assert (metrics["step/skipped"], metrics["tokens"], trainer.step) == (1.0, 0.0, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_export_safetensors_reloads_to_identical_logits(tiny_model, tiny_model_dir, tokenizer_files, train_batch, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = Trainer(tiny_model, _config(), source_dir=tiny_model_dir)
    trainer.train_step(_on_policy(tiny_model, train_batch))
    out = trainer.export_safetensors(tmp_path / "policy-v1")
    assert not list(tmp_path.glob(".policy-v1*"))  # the temporary folder was renamed away
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys  # tied: stored once
    for name, text in tokenizer_files.items():
        assert (out / name).read_text() == text
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert (out / "generation_config.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([[5, 9, 17, 33, 2, 64]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, trainer.model(input_ids=ids).logits)
    trainer.export_safetensors(out)  # replacing an existing export works too
    assert (out / "model.safetensors").is_file()


def test_dcp_checkpoint_restores_params_optimizer_and_step_bit_exactly(tiny_model, train_batch, tmp_path):
    samples = _on_policy(tiny_model, train_batch)
    trainer = Trainer(tiny_model, _config())
    trainer.train_step(samples)
    path = trainer.save_checkpoint(checkpoint_path(tmp_path, trainer.step), extra={"consumed": ["g0-0", "g0-1"]})
    assert path.name == "step_00000001" and not path.with_name(path.name + ".tmp").exists()
    saved_params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    saved_optim = {n: {k: v.clone() for k, v in trainer.optimizer.state[p].items()} for n, p in trainer.model.named_parameters()}
    after_save = trainer.train_step(samples)
    params_after_save = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    with torch.no_grad():  # perturb beyond the extra step
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p))
    extra = trainer.load_checkpoint(path)
    assert extra == {"consumed": ["g0-0", "g0-1"]}
    assert (trainer.step, trainer.policy_version) == (1, 1)
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, saved_params[n]), n
        for k, v in trainer.optimizer.state[p].items():
            assert torch.equal(v, saved_optim[n][k]), (n, k)
    # Resuming replays the step taken after the save exactly.
    assert trainer.train_step(samples)["loss"] == after_save["loss"]
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, params_after_save[n]), n


def test_latest_checkpoint_ignores_incomplete_folders(tmp_path, tiny_model):
    assert latest_checkpoint(tmp_path) is None
    trainer = Trainer(tiny_model, _config())
    trainer.save_checkpoint(checkpoint_path(tmp_path, 3))
    (tmp_path / "step_00000009.tmp").mkdir()  # a save that died before the rename
    (tmp_path / "step_00000010").mkdir()  # not written by save_checkpoint: no state file
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    with pytest.raises(ModelError, match="not a complete checkpoint"):
        trainer.load_checkpoint(tmp_path / "step_00000010")


def test_two_fsdp_ranks_on_gloo_match_one_process(tiny_model_dir, train_batch, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = LearnerConfig(dtype="float32", micro_batch_seqs=2, optim={"lr": 1e-3, "weight_decay": 0.01})
    samples = _on_policy(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), train_batch)
    # Off-policy ratios so every path runs: A > 0 with r = e^0.3 = 1.35 (clipped high); A < 0 with
    # r = e^-0.3 = 0.74 (clipped low) or r = e^0.9 = 2.46 > C = 2 (truncated).
    def shift(i: int, s: TrainSample) -> float:
        return -0.3 if s.advantage > 0 else (0.3 if i % 2 else -0.9)

    samples = [dataclasses.replace(s, behaviour_logprobs=s.behaviour_logprobs + shift(i, s)) for i, s in enumerate(samples)]
    torch.save(samples, tmp_path / "samples.pt")
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    out = tmp_path / "ranks2"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
         str(tiny_model_dir), str(tmp_path / "samples.pt"), str(tmp_path / "cfg.json"), str(out)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    single = Trainer.from_pretrained(tiny_model_dir, cfg)
    one = single.train_step(samples)
    two = json.loads((out / "metrics.json").read_text())
    assert one["clip/low_frac"] > 0 and one["clip/high_frac"] > 0 and one["tis/truncated_frac"] > 0
    for key in ("loss", "grad_norm", "entropy", "ratio/mean", "clip/low_frac", "clip/high_frac", "tis/truncated_frac",
                "kl/behaviour_k3", "tokens", "samples"):
        assert two[key] == pytest.approx(one[key], abs=1e-5, rel=1e-5), key
    updated = {n: p.detach() for n, p in single.model.named_parameters()}
    with safe_open(str(out / "export" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(updated)
        for name in f.keys():
            torch.testing.assert_close(f.get_tensor(name), updated[name], atol=1e-5, rtol=0)
    # The 2-rank DCP checkpoint resumes in one process (DCP reshards): the same weights, step 1.
    resumed = Trainer.from_pretrained(tiny_model_dir, cfg)
    assert resumed.load_checkpoint(out / "ckpt") == {"ranks": 2}
    assert resumed.step == 1
    with safe_open(str(out / "export" / "model.safetensors"), "pt") as f:
        for name, p in resumed.model.named_parameters():
            assert torch.equal(p.detach(), f.get_tensor(name)), name
