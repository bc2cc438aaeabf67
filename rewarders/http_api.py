"""One HTTP request to a search API, with its failures mapped onto our error types.

Shared by the PubMed and ClinicalTrials.gov clients. Exactly one request per call: retries,
backoff and the cluster-wide rate limiter live in the rewarder, not here. The API key is
redacted from every message built here.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from deepretrieval.common.errors import BackendUnavailable, RateLimited
from deepretrieval.common.telemetry import inject_context

INDEX_VERSION_HEADER = "X-Index-Version"
_SNIPPET_CHARS = 120


@dataclass(frozen=True)
class HttpAnswer:
    """A complete HTTP answer.

    Args:
        status: the HTTP status.
        headers: the response headers.
        body: the whole body.
    """

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by `***`."""
    return text.replace(secret, "***") if secret else text


def snippet(body: bytes, secret: str | None) -> str:
    """The start of a body for an error message (never the whole payload), key redacted."""
    text = body[:_SNIPPET_CHARS].decode("utf-8", errors="replace")
    return redact(text + ("..." if len(body) > _SNIPPET_CHARS else ""), secret)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def send(session: aiohttp.ClientSession, method: str, url: str, *, api: str, timeout_s: float,
               params: Mapping[str, str] | None = None, data: Mapping[str, str] | None = None, secret: str | None = None) -> HttpAnswer:
    """Send one request and read the whole answer within `timeout_s`.

    The current span's W3C `traceparent` goes along (when there is one), so a server that traces,
    like our emulators, continues the sample's trace.

    Args:
        session: the process's shared session.
        method: GET or POST.
        url: the endpoint (holds no secret; keys travel in `data`).
        api: the backend name, for messages.
        timeout_s: limit for connecting, sending and reading the whole body.
        params: query-string parameters.
        data: form body parameters.
        secret: the API key, redacted from messages.

    Returns:
        The answer, whatever its status.

    Raises:
        BackendUnavailable: timeout, connection failure, or a body cut short.
    """
    where = redact(url, secret)
    try:
        async with session.request(method, url, params=params, data=data, headers=inject_context() or None,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.read()
            return HttpAnswer(resp.status, resp.headers, body)
    except asyncio.TimeoutError as e:
        raise BackendUnavailable(f"{api}: no complete answer from {where} within {timeout_s:g} s (timeout_s)") from e
    except aiohttp.ClientPayloadError as e:
        raise BackendUnavailable(f"{api}: answer from {where} was cut short: {redact(str(e), secret)}") from e
    except aiohttp.ClientConnectionError as e:
        raise BackendUnavailable(f"{api}: cannot reach {where}: {redact(str(e), secret)}") from e
    except aiohttp.ClientError as e:
        raise BackendUnavailable(f"{api}: request to {where} failed: {type(e).__name__}: {redact(str(e), secret)}") from e


def raise_for_transport_status(answer: HttpAnswer, *, api: str, url: str, secret: str | None) -> None:
    """Map 429 and 5xx answers onto our errors (other statuses are the caller's to read).

    Raises:
        RateLimited: HTTP 429, with Retry-After when the server sent one.
        BackendUnavailable: HTTP 5xx.
    """
    if answer.status == 429:
        retry = parse_retry_after(answer.headers.get("Retry-After"))
        raise RateLimited(f"{api}: HTTP 429 from {redact(url, secret)}: {snippet(answer.body, secret)}", retry_after_s=retry, http_status=429)
    if answer.status >= 500:
        raise BackendUnavailable(f"{api}: HTTP {answer.status} from {redact(url, secret)}: {snippet(answer.body, secret)}",
                                 http_status=answer.status)


def decode_json(answer: HttpAnswer, *, api: str, url: str, secret: str | None) -> dict[str, Any]:
    """The JSON object of a body.

    Raises:
        BackendUnavailable: the body is not a JSON object (truncated, HTML, garbage).
    """
    try:
        data = json.loads(answer.body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BackendUnavailable(f"{api}: unparseable answer from {redact(url, secret)} (HTTP {answer.status}, {len(answer.body)} bytes): {snippet(answer.body, secret)!r}",
                                 http_status=answer.status) from e
    if not isinstance(data, dict):
        raise BackendUnavailable(f"{api}: answer from {redact(url, secret)} is JSON but not an object: {snippet(answer.body, secret)!r}",
                                 http_status=answer.status)
    return data


class ServerVersion:
    """The index version a client reports: `<api>@<base url>#<what the server said, else a label>`.

    Servers that name their data version (our emulators' `X-Index-Version`, PubMed einfo,
    ClinicalTrials.gov /version) update it; the version keys the reward cache.
    """

    def __init__(self, api: str, base_url: str, label: str):
        self._prefix = f"{api}@{base_url}"
        self._label = label
        self._reported: str | None = None

    @property
    def value(self) -> str:
        return f"{self._prefix}#{self._reported or self._label}"

    def note(self, answer: HttpAnswer) -> None:
        """Take the version from an answer's `X-Index-Version` header, when it has one."""
        reported = answer.headers.get(INDEX_VERSION_HEADER)
        if reported:
            self._reported = reported

    def set(self, reported: str) -> None:
        self._reported = reported
