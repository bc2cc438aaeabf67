"""Score one completion end to end: parse, ask the engine, turn its answer into a reward.

The one entry point the rewarder loop calls. The order of outcomes follows TASKS.md §2 "Outcome
status": a completion that breaks the format, or a query the engine rejects as malformed, is
`invalid` (format-failure reward); an engine that cannot answer is `unavailable` (no reward).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from deepretrieval.common.answer_format import ParsedAnswer, parse_answer
from deepretrieval.common.errors import BackendUnavailable, ConfigError, QuerySyntaxError
from deepretrieval.common.reward_config import ExecutionRewardConfig, NdcgRewardConfig, RecallRewardConfig
from deepretrieval.common.targets import AnswersTarget, IdsTarget, SqlTarget, Target
from deepretrieval.common.tasks import TaskSpec
from deepretrieval.rewarders.base import SearchBackend, SearchResult
from deepretrieval.rewarders.rewards import (
    Reward,
    invalid_reward,
    score_answer_rank,
    score_execution,
    score_ndcg,
    score_recall,
)
from deepretrieval.rewarders.sql_backend import SqlBackend

T = TypeVar("T", IdsTarget, AnswersTarget, SqlTarget)


@dataclass(frozen=True)
class ScoredCompletion:
    """A completion's parse, its reward, and the engine's answer when there was one."""

    parsed: ParsedAnswer
    reward: Reward
    search: SearchResult | None = None


async def score_completion(
    completion: str | bytes,
    *,
    task: TaskSpec,
    target: Target,
    backend: SearchBackend,
    k: int | None = None,
    passages: Mapping[str, str] | None = None,
    request: str | None = None,
    as_is: bool = False,
) -> ScoredCompletion:
    """Parse a completion, run its query on `backend` and score the answer with `task.reward`.

    Args:
        completion: generated text after the prompt and prefill (bytes are decoded leniently).
        task: the task spec (answer format, reward config, default k).
        target: the request's ground truth (IdsTarget, AnswersTarget or SqlTarget, per task).
        backend: the engine; a `SqlBackend` for the sql task.
        k: results to fetch; default `task.k_train`.
        passages: doc id -> passage text, needed by the qa task when the target has answer strings.
        request: the request the completion answers; `task.query` composes the search query from
            it and the answer's query (needed when the task expands the request).
        as_is: search the answer's query alone whatever `task.query` says (the request itself,
            scored as the baseline a rewrite has to beat).

    Returns:
        The parse and the Reward (`ok`, `invalid`, or `unavailable` with reward None).

    Raises:
        ConfigError: the target or backend does not fit the task.
        DatasetError: the target is unusable (no relevant ids; gold SQL that does not run).
    """
    parsed = parse_answer(completion, task.answer)
    cfg = task.reward
    problem = task.answer_problem(parsed)  # None only when the answer carries a usable value
    if problem is not None:
        return ScoredCompletion(parsed, invalid_reward(cfg, *problem))
    if isinstance(cfg, ExecutionRewardConfig):
        return ScoredCompletion(parsed, await _score_sql(parsed.value, target, backend, task, cfg))
    k = k if k is not None else task.k_train
    if k is None:
        raise ConfigError(f"task {task.name!r}: k is needed for backend {task.backend!r}; set k_train or pass k")
    if as_is or task.query.mode == "rewrite":
        search_query = parsed.value
    elif request is None:
        raise ConfigError(f"task {task.name!r} expands the request (query.mode 'expand'); pass request=")
    else:
        search_query = task.query.compose(request, parsed.value)
    try:
        result = await backend.search(search_query, k)
    except QuerySyntaxError as e:
        return ScoredCompletion(parsed, invalid_reward(cfg, "query_syntax", str(e)))
    except BackendUnavailable as e:
        return ScoredCompletion(parsed, Reward.unavailable(f"backend_unavailable:{backend.name}", str(e)))
    if isinstance(cfg, RecallRewardConfig):
        reward = score_recall(result, _expect(target, IdsTarget, task), cfg, k)
    elif isinstance(cfg, NdcgRewardConfig):
        reward = score_ndcg(result, _expect(target, IdsTarget, task), cfg, k)
    else:
        answers = _expect(target, AnswersTarget, task)
        if passages is None and any(a.strip() for a in answers.answers):
            raise ConfigError(f"task {task.name!r}: answer strings need the passage texts; pass passages=")
        reward = score_answer_rank(result, passages or {}, answers, cfg, k)
    return ScoredCompletion(parsed, reward, result)


async def _score_sql(sql: str, target: Target, backend: SearchBackend, task: TaskSpec, cfg: ExecutionRewardConfig) -> Reward:
    if not isinstance(backend, SqlBackend):
        raise ConfigError(f"task {task.name!r} needs a SqlBackend, got {type(backend).__name__}")
    gold_target = _expect(target, SqlTarget, task)
    try:
        predicted = await backend.execute(sql)
        gold = await backend.execute(gold_target.sql)
    except BackendUnavailable as e:
        return Reward.unavailable("backend_unavailable:sql", str(e))
    if gold.status == "timeout":
        return Reward.unavailable("gold_timeout", f"the gold SQL timed out: {gold.message}")
    return score_execution(predicted, gold, cfg)


def _expect(target: Target, kind: type[T], task: TaskSpec) -> T:
    if not isinstance(target, kind):
        raise ConfigError(f"task {task.name!r} scores a {kind.__name__}, got {type(target).__name__}")
    return target
