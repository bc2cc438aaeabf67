"""`deepretrieval warmup` on real components: a managed PubMed emulator over SciFact, the run's
rewarder, grammar-constrained sampling with the transformers engine, SFT, and free-sampling
format-ok measured on held-back train prompts before and after (a real measurement).

Slow suite: on this tiny scale the untrained 135M model's constrained queries rarely beat the
requests (measured 2026-11-25: 0 of 12 prompts kept, constrained format-ok 0.60 at 64 tokens), so
the learning assertions do not hold yet; see issue 8's closing note.
"""

from __future__ import annotations

import json

import pytest

from deepretrieval.deploy.cli import main


@pytest.mark.slow
def test_tiny_warmup_keeps_only_winners_and_raises_free_sampling_format_ok(tmp_path, data_root, index_root, policy_dir):
    config = tmp_path / "warm.yaml"
    config.write_text(f"""
run: warm
paths: {{data_root: {data_root}, index_dir: {index_root}, runs_dir: {tmp_path / 'runs'}}}
model: {{name_or_path: {policy_dir}}}
tasks:
  - task: pubmed
    dataset: scifact
    max_prompts: 20
    eval_split: null
    k: 100
    backend:
      type: pubmed
      client: {{base_url: "http://127.0.0.1:0/entrez/eutils"}}
      emulator: {{api: pubmed, dataset: scifact, port: 0, rate_limit: false}}
sampling: {{n: 4, temperature: 0.7, max_new_tokens: 64}}
actors: {{engine: {{type: hf}}}}
transport: {{backlog_bound: 4096}}
warmup: {{prompts: 12, samples_per_prompt: 4, heldout_prompts: 8, max_reasoning_chars: 24, epochs: 6, batch_seqs: 4, lr: 1.0e-4}}
""")
    out = tmp_path / "warmup.json"
    assert main(["warmup", "--config", str(config), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["prompts"] == 12 and report["heldout_prompts"] == 8 and report["candidates"] == 48
    assert report["unavailable"] == 0
    assert report["constrained_format_ok"] >= 0.75  # the grammar holds (a few may hit the token limit)
    # A claim sent as is ANDs every term: most requests find little, so winners exist; at most one per prompt.
    assert 1 <= report["kept"] <= 12 and report["kept_reward_mean"] > report["baseline_reward_mean"]
    assert report["sft_steps"] == 6 * -(-report["kept"] // 4)
    assert report["sft_loss_last"] < report["sft_loss_first"]
    assert report["format_ok_after"] > report["format_ok_before"]
    policy = tmp_path / "runs" / "warm" / "warmup" / "policy"
    assert (policy / "model.safetensors").is_file() and (policy / "tokenizer.json").is_file()
