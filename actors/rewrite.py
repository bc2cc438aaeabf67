"""Rewrite requests with a policy: the query each completion carries, or why it has none.

Shared by `eval --rewriter` (`rewrite_requests`: many held-out requests, one rewrite each) and the
serving endpoint (`rewrite_jobs`: a batch of independent requests, possibly of different tasks
and group sizes, generated with as few engine calls as their sampling settings allow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deepretrieval.actors.base import GenerationEngine, GenerationRequest
from deepretrieval.common.answer_format import parse_answer
from deepretrieval.common.answer_grammar import answer_regex
from deepretrieval.common.chat import build_prompt_ids
from deepretrieval.common.sampling import SamplingConfig
from deepretrieval.common.tasks import TaskSpec, build_messages


def serving_constraint(task: TaskSpec, *, max_reasoning_chars: int | None = None, max_new_tokens: int | None = None,
                       max_rewrite_chars: int | None = None) -> str:
    """The grammar the serving endpoint decodes `task`'s answers under (and `eval --constrained`).

    The sampling sublanguage of the task's answer format (`answer_regex` with a reasoning cap): a
    completion decoded under it always parses, and its query has something to search.

    Args:
        task: the task.
        max_reasoning_chars: most reasoning characters before `</think>`; None = the token cap, so
            a long reasoning can still close.
        max_new_tokens: the generation cap; None = the task's.
        max_rewrite_chars: most characters of the query (`plain_string_body_regex`); None = unbounded,
            and a policy that loops inside its query runs to the token cap and breaks the format.
    """
    cap = max_reasoning_chars if max_reasoning_chars is not None else max_new_tokens or task.max_new_tokens
    return answer_regex(task.answer, max_reasoning_chars=cap, max_rewrite_chars=max_rewrite_chars)


@dataclass(frozen=True)
class Rewrite:
    """One rewritten request.

    Args:
        query: the query inside the answer, None when the completion broke the format.
        reasoning: the reasoning text, when there is one.
        completion: the raw completion.
        error: the format error code, None when ok.
        message: why the format broke, in words ("" when ok).
    """

    query: str | None
    reasoning: str | None
    completion: str
    error: str | None
    message: str = ""


@dataclass(frozen=True)
class RewriteJob:
    """One request to rewrite `n` times.

    Args:
        request: the raw request text.
        task: the task whose prompt and answer format apply.
        n: completions to sample.
        constraint: grammar regex for constrained decoding, or None.
        results: the request's top search results as shown, for a task with `feedback`.
    """

    request: str
    task: TaskSpec
    n: int = 1
    constraint: str | None = None
    results: tuple[str, ...] | None = None


def parse_rewrite(completion: str, task: TaskSpec) -> Rewrite:
    """A completion as a Rewrite: its query, or the error that leaves it without one (a broken
    format, or a query with nothing to search: `TaskSpec.answer_problem`)."""
    parsed = parse_answer(completion, task.answer)
    problem = task.answer_problem(parsed)
    if problem is not None:
        return Rewrite(None, parsed.reasoning, completion, *problem)
    return Rewrite(parsed.value, parsed.reasoning, completion, None)


def first_valid(rewrites: Sequence[Rewrite]) -> Rewrite:
    """The first rewrite that carries a query; the first one when none does.

    Raises:
        ValueError: `rewrites` is empty.
    """
    if not rewrites:
        raise ValueError("first_valid needs at least one rewrite")
    return next((rw for rw in rewrites if rw.query is not None), rewrites[0])


def sampling_for(task: TaskSpec, *, n: int = 1, temperature: float | None = None, max_new_tokens: int | None = None) -> SamplingConfig:
    """The sampling settings of rewriting with `task`.

    Args:
        task: the task (limits and temperatures).
        n: completions per request.
        temperature: None = `task.eval_temperature` (greedy). With n > 1 a temperature of 0 becomes
            the task's training temperature: greedy samples would all be the same.
        max_new_tokens: None = `task.max_new_tokens`.
    """
    t = task.eval_temperature if temperature is None else temperature
    if n > 1 and t == 0:
        t = task.temperature
    return SamplingConfig(n=n, temperature=t, max_new_tokens=max_new_tokens or task.max_new_tokens, stop=task.answer.stop)


def rewrite_jobs(engine: GenerationEngine, tokenizer, jobs: Sequence[RewriteJob], *, temperature: float | None = None,
                 max_new_tokens: int | None = None) -> list[list[Rewrite]]:
    """Rewrite each job `job.n` times; jobs with equal sampling settings share one generate call.

    Args:
        engine: the generation engine.
        tokenizer: the policy's tokenizer (its chat template builds the prompts).
        jobs: the requests, length B.
        temperature: see `sampling_for`.
        max_new_tokens: see `sampling_for`.

    Returns:
        B lists of rewrites, in job order, each of length `job.n` (completion order).
    """
    groups: dict[str, tuple[SamplingConfig, list[int]]] = {}
    for i, job in enumerate(jobs):
        params = sampling_for(job.task, n=job.n, temperature=temperature, max_new_tokens=max_new_tokens)
        groups.setdefault(params.model_dump_json(), (params, []))[1].append(i)
    out: list[list[Rewrite]] = [[] for _ in jobs]
    for params, members in groups.values():
        reqs = [GenerationRequest(build_prompt_ids(tokenizer, build_messages(jobs[i].task, jobs[i].request, results=jobs[i].results),
                                                   jobs[i].task.answer.prefill),
                                  jobs[i].constraint) for i in members]
        for i, group in zip(members, engine.generate(reqs, params)):
            out[i] = [parse_rewrite(s.text, jobs[i].task) for s in group]
    return out


def rewrite_requests(engine: GenerationEngine, tokenizer, task: TaskSpec, requests: Mapping[str, str], *,
                     temperature: float | None = None, max_new_tokens: int | None = None,
                     batch_size: int = 32, constraint: str | None = None,
                     results: Mapping[str, Sequence[str]] | None = None) -> dict[str, Rewrite]:
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
        results: id -> the request's top search results as shown, for a task with `feedback`.

    Returns:
        id -> Rewrite.
    """
    ids = list(requests)
    out: dict[str, Rewrite] = {}
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        jobs = [RewriteJob(requests[i], task, 1, constraint, None if results is None else tuple(results[i])) for i in chunk]
        for qid, group in zip(chunk, rewrite_jobs(engine, tokenizer, jobs, temperature=temperature, max_new_tokens=max_new_tokens)):
            out[qid] = group[0]
    return out
