"""The task registry: what each of the six tasks asks, how it is answered and scored (TASKS.md).

A task is data: a prompt template, an answer format, a backend kind, k, sampling settings and a
reward config. `get_task(name, overrides)` returns the validated `TaskSpec`; `build_messages`
renders the chat messages (system + user) the tokenizer's own chat template turns into a prompt,
after which the assistant turn starts with `spec.answer.prefill`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, model_validator

from deepretrieval.common.answer_format import AnswerFormat, ParsedAnswer, format_instruction
from deepretrieval.common.config import StrictModel, validate_config
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.query_composition import EXPANDABLE_BACKENDS, QueryComposition, has_terms
from deepretrieval.common.reward_config import (
    AnswerRankRewardConfig,
    ExecutionRewardConfig,
    NdcgRewardConfig,
    RecallRewardConfig,
    RewardConfig,
)

BackendKind = Literal["pubmed", "ctgov", "bm25", "dense", "sql"]
TargetKind = Literal["ids", "answers", "sql"]

_PLACEHOLDERS = frozenset({"request", "format", "schema", "results"})


class PromptTemplate(StrictModel):
    """Chat messages of a task; `str.format` placeholders {request}, {format}, optional {schema}, {results}."""

    system: str = Field(min_length=1, description="System turn.")
    user: str = Field(
        description="User turn. Must hold {request} (the raw request) and {format} (the answer-shape instruction, "
        "from the answer format: the shape only, never a concrete answer). {schema}: the database schema (sql). "
        "{results}: the request's own top search results, when the task sets `feedback` (empty otherwise)."
    )

    @model_validator(mode="after")
    def _placeholders_known(self) -> PromptTemplate:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.user) if name is not None}
        except ValueError as e:
            raise ValueError(f"user: not a valid format string ({e}); write literal braces as {{{{ }}}}") from e
        unknown = names - _PLACEHOLDERS
        if unknown:
            raise ValueError(f"user: unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(_PLACEHOLDERS)}")
        missing = {"request", "format"} - names
        if missing:
            raise ValueError(f"user: must contain {{request}} and {{format}}; missing {sorted(missing)}")
        return self

    @property
    def needs_schema(self) -> bool:
        """Whether rendering needs a database schema."""
        return "schema" in self._names()

    @property
    def shows_results(self) -> bool:
        """Whether the template has a place for the request's search results ({results})."""
        return "results" in self._names()

    def _names(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.user) if name is not None}


class ResultFeedback(StrictModel):
    """Show the policy the request's own top search results in its prompt (pseudo-relevance feedback).

    The request is searched as is with the task's backend, and the titles of its top `docs` results
    (a document without a title shows the start of its text) go into the prompt's {results}. The
    policy can then take its added words from documents the request already finds, as RM3 takes its
    expansion terms from the feedback documents (Lavrenko and Croft 2001; Lei et al. 2024 show
    an LLM the same documents).
    """

    docs: int = Field(3, ge=1, le=20, description="How many of the request's top results the prompt shows.")
    max_chars: int = Field(100, ge=10, le=2000, description="Each result is cut to this many characters (at a word boundary).")


QUERY_NO_TERMS = "query_no_terms"
"""The error code of an answer whose query holds no letter or digit (`TaskSpec.answer_problem`)."""


class TaskSpec(StrictModel):
    """One task: prompt, answer format, backend, k, sampling and reward (defaults: TASKS.md §1-§4)."""

    name: str = Field(description="Registry name: pubmed, ctgov, sparse, dense, qa or sql.")
    prompt: PromptTemplate = Field(description="System and user turns.")
    answer: AnswerFormat = Field(description="Answer key and think mode (prefilled <think> by default).")
    backend: BackendKind = Field(description="Kind of search backend scoring the answer.")
    k_train: int | None = Field(ge=1, description="Results fetched per query during training; None for sql (all rows up to the backend's row cap).")
    k_eval: int | None = Field(ge=1, description="Results fetched per query in evaluation; None for sql.")
    temperature: float = Field(ge=0, le=2, description="Sampling temperature in training (TASKS.md §4: 1.0 PubMed/CTGov/NQ, 0.6 BEIR/SQL).")
    eval_temperature: float = Field(0.0, ge=0, le=2, description="Temperature in validation (0 = greedy, as the paper).")
    max_new_tokens: int = Field(512, ge=1, le=32768, description="Generation limit per completion (TASKS.md §1: 512).")
    reward: RewardConfig = Field(description="Format term + outcome term, chosen by `type`.")
    query: QueryComposition = Field(default_factory=QueryComposition, description="How the answer's query becomes the search query (rewrite, or expand the request).")
    feedback: ResultFeedback | None = Field(None, description="Show the request's own top search results in the prompt; None = the request alone.")

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        is_sql = [self.backend == "sql", self.reward.type == "execution", self.answer.key == "sql"]
        if any(is_sql) and not all(is_sql):
            raise ValueError(
                f"backend 'sql', reward.type 'execution' and answer.key 'sql' go together; "
                f"got backend={self.backend!r}, reward.type={self.reward.type!r}, answer.key={self.answer.key!r}"
            )
        if not is_sql[0] and (self.k_train is None or self.k_eval is None):
            raise ValueError(f"k_train and k_eval are required for backend {self.backend!r}")
        if self.query.mode == "expand" and self.backend not in EXPANDABLE_BACKENDS:
            raise ValueError(f"query.mode 'expand' needs a bag-of-words backend ({', '.join(sorted(EXPANDABLE_BACKENDS))}); "
                             f"backend {self.backend!r} would read the request's words as part of its query syntax")
        if self.feedback is not None:
            if self.backend not in EXPANDABLE_BACKENDS:
                raise ValueError(f"feedback shows documents of a local collection ({', '.join(sorted(EXPANDABLE_BACKENDS))}); "
                                 f"backend {self.backend!r} returns ids only")
            if not self.prompt.shows_results:
                raise ValueError("feedback needs {results} in prompt.user: the template has no place for the search results")
        return self

    def answer_problem(self, parsed: ParsedAnswer) -> tuple[str, str] | None:
        """Why a parsed answer gives nothing to use, as (error code, message); None when it does.

        Either its format is broken (the parser's error), or, for a search task, its query holds
        no letter or digit (`QUERY_NO_TERMS`). "..." (the placeholder the prompt shows as the
        answer's shape) passes the format check, and in expand mode it would search the request
        alone, scoring exactly as a copy of it: a policy learns to write it (run L,
        docs/design-notes.md). Both are the policy's fault (`invalid`), in training, evaluation and
        serving alike. SQL statements are checked by their backend.
        """
        if not parsed.ok or parsed.value is None:
            return str(parsed.error), parsed.message
        if self.backend == "sql" or has_terms(parsed.value):
            return None
        return QUERY_NO_TERMS, f"the query {parsed.value[:40]!r} has no letter or digit: nothing to search for"

    @property
    def target_kind(self) -> TargetKind:
        """What the ground truth of a request is: graded ids, answers, or gold SQL."""
        kinds: dict[str, TargetKind] = {"recall": "ids", "ndcg": "ids", "answer_rank": "answers", "execution": "sql"}
        return kinds[self.reward.type]


def render_results(results: Sequence[str]) -> str:
    """The {results} block of a prompt: the request's top results, numbered ("none" when it found nothing)."""
    if not results:
        return "\n\nTop search results for it: none"
    return "\n\nTop search results for it:\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(results, 1))


def build_messages(spec: TaskSpec, request: str, *, schema: str | None = None, results: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The chat messages for one request (system + user); the assistant turn starts with `spec.answer.prefill`.

    Args:
        spec: the task.
        request: the raw request text (claim, question, review title, ...).
        schema: the database schema text, for templates with {schema}.
        results: the request's top search results as shown (`rewarders.result_feedback`), for a
            task with `feedback`; must be None for one without.

    Returns:
        `[{"role": "system", "content": ...}, {"role": "user", "content": ...}]`.

    Raises:
        ConfigError: the template needs a schema and none was given; the task shows results and
            none were given, or results were given to a task that does not show them.
    """
    if spec.prompt.needs_schema and schema is None:
        raise ConfigError(f"task {spec.name!r}: the prompt template has {{schema}} but no schema was given")
    if (spec.feedback is None) != (results is None):
        raise ConfigError(f"task {spec.name!r}: " + ("its prompt shows the request's search results and none were given"
                                                     if results is None else "search results given but the task sets no `feedback`"))
    shown = "" if results is None else render_results(results)
    user = spec.prompt.user.format(request=request, format=format_instruction(spec.answer), schema=schema or "", results=shown)
    return [{"role": "system", "content": spec.prompt.system}, {"role": "user", "content": user}]


def _template(system: str, instruction: str, label: str, schema: bool = False) -> PromptTemplate:
    schema_part = "Database schema:\n{schema}\n\n" if schema else ""
    return PromptTemplate(system=system, user=f"{instruction}\n\n{schema_part}{label}: {{request}}{{results}}\n\n{{format}}")


def pubmed_task() -> TaskSpec:
    """PubMed publication search: a Boolean query for a systematic review, scored by recall@3000."""
    return TaskSpec(
        name="pubmed",
        prompt=_template(
            "You are an expert at searching PubMed for medical literature.",
            "Write a PubMed search query (Boolean operators AND, OR, NOT and MeSH terms are allowed) that retrieves the studies relevant to this systematic review.",
            "Review",
        ),
        answer=AnswerFormat(key="query"),
        backend="pubmed", k_train=3000, k_eval=3000, temperature=1.0, reward=RecallRewardConfig(),
    )  # fmt: skip


def ctgov_task() -> TaskSpec:
    """ClinicalTrials.gov trial search, scored by recall@3000."""
    return TaskSpec(
        name="ctgov",
        prompt=_template(
            "You are an expert at searching ClinicalTrials.gov.",
            "Write a ClinicalTrials.gov search query that retrieves the clinical trials relevant to this request.",
            "Request",
        ),
        answer=AnswerFormat(key="query"),
        backend="ctgov", k_train=3000, k_eval=3000, temperature=1.0, reward=RecallRewardConfig(),
    )  # fmt: skip


def sparse_task() -> TaskSpec:
    """BEIR query rewriting for BM25, scored by nDCG@k (train k=1000, eval k=10)."""
    return TaskSpec(
        name="sparse",
        prompt=_template(
            "You are an expert in information retrieval.",
            "Rewrite this request as a keyword query for a BM25 search engine, so that the documents relevant to it rank at the top.",
            "Request",
        ),
        answer=AnswerFormat(key="query"),
        backend="bm25", k_train=1000, k_eval=10, temperature=0.6, reward=NdcgRewardConfig(),
    )  # fmt: skip


def dense_task() -> TaskSpec:
    """BEIR query rewriting for a dense (FAISS) retriever, scored by nDCG@k."""
    return TaskSpec(
        name="dense",
        prompt=_template(
            "You are an expert in information retrieval.",
            "Rewrite this request as a query for a dense (embedding-based) retriever, so that the documents relevant to it rank at the top.",
            "Request",
        ),
        answer=AnswerFormat(key="query"),
        backend="dense", k_train=1000, k_eval=10, temperature=0.6, reward=NdcgRewardConfig(),
    )  # fmt: skip


def qa_task() -> TaskSpec:
    """Evidence seeking: find a passage holding the answer, scored by its rank in BM25 top-3000."""
    return TaskSpec(
        name="qa",
        prompt=_template(
            "You are an expert at finding evidence with a search engine.",
            "Write a search query for a BM25 search engine that retrieves a passage containing the answer to this question.",
            "Question",
        ),
        answer=AnswerFormat(key="query"),
        backend="bm25", k_train=3000, k_eval=100, temperature=1.0, reward=AnswerRankRewardConfig(),
    )  # fmt: skip


def sql_task() -> TaskSpec:
    """Text-to-SQL on a SQLite database, scored by execution match."""
    return TaskSpec(
        name="sql",
        prompt=_template(
            "You are an expert in SQL.",
            "Write one SQLite SELECT statement that answers this question on the database below.",
            "Question",
            schema=True,
        ),
        answer=AnswerFormat(key="sql"),
        backend="sql", k_train=None, k_eval=None, temperature=0.6, reward=ExecutionRewardConfig(),
    )  # fmt: skip


TASK_FACTORIES: Mapping[str, Callable[[], TaskSpec]] = MappingProxyType(
    {"pubmed": pubmed_task, "ctgov": ctgov_task, "sparse": sparse_task, "dense": dense_task, "qa": qa_task, "sql": sql_task}
)
"""Registry: task name -> factory of its default spec (read-only; nothing registers itself)."""


def task_names() -> list[str]:
    """The registered task names, in registry order."""
    return list(TASK_FACTORIES)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def get_task(name: str, overrides: Mapping[str, Any] | None = None) -> TaskSpec:
    """The spec of a task, with nested overrides merged over its defaults and validated.

    Args:
        name: a registered task name (`task_names()`).
        overrides: nested values to replace, e.g. `{"k_train": 50, "answer": {"think": "off"}}`
            (from dotted CLI items via `config.apply_overrides({}, items)`).

    Returns:
        The validated TaskSpec.

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or invalid overrides (every
            problem, with its field).
    """
    factory = TASK_FACTORIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    spec = factory()
    if not overrides:
        return spec
    if overrides.get("name", name) != name:
        raise ConfigError(f"task {name!r}: overrides may not rename the task (got name={overrides['name']!r})")
    return validate_config(TaskSpec, _merge(spec.model_dump(), overrides), source=f"task {name!r} with overrides")
