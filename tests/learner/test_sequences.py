"""Scored groups → samples (advantages, drops), padding layout, and the learner's token log-probs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepretrieval.common.learner_config import LossConfig
from deepretrieval.learner.sequences import (TrainSample, build_samples, collate, shard_for_rank, split_micro_batches,
                                             token_logprobs)


def _sample(uid: str, prompt: list[int], response: list[int], *, temperature: float = 1.0) -> TrainSample:
    return TrainSample(uid=uid, group_id="g", policy_version=0, prompt_ids=np.array(prompt, np.int32),
                       response_ids=np.array(response, np.int32),
                       behaviour_logprobs=-np.arange(1, len(response) + 1, dtype=np.float32), advantage=0.5,
                       reward=1.0, temperature=temperature, restricted=False)


# ------------------------------------------------------------------ build_samples

def test_build_samples_advantages_and_drops(make_scored):
    scored = [
        # g0: rewards 1,0,0,1 → ±0.866025 (mean 0.5, unbiased std 0.57735)
        *[make_scored("g0", i, r) for i, r in enumerate([1.0, 0.0, 0.0, 1.0])],
        # g1: one unavailable member → the whole group is dropped
        make_scored("g1", 0, 1.0), make_scored("g1", 1, None, status="unavailable"),
        # g2: all equal → dropped by dynamic sampling
        *[make_scored("g2", i, 0.3) for i in range(3)],
        # g3: the constrained sample (reward 0.5) is excluded before the baseline: rewards 1, 0
        # → mean 0.5, unbiased std 0.707107 → ±0.707107
        make_scored("g3", 0, 1.0), make_scored("g3", 1, 0.0), make_scored("g3", 2, 0.5, constrained=True),
        # g4: top_p < 1 restricts the distribution too: excluded, leaving one sample, whose rewards are
        # trivially all equal → dropped by dynamic sampling
        make_scored("g4", 0, 1.0), make_scored("g4", 1, 0.0, top_p=0.9),
    ]
    samples, stats = build_samples(scored, LossConfig(), dynamic_sampling=True)
    adv = {s.uid: s.advantage for s in samples}
    assert list(adv) == ["g0-0", "g0-1", "g0-2", "g0-3", "g3-0", "g3-1"]
    assert [adv[u] for u in ["g0-0", "g0-1", "g0-2", "g0-3"]] == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=1e-5)
    assert [adv["g3-0"], adv["g3-1"]] == pytest.approx([0.707107, -0.707107], abs=1e-5)
    assert (stats.groups_in, stats.groups_unavailable, stats.groups_uniform, stats.samples_restricted_dropped, stats.samples_out) == (5, 1, 2, 2, 6)


def test_build_samples_keeps_uniform_and_constrained_groups_when_asked(make_scored):
    scored = [make_scored("g2", i, 0.3) for i in range(2)] + [make_scored("g3", 0, 1.0), make_scored("g3", 1, 0.0, constrained=True)]
    samples, _ = build_samples(scored, LossConfig(constrained_policy="importance"), dynamic_sampling=False)
    # g2 kept with advantage 0; g3's constrained sample kept, flagged, in the baseline: ±0.707107
    assert [(s.uid, round(s.advantage, 5), s.restricted) for s in samples] == [
        ("g2-0", 0.0, False), ("g2-1", 0.0, False), ("g3-0", 0.70711, False), ("g3-1", -0.70711, True)]


# ------------------------------------------------------------------ layout

def test_collate_left_pads_prompts_and_right_pads_responses():
    # P = 2 (longest prompt), T = 3 (longest response), L = 5; pad id 0.
    batch = collate([_sample("a", [5, 6], [7, 8, 9]), _sample("b", [4], [3])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [0, 4, 3, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    # cumsum(mask) − 1, clamped: row b = [−1, 0, 1, 1, 1] → [0, 0, 1, 1, 1]: "4" sits at position 0.
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.behaviour_logprobs.tolist() == [[-1.0, -2.0, -3.0], [-1.0, 0.0, 0.0]]
    assert batch.advantages.tolist() == [0.5, 0.5]


def test_collate_rejects_empty_prompts():
    with pytest.raises(ValueError, match="empty prompt"):
        collate([_sample("a", [], [1])])


def test_split_micro_batches_respects_both_limits():
    samples = [_sample(f"s{i}", [1] * (i + 1), [2, 3]) for i in range(5)]  # total lengths 3..7
    by_seqs = split_micro_batches(samples, max_seqs=2)
    assert [[s.uid for s in mb] for mb in by_seqs] == [["s4", "s3"], ["s2", "s1"], ["s0"]]
    # longest first: s4 (5+2=7 tokens); adding s3 makes 2·7 = 14 > 12: alone. s3+s2: 2·6 = 12 fits; +s1 3·6 = 18 no.
    by_tokens = split_micro_batches(samples, max_seqs=8, max_tokens=12)
    assert [[s.uid for s in mb] for mb in by_tokens] == [["s4"], ["s3", "s2"], ["s1", "s0"]]


def test_shard_for_rank_partitions_the_batch():
    samples = [_sample(f"s{i}", [1] * (i + 1), [2]) for i in range(5)]
    shards = [shard_for_rank(samples, r, 2) for r in range(2)]
    assert sorted(s.uid for shard in shards for s in shard) == [f"s{i}" for i in range(5)]
    assert [len(x) for x in shards] == [3, 2]


# ------------------------------------------------------------------ token log-probs on a real (tiny) Llama

def _direct_logprobs(model, sample: TrainSample, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log_softmax(logits / T) of the unpadded sequence, gathered at each response token, and the entropy."""
    ids = torch.tensor(np.concatenate([sample.prompt_ids, sample.response_ids]), dtype=torch.long)[None]
    logits = model(input_ids=ids).logits[0].float()
    p = len(sample.prompt_ids)
    logp_all = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    rows = logp_all[p - 1:p - 1 + len(sample.response_ids)]  # position c−1 predicts token c
    picked = rows.gather(-1, torch.as_tensor(sample.response_ids, dtype=torch.long)[:, None])[:, 0]
    return picked, -(rows.exp() * rows).sum(-1)


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_token_logprobs_match_direct_log_softmax(tiny_model, temperature):
    samples = [_sample("a", [5, 6, 7, 8], [9, 10, 11]), _sample("b", [4], [3, 12, 13, 14, 15]), _sample("c", [20, 21], [22])]
    batch = collate(samples)
    with torch.no_grad():
        logprobs, entropy = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, batch.response_mask, temperature)
        assert logprobs.shape == entropy.shape == (3, 5)
        for b, s in enumerate(samples):
            t = len(s.response_ids)
            want_lp, want_h = _direct_logprobs(tiny_model, s, temperature)
            torch.testing.assert_close(logprobs[b, :t], want_lp, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(entropy[b, :t], want_h, atol=1e-5, rtol=1e-5)
            assert logprobs[b, t:].abs().sum() == 0 and entropy[b, t:].abs().sum() == 0


def test_token_logprobs_per_sequence_temperatures_and_gradient(tiny_model):
    samples = [_sample("a", [5, 6], [7, 8], temperature=0.7), _sample("b", [4], [3], temperature=1.3)]
    batch = collate(samples)
    logprobs, _ = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, batch.response_mask, batch.temperatures)
    logprobs.sum().backward()
    assert tiny_model.model.embed_tokens.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(logprobs[0, :2], _direct_logprobs(tiny_model, samples[0], 0.7)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logprobs[1, :1], _direct_logprobs(tiny_model, samples[1], 1.3)[0], atol=1e-5, rtol=1e-5)
