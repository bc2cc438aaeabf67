"""The HTTP contract of the rewriting endpoint: request validation, answers and JSON errors.

Pure functions (no Ray, no model), so every bad input is decided here before it can reach the
engine. An error is `{"error": {"code": ..., "message": ...}}` with the HTTP status of `ApiError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deepretrieval.actors.rewrite import Rewrite
from deepretrieval.common.query_composition import QueryComposition
from deepretrieval.common.serve_config import ServeConfig
from deepretrieval.common.tasks import get_task

REWRITE_PATH = "/v1/rewrite"
HEALTH_PATH = "/healthz"
ROUTES: dict[str, str] = {REWRITE_PATH: "POST", HEALTH_PATH: "GET"}
"""Path -> the one method it answers."""

_FIELDS: dict[str, type] = {"query": str, "task": str, "n": int, "return_reasoning": bool, "search": bool}
_JSON_TYPES = {str: "a string", int: "an integer", bool: "true or false"}


class ApiError(Exception):
    """A request the endpoint refuses.

    Args:
        status: the HTTP status (400, 404, 405, 413, 503, ...).
        code: a stable machine-readable code, e.g. 'invalid_json', 'query_too_long'.
        message: what was wrong, the value seen and what is allowed.
        headers: extra response headers (e.g. Allow on 405).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class RewriteRequest:
    """A validated `POST /v1/rewrite` body."""

    query: str
    task: str
    n: int = 1
    return_reasoning: bool = False
    search: bool = False


def check_route(method: str, path: str) -> None:
    """Raise the 404 or 405 a request to `path` with `method` deserves; return when it is routed.

    Args:
        method: the HTTP method.
        path: the path below the application's route prefix.
    """
    allowed = ROUTES.get(path.rstrip("/") or "/")
    if allowed is None:
        raise ApiError(404, "not_found", f"no route {path!r}; routes: POST {REWRITE_PATH}, GET {HEALTH_PATH}")
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise ApiError(405, "method_not_allowed", f"{method} {path} is not allowed; use {allowed}", {"Allow": allowed})


def max_body_bytes(config: ServeConfig) -> int:
    """The largest request body read: the longest query in UTF-8 (4 bytes a character, JSON escapes
    6 for some) plus room for the other fields."""
    return 6 * config.max_query_chars + 4096


def parse_rewrite_request(body: bytes, config: ServeConfig) -> RewriteRequest:
    """Validate a `POST /v1/rewrite` body.

    Args:
        body: the raw request body.
        config: limits (max_query_chars, max_n), the default task and the served tasks.

    Returns:
        The request.

    Raises:
        ApiError: 400 (not JSON, not an object, unknown field, wrong type, missing or empty query,
            unknown task, bad n, search without a backend), 413 (query or body too long).
    """
    if len(body) > max_body_bytes(config):
        raise ApiError(413, "body_too_large", f"the body is {len(body)} bytes; at most {max_body_bytes(config)} are read "
                                              f"(the query may have {config.max_query_chars} characters)")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, "invalid_json", f"the body is not JSON ({str(e)[:80]}); send {{\"query\": \"...\"}}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object like {{\"query\": \"...\"}}, got a JSON {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s) {unknown}; allowed: {list(_FIELDS)}")
    for name, kind in _FIELDS.items():
        value = data.get(name)
        # bool is a subclass of int in Python, but `true` is not a count.
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ApiError(400, "invalid_type", f"{name!r} must be {_JSON_TYPES[kind]}, got {json.dumps(value)[:40]}")
    query = data.get("query")
    if query is None:
        raise ApiError(400, "missing_query", 'the body has no "query"; send {"query": "..."}')
    if not query.strip():
        raise ApiError(400, "empty_query", '"query" is empty or only whitespace')
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_query", '"query" holds a lone surrogate escape (e.g. \\ud800) and is not valid Unicode text') from None
    if len(query) > config.max_query_chars:
        raise ApiError(413, "query_too_long", f'"query" has {len(query)} characters; at most {config.max_query_chars} are accepted')
    task = config.task if data.get("task") is None else data["task"]
    if task not in config.tasks:
        raise ApiError(400, "unknown_task", f"unknown task {task!r}; this endpoint serves: {', '.join(config.tasks)}")
    n = data.get("n", 1)
    if not 1 <= n <= config.max_n:
        raise ApiError(400, "invalid_n", f'"n" must be between 1 and {config.max_n}, got {n}')
    search = bool(data.get("search", False))
    if search:
        check_search(task, config)
    return RewriteRequest(query=query, task=task, n=n, return_reasoning=bool(data.get("return_reasoning", False)), search=search)


def check_search(task: str, config: ServeConfig) -> None:
    """Raise the 400 a search request deserves when there is no backend for `task`."""
    if config.backend is None:
        raise ApiError(400, "search_unavailable", 'this endpoint has no search backend configured; leave out "search" or set backend')
    wanted = get_task(task).backend
    if wanted != config.backend.type:
        raise ApiError(400, "search_unavailable", f"task {task!r} is scored on a {wanted!r} backend; this endpoint searches {config.backend.type!r}")


def rewrite_answer(request: RewriteRequest, chosen: Rewrite, *, model: str, policy_version: int,
                   composition: QueryComposition | None = None) -> dict[str, Any]:
    """The JSON answer for one rewrite; a broken format falls back to the original query.

    Args:
        request: the validated request.
        chosen: the rewrite picked from the request's completions (`actors.rewrite.first_valid`).
        model: the served model's name.
        policy_version: the served policy version.
        composition: the task's query composition; "query" is the query to search, so for an
            expanding task the request followed by the policy's terms (those alone in "rewrite").
    """
    fallback = chosen.query is None
    compose = composition or QueryComposition()
    expanded = {"rewrite": chosen.query} if compose.mode == "expand" and not fallback else {}
    return {
        "query": request.query if fallback else compose.compose(request.query, chosen.query),
        **expanded,
        "reasoning": chosen.reasoning if request.return_reasoning else None,
        "model": model,
        "policy_version": policy_version,
        "task": request.task,
        "fallback": fallback,
        "fallback_reason": f"{chosen.error}: {chosen.message}" if fallback else None,
    }
