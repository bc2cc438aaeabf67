"""Rewrite requests with a policy: the query each completion carries, or why it has none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deepretrieval.actors.base import GenerationEngine, GenerationRequest
from deepretrieval.common.answer_format import parse_answer
from deepretrieval.common.chat import build_prompt_ids
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.tasks import TaskSpec, build_messages


@dataclass(frozen=True)
class Rewrite:
    """One rewritten request.

    Args:
        query: the query inside the answer, None when the completion broke the format.
        reasoning: the reasoning text, when there is one.
        completion: the raw completion.
        error: the format error code, None when ok.
    """

    query: str | None
    reasoning: str | None
    completion: str
    error: str | None


def rewrite_requests(engine: GenerationEngine, tokenizer, task: TaskSpec, requests: Mapping[str, str], *,
                     temperature: float | None = None, max_new_tokens: int | None = None,
                     batch_size: int = 32, constraint: str | None = None) -> dict[str, Rewrite]:
    """Rewrite each request once (greedy by default: the task's eval temperature).

    Args:
        engine: the generation engine.
        tokenizer: the policy's tokenizer (its chat template builds the prompt).
        task: the task (prompt template, answer format, limits).
        requests: id -> request text.
        temperature: sampling temperature; None = `task.eval_temperature`.
        max_new_tokens: generation cap; None = `task.max_new_tokens`.
        batch_size: requests per generate call.
        constraint: optional grammar regex for constrained decoding.

    Returns:
        id -> Rewrite.
    """
    params = SamplingConfig(n=1, temperature=task.eval_temperature if temperature is None else temperature,
                            max_new_tokens=max_new_tokens or task.max_new_tokens, stop=task.answer.stop)
    ids = list(requests)
    out: dict[str, Rewrite] = {}
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        reqs = [GenerationRequest(build_prompt_ids(tokenizer, build_messages(task, requests[i]), task.answer.prefill), constraint)
                for i in chunk]
        for qid, group in zip(chunk, engine.generate(reqs, params)):
            text = group[0].text
            parsed = parse_answer(text, task.answer)
            out[qid] = Rewrite(parsed.value if parsed.ok else None, parsed.reasoning, text,
                               None if parsed.ok else str(parsed.error))
    return out
