"""Rewrite held-out requests with a policy and score them: shared by `eval --rewriter` and `train`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from deepretrieval.common.engine_config import HFEngineConfig, VLLMEngineConfig


def rewrite_with_policy(model_dir: Path, task_name: str, queries: dict[str, str], *, engine: str = "vllm",
                        temperature: float | None = None, max_new_tokens: int | None = None,
                        rewrites_out: Path | None = None) -> tuple[dict[str, str], dict[str, str], dict[str, object]]:
    """Rewrite every query once with the policy in `model_dir`.

    Returns:
        (strict rewrites: "" where the format broke, rewrites with the original query standing in
        for broken ones, stats: format-broken share, error counts, seconds).
    """
    from transformers import AutoTokenizer

    from deepretrieval.actors.engines import make_engine
    from deepretrieval.actors.rewrite import rewrite_requests
    from deepretrieval.common.tasks import get_task

    task = get_task(task_name)
    gen = make_engine(model_dir, VLLMEngineConfig() if engine == "vllm" else HFEngineConfig())
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        rewrites = rewrite_requests(gen, tokenizer, task, queries, temperature=temperature, max_new_tokens=max_new_tokens)
    finally:
        gen.close()
    seconds = time.perf_counter() - t0
    if rewrites_out:
        rewrites_out.parent.mkdir(parents=True, exist_ok=True)
        with rewrites_out.open("w", encoding="utf-8") as f:
            for qid, rw in rewrites.items():
                f.write(json.dumps({"_id": qid, "original": queries[qid], "query": rw.query, "error": rw.error,
                                    "reasoning": rw.reasoning, "completion": rw.completion}, ensure_ascii=False) + "\n")
    strict = {q: rw.query or "" for q, rw in rewrites.items()}
    fallback = {q: rw.query or queries[q] for q, rw in rewrites.items()}
    errors: dict[str, int] = {}
    for rw in rewrites.values():
        if rw.error:
            errors[rw.error] = errors.get(rw.error, 0) + 1
    stats = {"rewriter": str(model_dir), "engine": engine, "task": task.name, "rewrite_seconds": round(seconds, 2),
             "format_broken_share": sum(rw.query is None for rw in rewrites.values()) / max(1, len(rewrites)),
             "format_errors": errors}
    return strict, fallback, stats
