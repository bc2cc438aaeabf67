"""The behaviour log-prob convention matches vLLM's sampler (the source it must agree with)."""

from __future__ import annotations

import torch

from deepretrieval.actors.logprobs import processed_logprobs, top_p_mask


def test_top_p_mask_matches_vllm():
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3  # [B, V]
    for p in (0.3, 0.7, 0.95):
        expected = apply_top_k_top_p_pytorch(logits.clone(), None, torch.full((4,), p))
        assert torch.equal(top_p_mask(logits, p), expected)


def test_processed_logprobs_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # T=2: logits/2 = [1, .5, 0, -.5]; softmax ≈ [.405, .246, .149, .090] (sum .890 of e^x / 4.00).
    full = processed_logprobs(logits, 2.0)
    assert torch.allclose(full, (logits / 2).log_softmax(-1))
    # top_p=0.6: ascending cumsum [.090, .240, .486, 1]; tokens with cumsum <= 0.4 drop -> {-1, 0}.
    nucleus = processed_logprobs(logits, 2.0, 0.6)
    assert torch.isinf(nucleus[0, 2:]).all()
    kept = (logits[0, :2] / 2).log_softmax(-1)  # renormalised over the two kept tokens
    assert torch.allclose(nucleus[0, :2], kept)
    # Greedy: the untempered distribution, top_p ignored.
    assert torch.allclose(processed_logprobs(logits, 0.0, 0.5), logits.log_softmax(-1))
