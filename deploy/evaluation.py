"""Rewrite held-out requests with a policy and score them: shared by `eval --rewriter` and `train`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.common.engine_config import HFEngineConfig, VLLMEngineConfig
from deepretrieval.common.query_composition import QueryComposition

if TYPE_CHECKING:
    from deepretrieval.actors.base import GenerationEngine
    from deepretrieval.common.tasks import TaskSpec


def rewrite_with_policy(model_dir: Path, task: str | TaskSpec, queries: dict[str, str], *, engine: str = "vllm",
                        temperature: float | None = None, max_new_tokens: int | None = None,
                        rewrites_out: Path | None = None, composition: QueryComposition | None = None,
                        constraint: str | None = None, loaded: tuple[GenerationEngine, object] | None = None,
                        results: Mapping[str, Sequence[str]] | None = None,
                        ) -> tuple[dict[str, str], dict[str, str], dict[str, object]]:
    """Rewrite every query once with the policy in `model_dir`; return the queries to search.

    `composition` (default: the task's own `query`) turns each rewrite into the search query: the
    rewrite alone, or the request expanded by it. `constraint` (a grammar regex,
    `serving_constraint`) decodes as the serving endpoint does; None decodes freely. `loaded`: an
    engine and tokenizer already holding this policy (the caller closes the engine); None starts one.
    `task`: a task name (its default spec) or a spec; `results`: id -> the request's top search
    results as shown, for a spec with `feedback` (`rewarders.result_feedback`).

    Returns:
        (strict search queries: "" where the format broke, search queries with the original query
        standing in for broken ones, stats: format-broken share, error counts, query mode, seconds).
    """
    from transformers import AutoTokenizer

    from deepretrieval.actors.engines import make_engine
    from deepretrieval.actors.rewrite import rewrite_requests
    from deepretrieval.common.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    gen, tokenizer = loaded or (make_engine(model_dir, VLLMEngineConfig() if engine == "vllm" else HFEngineConfig()), None)
    t0 = time.perf_counter()
    try:
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
        rewrites = rewrite_requests(gen, tokenizer, task, queries, temperature=temperature, max_new_tokens=max_new_tokens,
                                    constraint=constraint, results=results)
    finally:
        if loaded is None:
            gen.close()
    seconds = time.perf_counter() - t0
    if rewrites_out:
        rewrites_out.parent.mkdir(parents=True, exist_ok=True)
        with rewrites_out.open("w", encoding="utf-8") as f:
            for qid, rw in rewrites.items():
                f.write(json.dumps({"_id": qid, "original": queries[qid], "query": rw.query, "error": rw.error,
                                    "reasoning": rw.reasoning, "completion": rw.completion}, ensure_ascii=False) + "\n")
    compose = composition or task.query
    searched = {q: compose.compose(queries[q], rw.query) for q, rw in rewrites.items() if rw.query is not None}
    strict = {q: searched.get(q, "") for q in rewrites}
    fallback = {q: searched.get(q, queries[q]) for q in rewrites}
    errors: dict[str, int] = {}
    for rw in rewrites.values():
        if rw.error:
            errors[rw.error] = errors.get(rw.error, 0) + 1
    stats = {"rewriter": str(model_dir), "engine": engine, "task": task.name, "constrained": constraint is not None, "query_mode": compose.mode,
             **({"original_repeats": compose.original_repeats, "new_terms_only": compose.new_terms_only} if compose.mode == "expand" else {}), "rewrite_seconds": round(seconds, 2),
             "format_broken_share": sum(rw.query is None for rw in rewrites.values()) / max(1, len(rewrites)),
             "format_errors": errors}
    return strict, fallback, stats
