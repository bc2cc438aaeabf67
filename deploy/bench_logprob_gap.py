"""Benchmark: engine vs learner log-probs, and generation throughput, for vLLM and transformers.

Both engines sample the same SciFact prompts (chat template + "<think>" prefill, stop at
`</answer>`); each sample's behaviour log-probs are compared with a teacher-forced recomputation by
a transformers model holding the same weights (the learner's computation). Throughput is
generated tokens per second of one `generate` call per engine, after each engine's warm-up.

Run (the `__main__` guard is needed: vLLM's engine core is a spawned process):

    python -m deepretrieval.deploy.bench_logprob_gap --model-dir models/smollm2-135m-instruct --out gap.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from deepretrieval.common.config import default_data_root

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Write a search query that finds scientific evidence about the claim below. "
    'Reason inside <think></think>, then give the query as <answer>{"query": "..."}</answer>.\n'
    "Claim: "
)
PREFILL = "<think>"


def scifact_claims(data_root: Path, n: int) -> list[str]:
    """The first `n` SciFact queries (claims), in file order."""
    from deepretrieval.common.datasets import BeirDataset

    return list(BeirDataset.open("scifact", data_root).queries().values())[:n]


def _timed_generate(engine, requests, params) -> tuple[Any, dict[str, float]]:
    t0 = time.perf_counter()
    groups = engine.generate(requests, params)
    seconds = time.perf_counter() - t0
    tokens = sum(len(s.token_ids) for g in groups for s in g)
    return groups, {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": round(tokens / seconds, 1)}


def _gaps(model, requests, groups, params) -> dict[str, Any]:
    from deepretrieval.actors.logprob_gap import logprob_gap

    out: dict[str, Any] = {"gap": logprob_gap(model, requests, groups, params.temperature)}
    if params.top_p < 1.0:
        # Same nucleus as the engine: what is left is numerics; the rest is the truncation term.
        out["gap_same_nucleus"] = logprob_gap(model, requests, groups, params.temperature, params.top_p)
    return out


def run(model_dir: Path, n_prompts: int = 4, n_samples: int = 4, max_new_tokens: int = 48, temperature: float = 1.0,
        top_p: float = 1.0, data_root: Path | None = None, dtype: str = "auto") -> dict[str, Any]:
    """Measure the log-prob gap and throughput of both engines on the same prompts.

    Args:
        model_dir: Hugging Face checkpoint folder.
        n_prompts: SciFact claims to prompt with.
        n_samples: samples per prompt (G).
        max_new_tokens: per sample.
        temperature, top_p: sampling parameters of both engines.
        data_root: folder holding `scifact/` (default: the project data root).
        dtype: "auto" or a dtype name, for both engines and the learner-side model.

    Returns:
        JSON-able results: per engine the gap ({mean_abs, max_abs, tokens}) and throughput
        ({tokens, seconds, tok_per_s}), vLLM start/warm-up/reload seconds, and the tok/s ratio.
    """
    from deepretrieval.actors.base import GenerationRequest
    from deepretrieval.actors.hf_engine import HFEngine
    from deepretrieval.actors.vllm_engine import VLLMEngine
    from deepretrieval.common.chat import build_prompt_ids
    from deepretrieval.common.hardware import describe_cpu
    from deepretrieval.common.sampling import SamplingConfig

    params = SamplingConfig(n=n_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    claims = scifact_claims(data_root or default_data_root(), n_prompts)
    hf = HFEngine(model_dir, dtype=dtype)
    requests = [GenerationRequest(build_prompt_ids(hf.tokenizer, [{"role": "user", "content": INSTRUCTION + c}], PREFILL)) for c in claims]
    result: dict[str, Any] = {"model_dir": str(model_dir), "cpu": describe_cpu(), "dtype": hf.dtype_name, "params": params.model_dump(),
                              "n_prompts": len(requests), "prompt_tokens_mean": sum(len(r.prompt_token_ids) for r in requests) / len(requests)}
    try:
        hf.generate(requests[:1], params.model_copy(update={"n": 1, "max_new_tokens": 4}))  # warm-up
        groups, throughput = _timed_generate(hf, requests, params)
        result["hf"] = {**throughput, **_gaps(hf.model, requests, groups, params)}
        log.info("hf: %s", result["hf"])
        vllm = VLLMEngine(model_dir, dtype=dtype)
        try:
            groups, throughput = _timed_generate(vllm, requests, params)
            result["vllm"] = {**throughput, **_gaps(hf.model, requests, groups, params), "init_s": round(vllm.init_s, 2),
                              "warmup_s": round(vllm.warmup_s, 2), "reload_s": round(vllm.load_weights(Path(model_dir), version=1), 3),
                              "stop_string_hits": sum(s.hit_stop_string for g in groups for s in g)}
        finally:
            vllm.close()
    finally:
        hf.close()
    log.info("vllm: %s", result["vllm"])
    result["vllm_over_hf_tok_per_s"] = round(result["vllm"]["tok_per_s"] / result["hf"]["tok_per_s"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="Hugging Face checkpoint folder")
    parser.add_argument("--n-prompts", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here as well as to stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args.model_dir, args.n_prompts, args.n_samples, args.max_new_tokens, args.temperature, args.top_p, args.data_root, args.dtype)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
