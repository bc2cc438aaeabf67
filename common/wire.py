"""Versioned wire schemas and their msgpack codec: Prompt, Rollout, Scored.

Every message is a msgpack map with a `schema` key (`"rollout/1"`); token ids and logprobs travel
as packed little-endian bytes (`<i4`, `<f4`), so a round trip is bit-exact. `decode` returns a fully
validated object or raises: an unknown schema version is a `SchemaVersionError`; a missing,
unexpected or ill-typed field, or a broken invariant, is a `SchemaError` naming the field and what
was seen. Nothing is ever half-read (DESIGN.md §4 "Wire").

A new field or a changed meaning is a new version (`rollout/2`) with its own reader here; unknown
keys are rejected, so a newer writer can never have its data silently dropped by an older reader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, get_args

import msgpack
import numpy as np

from deepretrieval.common.errors import SchemaError, SchemaVersionError
from deepretrieval.common.wire_fields import (LOGPROB_DTYPE, TOKEN_DTYPE, check_bool,  # noqa: F401 (dtypes re-exported)
                                              check_float, check_int, check_logprob_array, check_messages,
                                              check_opt_float, check_opt_str, check_str, check_str_float_map,
                                              check_str_list, check_str_map, check_text, check_token_array, seen,
                                              set_frozen)

RewardStatus = Literal["ok", "invalid", "unavailable"]
REWARD_STATUSES: tuple[str, ...] = get_args(RewardStatus)


# ---------------------------------------------------------------- schemas

@dataclass(frozen=True)
class Prompt:
    """One training request, before generation.

    Args:
        uid: unique id of the prompt (stable across epochs for the same example + epoch tag).
        task: task registry name (e.g. "pubmed_publication", "beir_bm25").
        dataset: data set name (e.g. "scifact").
        request: the user's search request in plain text.
        messages: the chat messages given to the policy, each {"role", "content"}.
        prefill: text the assistant turn starts with (e.g. "<think>"), "" for none.
        target: the ground truth the reward is judged by (target ids, qrels, answers, gold SQL);
            any msgpack-able map with str keys.
        split: "train", "dev" or "test".
    """

    uid: str
    task: str
    dataset: str
    request: str
    messages: list[dict[str, str]]
    prefill: str
    target: dict[str, Any]
    split: str

    SCHEMA = "prompt/1"

    def __post_init__(self) -> None:
        for name, check in _PROMPT_FIELDS.items():
            set_frozen(self, name, check(getattr(self, name), name))


@dataclass(frozen=True)
class SamplingParams:
    """How a rollout was sampled.

    Args:
        temperature: softmax temperature (0 = greedy).
        top_p: nucleus mass kept.
        max_new_tokens: generation cap.
        constrained: whether decoding was grammar/format constrained.
    """

    temperature: float
    top_p: float
    max_new_tokens: int
    constrained: bool

    def __post_init__(self) -> None:
        for name, check in _SAMPLING_FIELDS.items():
            set_frozen(self, name, check(getattr(self, name), f"sampling.{name}"))


#: `Rollout.engine` of the request sent as is (the baseline a rewrite must beat): scored without
#: query composition, so an expanding task compares the policy with the bare request.
ORIGINAL_ENGINE = "original"


@dataclass(frozen=True, eq=False)
class Rollout:
    """One sampled completion of a prompt, with what the learner needs for importance weights.

    Args:
        uid: unique id of this sample (the learner de-duplicates on it).
        group_id: id shared by the G samples of one prompt (GRPO group).
        prompt_uid: the `Prompt.uid` it answers.
        policy_version: version of the weights that sampled it.
        prompt_token_ids: `[prompt_len]` int32.
        response_token_ids: `[response_len]` int32.
        logprobs: `[response_len]` float32, behaviour-policy log-probability of each response token.
        sampling: the sampling parameters.
        finish_reason: "stop", "length", ...
        completion: the decoded response text.
        engine: generation engine name (e.g. "vllm", "transformers").
        created_at: unix time (s) the sample was finished.
        traceparent: W3C trace context `traceparent` header, "" when not traced.
        tracestate: W3C `tracestate` header, "" when none.
    """

    uid: str
    group_id: str
    prompt_uid: str
    policy_version: int
    prompt_token_ids: np.ndarray
    response_token_ids: np.ndarray
    logprobs: np.ndarray
    sampling: SamplingParams
    finish_reason: str
    completion: str
    engine: str
    created_at: float
    traceparent: str = ""
    tracestate: str = ""

    SCHEMA = "rollout/1"

    def __post_init__(self) -> None:
        for name, check in _ROLLOUT_FIELDS.items():
            set_frozen(self, name, check(getattr(self, name), name))
        if len(self.logprobs) != len(self.response_token_ids):
            raise SchemaError(
                f"field 'logprobs': need one logprob per response token, got {len(self.logprobs)} "
                f"logprobs for {len(self.response_token_ids)} response_token_ids")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rollout) and _fields_equal(self, other)

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable


@dataclass(frozen=True, eq=False)
class Scored:
    """A rollout with its reward and the provenance of that reward.

    Args:
        rollout: the scored rollout.
        reward: the scalar reward; None exactly when `status == "unavailable"`.
        components: named parts of the reward (e.g. {"recall@100": 0.4, "format": 0.1}).
        status: "ok", "invalid" (the policy's fault, shaped penalty) or "unavailable" (the
            engine's fault after retries; the group is masked out of the loss).
        query: the policy's query, the answer's value (in expand mode the engine searched the
            request followed by it: `QueryComposition.compose`), None when none could be parsed.
        retrieved_ids: the top few ids the engine returned, best first.
        backend: search backend name.
        index_version: version of the index that answered.
        latency_s: wall time of the search (including rate-limit waits and retries), seconds.
        retries: how many times the search was retried.
        cache_hit: whether the result came from the reward cache.
        error: the error message, None when there was none.
    """

    rollout: Rollout
    reward: float | None
    components: dict[str, float]
    status: RewardStatus
    query: str | None
    retrieved_ids: list[str]
    backend: str
    index_version: str
    latency_s: float
    retries: int
    cache_hit: bool
    error: str | None = None

    SCHEMA = "scored/1"

    def __post_init__(self) -> None:
        if not isinstance(self.rollout, Rollout):
            raise SchemaError(f"field 'rollout': expected Rollout, got {seen(self.rollout)}")
        for name, check in _SCORED_FIELDS.items():
            set_frozen(self, name, check(getattr(self, name), name))
        if self.status not in REWARD_STATUSES:
            raise SchemaError(f"field 'status': expected one of {REWARD_STATUSES}, got {self.status!r}")
        if (self.reward is None) != (self.status == "unavailable"):
            raise SchemaError(
                f"fields 'reward'/'status': reward must be None exactly when status is 'unavailable', "
                f"got reward={self.reward!r} with status={self.status!r}")
        if self.reward is not None and not math.isfinite(self.reward):
            raise SchemaError(f"field 'reward': must be finite, got {self.reward!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scored) and _fields_equal(self, other)

    __hash__ = None  # type: ignore[assignment]


WireMessage = Prompt | Rollout | Scored

_PROMPT_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "uid": check_str, "task": check_str, "dataset": check_str, "request": check_str, "messages": check_messages,
    "prefill": check_str, "target": check_str_map, "split": check_str,
}
_SAMPLING_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "temperature": check_float, "top_p": check_float, "max_new_tokens": check_int, "constrained": check_bool,
}
_ROLLOUT_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "uid": check_str, "group_id": check_str, "prompt_uid": check_str, "policy_version": check_int,
    "prompt_token_ids": check_token_array, "response_token_ids": check_token_array, "logprobs": check_logprob_array,
    "finish_reason": check_str, "completion": check_text, "engine": check_str, "created_at": check_float,
    "traceparent": check_str, "tracestate": check_str,
}
_SCORED_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "reward": check_opt_float, "components": check_str_float_map, "status": check_str, "query": check_opt_str,
    "retrieved_ids": check_str_list, "backend": check_str, "index_version": check_str, "latency_s": check_float,
    "retries": check_int, "cache_hit": check_bool, "error": check_opt_str,
}


def _fields_equal(a: object, b: object) -> bool:
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


# ---------------------------------------------------------------- maps <-> objects

def _to_map(msg: WireMessage) -> dict[str, Any]:
    if isinstance(msg, Prompt):
        return {"schema": Prompt.SCHEMA, **{name: getattr(msg, name) for name in _PROMPT_FIELDS}}
    if isinstance(msg, Rollout):
        out: dict[str, Any] = {"schema": Rollout.SCHEMA}
        for name in _ROLLOUT_FIELDS:
            value = getattr(msg, name)
            out[name] = value.tobytes() if isinstance(value, np.ndarray) else value
        out["sampling"] = {name: getattr(msg.sampling, name) for name in _SAMPLING_FIELDS}
        return out
    if isinstance(msg, Scored):
        out = {"schema": Scored.SCHEMA, "rollout": _to_map(msg.rollout)}
        out.update({name: getattr(msg, name) for name in _SCORED_FIELDS})
        return out
    raise TypeError(f"cannot encode {type(msg).__name__}; expected Prompt, Rollout or Scored")


def _check_keys(data: Mapping[str, Any], expected: set[str], path: str) -> None:
    missing = sorted(expected - set(data))
    if missing:
        raise SchemaError(f"{path}: missing field(s) {missing}")
    unknown = sorted(str(k) for k in set(data) - expected)
    if unknown:
        raise SchemaError(f"{path}: unknown field(s) {unknown}; a new field needs a new schema version")


def _read_fields(data: Mapping[str, Any], specs: Mapping[str, Callable[[Any, str], Any]], path: str) -> dict[str, Any]:
    prefix = f"{path}." if path else ""
    return {name: check(data[name], prefix + name) for name, check in specs.items() if name in data}


def _prompt_from_map(data: Mapping[str, Any], path: str) -> Prompt:
    _check_keys(data, {"schema", *_PROMPT_FIELDS}, path or "prompt/1")
    return Prompt(**_read_fields(data, _PROMPT_FIELDS, path))


def _rollout_from_map(data: Mapping[str, Any], path: str) -> Rollout:
    _check_keys(data, {"schema", "sampling", *_ROLLOUT_FIELDS}, path or "rollout/1")
    sampling = data["sampling"]
    spath = f"{path}.sampling" if path else "sampling"
    if not isinstance(sampling, Mapping):
        raise SchemaError(f"field {spath!r}: expected a map, got {seen(sampling)}")
    _check_keys(sampling, set(_SAMPLING_FIELDS), spath)
    return Rollout(sampling=SamplingParams(**_read_fields(sampling, _SAMPLING_FIELDS, spath)),
                   **_read_fields(data, _ROLLOUT_FIELDS, path))


def _scored_from_map(data: Mapping[str, Any], path: str) -> Scored:
    _check_keys(data, {"schema", "rollout", *_SCORED_FIELDS}, path or "scored/1")
    rollout = data["rollout"]
    if not isinstance(rollout, Mapping):
        raise SchemaError(f"field 'rollout': expected a map, got {seen(rollout)}")
    return Scored(rollout=_from_map(rollout, "rollout", expect=Rollout.SCHEMA), **_read_fields(data, _SCORED_FIELDS, path))


_READERS: dict[str, Callable[[Mapping[str, Any], str], WireMessage]] = {
    Prompt.SCHEMA: _prompt_from_map,
    Rollout.SCHEMA: _rollout_from_map,
    Scored.SCHEMA: _scored_from_map,
}


def _from_map(data: Mapping[str, Any], path: str = "", expect: str | None = None) -> Any:
    schema = data.get("schema")
    where = f"{path}.schema" if path else "schema"
    if schema is None:
        raise SchemaError(f"field {where!r}: missing; every wire message names its schema (e.g. 'rollout/1')")
    if not isinstance(schema, str):
        raise SchemaError(f"field {where!r}: expected str, got {seen(schema)}")
    reader = _READERS.get(schema)
    if reader is None:
        raise SchemaVersionError(
            f"schema {schema!r} is not one this code reads (known: {sorted(_READERS)}); "
            "upgrade this process or the writer to a common version")
    if expect is not None and schema != expect:
        raise SchemaError(f"field {where!r}: expected {expect!r}, got {schema!r}")
    try:
        return reader(data, path)
    except SchemaError:
        raise
    except (TypeError, ValueError) as e:  # e.g. numpy refusing a value while building arrays
        raise SchemaError(f"{schema}: {e}") from e


# ---------------------------------------------------------------- public codec

T = TypeVar("T", Prompt, Rollout, Scored)


def encode(msg: WireMessage) -> bytes:
    """Serialise a wire message to msgpack bytes.

    Args:
        msg: a Prompt, Rollout or Scored (already validated by its constructor).

    Returns:
        The msgpack map, with `schema` set and arrays packed little-endian.
    """
    return msgpack.packb(_to_map(msg), use_bin_type=True)


def decode(data: bytes) -> WireMessage:
    """Parse and validate msgpack bytes written by `encode`.

    Args:
        data: one message.

    Returns:
        The typed, validated message (Prompt, Rollout or Scored).

    Raises:
        SchemaVersionError: the `schema` names a kind/version this code does not read.
        SchemaError: not msgpack, not a map, or a field is missing, unknown, ill-typed, or an
            invariant fails (logprobs per token, reward None iff unavailable).
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # corrupt input raises several types
        raise SchemaError(f"not a msgpack message ({type(e).__name__}: {e}); got {len(data)} bytes") from e
    if not isinstance(obj, dict):
        raise SchemaError(f"a wire message must be a msgpack map with a 'schema' key, got {seen(obj)}")
    return _from_map(obj)


def decode_as(data: bytes, kind: type[T]) -> T:
    """Like `decode`, but also require the message to be of `kind`.

    Args:
        data: one message.
        kind: Prompt, Rollout or Scored.

    Returns:
        The message, typed as `kind`.

    Raises:
        SchemaVersionError, SchemaError: as `decode`; SchemaError also when the kind differs.
    """
    msg = decode(data)
    if not isinstance(msg, kind):
        raise SchemaError(f"expected a {kind.SCHEMA} message, got {type(msg).SCHEMA}")
    return msg
