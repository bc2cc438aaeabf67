"""Benchmark: what vLLM's prepacked CPU linear weights cost a weight update, and what dropping them costs generation.

On CPU, vLLM hands each linear layer's weight to oneDNN, which reorders it into its own blocked
layout and drops the plain parameter (`vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`).
A weight update therefore cannot be a copy into the parameters: `reload_weights` re-creates every
layer's oneDNN handle. This script measures, in one process per layout (the choice is made when
the engine loads):

- `tokens_per_s`: sampled generation (64 sequences x 160 tokens, ignore_eos) with the weights
  prepacked (vLLM's default) and plain (`_custom_ops._supports_onednn = False`: torch linear);
- `reload_weights_s`: vLLM's in-place reload from a safetensors folder (best of 3);
- `repack_s`: re-creating the oneDNN handles alone from weights already in memory (best of 3);
- `memcpy_s`: a copy of the engine's weight bytes, the floor any update pays.

    deepretrieval bench linear-layout --dtype bfloat16 --json bench/results/vllm-cpu-linear-layout.json

Each layout runs in a child process (`python -m deepretrieval.deploy.bench_linear_layout`) with
the engine core in that process (VLLM_ENABLE_V1_MULTIPROCESSING=0), bound to `cores`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _best(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(model: str, dtype: str, layout: str) -> dict:
    """One layout's figures (runs the engine in this process)."""
    import torch

    if layout == "plain":
        import vllm._custom_ops as ops

        ops._supports_onednn = False
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model, dtype=dtype, enforce_eager=True, max_model_len=1024, seed=0)
    tok = llm.get_tokenizer()
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Write a search query for biomedical question {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(16)]
    prompts = [TokensPrompt(prompt_token_ids=tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    params = SamplingParams(n=4, temperature=0.8, max_tokens=160, ignore_eos=True)
    llm.generate(prompts[:2], params, use_tqdm=False)
    gen_s = _best(lambda: llm.generate(prompts, params, use_tqdm=False), rounds=2)
    reload_s = _best(lambda: llm.collective_rpc("reload_weights", kwargs={"weights_path": model}))
    runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
    linear = [m for _, m in runner.model.named_modules() if hasattr(m, "cpu_linear") and getattr(m, "weight", None) is not None]
    out = {"layout": layout, "dtype": dtype, "tokens_per_s": round(64 * 160 / gen_s, 1), "reload_weights_s": round(reload_s, 4)}
    if layout == "prepacked":
        import vllm._custom_ops as ops

        # The handles are rebuilt from weights of the layers' shapes (the values do not change the cost).
        weights = [torch.randn(m.output_size_per_partition if hasattr(m, "output_size_per_partition") else m.weight.shape[0],
                               m.input_size_per_partition if hasattr(m, "input_size_per_partition") else m.weight.shape[1]).to(getattr(torch, dtype))
                   for m in linear]
        out["repack_s"] = round(_best(lambda: [ops.create_onednn_mm(w.t(), 32) for w in weights]), 4)
        nbytes = sum(w.nbytes for w in weights)
    else:
        nbytes = sum(p.nbytes for p in runner.model.parameters())
    src, dst = torch.ones(nbytes, dtype=torch.uint8), torch.zeros(nbytes, dtype=torch.uint8)
    out["weight_bytes"] = nbytes
    out["memcpy_s"] = round(_best(lambda: dst.copy_(src)), 5)
    return out


def run(model_dir: Path, *, dtype: str = "bfloat16", cores: str = "0-1") -> dict:
    """Both layouts, each in a fresh process (the layout is fixed when an engine loads)."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_OMP_THREADS_BIND": cores}
    rows = {}
    for layout in ("prepacked", "plain"):
        proc = subprocess.run([sys.executable, "-m", __name__, str(model_dir), dtype, layout],
                              env=env, capture_output=True, text=True, check=True)
        rows[layout] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"cores": cores, "model": str(model_dir), **rows,
            "plain_over_prepacked_tokens_per_s": round(rows["plain"]["tokens_per_s"] / rows["prepacked"]["tokens_per_s"], 3),
            "repack_over_memcpy": round(rows["prepacked"]["repack_s"] / rows["prepacked"]["memcpy_s"], 1)}


if __name__ == "__main__":  # one layout: MODEL_DIR DTYPE LAYOUT, a JSON line on stdout
    print(json.dumps(measure(sys.argv[1], sys.argv[2], sys.argv[3])))
