"""The warm-up's supervised half: the rejection filter, the cross-entropy loss (hand-computed),
and `Trainer.sft_step` on a tiny real Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepretrieval.common.answer_format import AnswerFormat, parse_answer
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.learner.sequences import collate, token_logprobs
from deepretrieval.learner.sft import Candidate, canonical_answer, select_best, sft_loss, sft_samples, trim_cut_reasoning
from deepretrieval.learner.trainer import Trainer


def _c(prompt: str, uid: str, reward: float | None, ok: bool = True, *, forced: bool = False, tokens: int = 3, neutral: bool = False) -> Candidate:
    return Candidate(prompt_uid=prompt, uid=uid, prompt_ids=[5, 6], response_ids=[7] * (tokens - 1) + [2], reward=reward, status="ok" if ok else "invalid",
                     forced_close=forced, neutral=neutral)


def test_rejection_filter_keeps_the_best_that_beats_the_original_at_most_one_per_prompt():
    candidates = [
        _c("p1", "a", 0.5), _c("p1", "b", 0.9), _c("p1", "c", 0.9),   # best 0.9, first of the tie
        _c("p2", "d", 0.3), _c("p2", "e", 0.3),                        # equal to the baseline: not kept
        _c("p3", "f", 2.0, ok=False), _c("p3", "g", 0.1),              # invalid ignored; 0.1 < 0.2
        _c("p4", "h", None), _c("p4", "i", 0.4),                       # unavailable never kept
        _c("p5", "j", 1.0),                                            # no baseline: unknown, not kept
    ]
    baseline = {"p1": 0.6, "p2": 0.3, "p3": 0.2, "p4": -1.0}
    kept = select_best(candidates, baseline)
    assert [c.uid for c in kept] == ["b", "i"]
    assert [c.uid for c in select_best(candidates, baseline, margin=0.35)] == ["i"]  # 0.9 - 0.6 = 0.3 <= 0.35


def test_keep_ties_adds_completions_as_good_as_a_working_request_only():
    candidates = [
        _c("p1", "a", 0.3), _c("p1", "b", 0.5),    # b beats: preferred over the tie
        _c("p2", "c", 0.3), _c("p2", "d", 0.3),    # tie with a positive baseline: first kept
        _c("p3", "e", -2.5),                       # tie with a failing request: never kept
        _c("p4", "f", 0.0),                        # tie at 0 (the request finds nothing): not kept
        _c("p5", "g", 0.2),                        # below the baseline: not kept
    ]
    baseline = {"p1": 0.3, "p2": 0.3, "p3": -2.5, "p4": 0.0, "p5": 0.4}
    assert [c.uid for c in select_best(candidates, baseline)] == ["b"]
    assert [c.uid for c in select_best(candidates, baseline, keep_ties=True)] == ["b", "c"]


def test_neutral_ties_keeps_only_ties_that_search_the_request_itself():
    candidates = [
        _c("p1", "a", 0.3), _c("p1", "b", 0.3, neutral=True),   # a adds a word that moved nothing; b copies the request
        _c("p2", "c", 0.3),                                      # only a lucky tie: nothing kept
        _c("p3", "d", 0.3), _c("p3", "e", 0.5),                  # beating needs no neutrality
    ]
    baseline = {"p1": 0.3, "p2": 0.3, "p3": 0.3}
    assert [c.uid for c in select_best(candidates, baseline, keep_ties=True)] == ["a", "c", "e"]
    assert [c.uid for c in select_best(candidates, baseline, keep_ties=True, neutral_ties=True)] == ["b", "e"]


def test_prefer_natural_close_ranks_unforced_reasoning_then_reward_then_length_and_keeps_the_same_prompts():
    candidates = [
        _c("p1", "a", 0.9, forced=True), _c("p1", "b", 0.7), _c("p1", "c", 0.7, tokens=2),   # unforced beats a higher forced reward; shorter wins the tie
        _c("p2", "d", 0.8, forced=True), _c("p2", "e", 0.6, forced=True, tokens=9),          # all forced: the highest reward
        _c("p3", "f", 0.5, forced=True), _c("p3", "g", 0.1),                                  # the unforced one does not beat: not eligible
    ]
    baseline = {"p1": 0.5, "p2": 0.5, "p3": 0.3}
    assert [c.uid for c in select_best(candidates, baseline)] == ["a", "d", "f"]
    assert [c.uid for c in select_best(candidates, baseline, prefer_natural_close=True)] == ["c", "d", "f"]


ANSWER = '</think>\n<answer>{"query": "vitamin D deficiency"}</answer>'


@pytest.mark.parametrize(("reasoning", "expected"), [
    ("The user asks about vitamin D. Search for deficien", "The user asks about vitamin D."),      # last sentence end
    ("Is it common? Maybe! Look at e.g. bone dens", "Is it common? Maybe! Look at e.g."),          # "e.g." counts as an end
    ("Key terms:\nvitamin D\nbone dens", "Key terms:\nvitamin D"),                               # a line break ends a line
    ("Search PubMed for vitamin D, rickets, bone dens", "Search PubMed for vitamin D, rickets, bone."),  # none: whole words, "."
    ("Take 2.5 mg, then 3.1 mg per da", "Take 2.5 mg, then 3.1 mg per."),                          # "2.5" ends no sentence
])
def test_trim_cut_reasoning_closes_after_the_last_complete_sentence_and_keeps_the_answer(reasoning, expected):
    fmt = AnswerFormat(key="query")
    trimmed = trim_cut_reasoning(reasoning + ANSWER, fmt)
    assert trimmed == expected + ANSWER
    parsed = parse_answer(trimmed, fmt)
    assert parsed.ok and parsed.reasoning == expected and parsed.value == "vitamin D deficiency"


def test_trim_cut_reasoning_works_when_the_model_writes_the_think_tag_itself():
    fmt = AnswerFormat(key="query", think="generate")
    assert trim_cut_reasoning("\n<think>Plan. Then sea" + ANSWER, fmt) == "\n<think>Plan." + ANSWER


@pytest.mark.parametrize("completion", [
    "It ends a sentence." + ANSWER,                  # nothing to trim
    "It ends a sentence.\n" + ANSWER,               # trailing whitespace after the end
    "Onewordonly" + ANSWER,                          # no whole word to keep
    ANSWER,                                          # no reasoning
    "Broken. answer</think><answer>{}</answer>",     # not format-valid
])
def test_trim_cut_reasoning_leaves_what_has_nothing_to_trim(completion):
    assert trim_cut_reasoning(completion, AnswerFormat(key="query")) is None
    assert trim_cut_reasoning('<answer>{"query": "x"}</answer>', AnswerFormat(key="query", think="none")) is None


CANONICAL = '</think>\n<answer>\n{"query": "vitamin D \\"deficiency\\" é"}\n</answer>'


@pytest.mark.parametrize("answer", [
    '</think>\n\n<answer>\n\n{\n  "query" : "vitamin D \\"deficiency\\" é"\n}\n</answer>',   # sampled whitespace
    '</think><answer>{"query":"vitamin D \\"deficiency\\" \\u00e9"}</answer>',                # no whitespace, an escape
])
def test_canonical_answer_rewrites_the_answer_block_and_keeps_the_reasoning_and_value(answer):
    fmt = AnswerFormat(key="query")
    reasoning = "\n\nSearch the key terms. "
    text = canonical_answer(reasoning + answer, fmt)
    assert text == reasoning + CANONICAL
    before, after = parse_answer(reasoning + answer, fmt), parse_answer(text, fmt)
    assert after.ok and after.value == before.value == 'vitamin D "deficiency" é' and after.reasoning == before.reasoning


def test_canonical_answer_leaves_canonical_and_broken_completions_and_knows_every_think_mode():
    fmt = AnswerFormat(key="query")
    assert canonical_answer("Plan." + CANONICAL, fmt) is None                      # already canonical
    assert canonical_answer("Plan.</think><answer>{}</answer>", fmt) is None       # not format-valid
    assert canonical_answer("\n<think>Plan.</think> <answer>{\"query\":\"x\"}</answer>", AnswerFormat(key="query", think="generate")) \
        == '\n<think>Plan.</think>\n<answer>\n{"query": "x"}\n</answer>'
    assert canonical_answer('<answer>{ "sql" :"SELECT 1"}</answer>', AnswerFormat(key="sql", think="none")) \
        == '<answer>\n{"sql": "SELECT 1"}\n</answer>'


def test_sft_loss_is_the_token_mean_nll_and_its_gradient_is_minus_one_over_tokens():
    # Two sequences, 3 real tokens in all: Σ log p = -1 - 2 - 0.5 = -3.5, so the loss is 3.5 / 3.
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, metrics = sft_loss(logprobs, mask, denominator=torch.tensor(3.0))
    assert loss.item() == pytest.approx(3.5 / 3)
    assert metrics == {"nll": pytest.approx(3.5 / 3), "tokens": 3.0}
    loss.backward()
    expected = torch.tensor([[-1 / 3, -1 / 3, 0.0], [-1 / 3, 0.0, 0.0]])
    assert torch.allclose(logprobs.grad, expected)
    # Split over two micro-batches with the global denominator, the shares add up to the same loss.
    a, _ = sft_loss(logprobs[:1].detach(), mask[:1], denominator=torch.tensor(3.0))
    b, _ = sft_loss(logprobs[1:].detach(), mask[1:], denominator=torch.tensor(3.0))
    assert float(a + b) == pytest.approx(3.5 / 3)


def test_sft_steps_raise_the_likelihood_of_the_kept_completions(tiny_model):
    rng = np.random.default_rng(0)
    kept = [Candidate(prompt_uid=f"p{i}", uid=f"u{i}", prompt_ids=rng.integers(3, 128, 6).tolist(),
                      response_ids=rng.integers(3, 128, 5).tolist() + [2], reward=1.0, status="ok") for i in range(4)]
    samples = sft_samples(kept)
    assert all(not s.restricted and s.temperature == 1.0 for s in samples)
    trainer = Trainer(tiny_model, LearnerConfig(micro_batch_seqs=3, optim={"lr": 3e-3}))

    def nll() -> float:
        b = collate(samples)
        with torch.no_grad():
            lp, _ = token_logprobs(trainer.model, b.input_ids, b.attention_mask, b.response_mask, 1.0, with_entropy=False)
        return float(-(lp * b.response_mask).sum() / b.response_mask.sum())

    before = nll()
    first = trainer.sft_step(samples)
    assert first["loss"] == pytest.approx(before, rel=1e-4)  # the reported loss is the batch's mean NLL
    assert (first["tokens"], first["samples"], first["step"]) == (24.0, 4.0, 1.0)
    for _ in range(4):
        trainer.sft_step(samples)
    assert nll() < before - 0.5


def test_epoch_order_unbalanced_is_a_shuffle_of_every_sample():
    import random

    from deepretrieval.learner.sft import epoch_order

    groups = ["pubmed"] * 2 + ["sparse"] * 6
    order = epoch_order(groups, random.Random(0))
    assert sorted(order) == list(range(8))


def test_epoch_order_balanced_gives_each_task_an_equal_share():
    import random
    from collections import Counter

    from deepretrieval.learner.sft import epoch_order

    groups = ["pubmed"] * 2 + ["sparse"] * 7 + ["ctgov"] * 3
    rng = random.Random(1)
    seen_sparse: set[int] = set()
    for _ in range(6):
        order = epoch_order(groups, rng, balance=True)
        assert len(order) == 12
        assert Counter(groups[i] for i in order) == {"ctgov": 4, "pubmed": 4, "sparse": 4}
        assert Counter(i for i in order if groups[i] == "pubmed") == {0: 2, 1: 2}  # the minority repeats, evenly
        sparse = [i for i in order if groups[i] == "sparse"]
        assert len(set(sparse)) == 4  # the majority contributes distinct samples ...
        seen_sparse |= set(sparse)
    assert seen_sparse == set(range(2, 9))  # ... a fresh subset each epoch
    assert epoch_order([], rng, balance=True) == []
