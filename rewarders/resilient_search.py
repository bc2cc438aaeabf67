"""Search with the cluster-wide rate limit, retries and the result cache: the one place they live.

Every backend call of the rewarders, the evaluation of API tasks and the serving endpoint goes
through `ResilientSearch.search`, so rate limiting, `Retry-After`, exponential backoff with
jitter, timeouts and caching behave the same everywhere. After the retry budget the search raises
`BackendUnavailable`: the reward becomes `unavailable` (never 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass, field

from opentelemetry import baggage, trace
from opentelemetry.trace import Status, StatusCode

from deepretrieval.common import trace_names as names
from deepretrieval.common.errors import BackendUnavailable, DeepRetrievalError, QuerySyntaxError, RateLimited
from deepretrieval.common.run_config import RetryConfig
from deepretrieval.rewarders.base import SearchBackend, SearchResult
from deepretrieval.rewarders.rate_limiter import RateLimiter
from deepretrieval.rewarders.reward_cache import RewardCache


@dataclass
class _AttemptStats:
    """What one search's attempts cost, for its span and its answer's `meta`."""

    retries: int = 0
    limiter_wait_s: float = 0.0
    backoff_s: float = 0.0
    api_s: float = 0.0
    http_statuses: list[int] = field(default_factory=list)

    def span_attributes(self) -> dict[str, object]:
        attrs: dict[str, object] = {names.SEARCH_RETRIES: self.retries, names.RATELIMIT_WAIT_S: round(self.limiter_wait_s, 6),
                                    names.SEARCH_BACKOFF_S: round(self.backoff_s, 6), names.SEARCH_API_LATENCY_S: round(self.api_s, 6)}
        if self.http_statuses:
            attrs[names.HTTP_STATUS] = self.http_statuses[-1]
            attrs[names.HTTP_STATUSES] = list(self.http_statuses)
        return attrs


class ResilientSearch:
    """One backend behind the rate limiter, retries and cache; itself a SearchBackend.

    The answer's `retries` counts retries, and `meta` gains `cache_hit`, `limiter_wait_s` and
    `latency_s`. Every search, cache hits included, is one `rl.search.<backend>` span carrying
    the cost of its attempts (see `common/trace_names.py`); OpenTelemetry baggage entries named
    `rl.*` (the rewarder sets `rl.uid`, `rl.policy_version`) are copied onto it.

    Args:
        backend: the search backend.
        retry: the retry policy.
        limiter: the cluster-wide limiter; None for local backends with no quota.
        limiter_key: the key the quota is counted under (API key or backend name).
        cache: the result cache; None to always search.
        cache_kind: backend kind choosing the cache's query normaliser (default: backend name).
        tracer: OpenTelemetry tracer for `rl.search.<backend>` spans.
    """

    def __init__(self, backend: SearchBackend, retry: RetryConfig, *, limiter: RateLimiter | None = None,
                 limiter_key: str | None = None, cache: RewardCache | None = None, cache_kind: str | None = None,
                 tracer: trace.Tracer | None = None):
        self.backend = backend
        self._retry = retry
        self._limiter = limiter
        self._limiter_key = limiter_key or backend.name
        self._cache = cache
        self._cache_kind = cache_kind
        self._tracer = tracer or trace.get_tracer("deepretrieval")

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def version(self) -> str:
        return self.backend.version

    async def close(self) -> None:
        await self.backend.close()

    async def search(self, query: str, k: int) -> SearchResult:
        """Search `query` for `k` ids.

        Args:
            query: the query the policy wrote.
            k: ids wanted.

        Raises:
            QuerySyntaxError: the engine rejected the query's syntax (the policy's fault).
            BackendUnavailable: no answer within the retry budget (the engine's fault).
        """
        t0 = time.perf_counter()
        stats = _AttemptStats()
        attributes = {k_: v for k_, v in baggage.get_all().items() if k_.startswith(names.BAGGAGE_PREFIX)}
        with self._tracer.start_as_current_span(names.search_span(self.backend.name)) as span:
            span.set_attributes({names.SEARCH_BACKEND: self.backend.name, names.SEARCH_INDEX_VERSION: self.backend.version,
                                 names.SEARCH_K: k, **attributes})

            async def load() -> SearchResult:
                return await self._search_with_retries(query, k, stats, span)

            try:
                if self._cache is None:
                    result, hit = await load(), False
                else:
                    answer = await self._cache.get_or_load(self.backend.name, self.backend.version, query, k, load, kind=self._cache_kind)
                    result, hit = answer.result, answer.hit
                span.set_attribute(names.CACHE_HIT, hit)
            finally:
                span.set_attributes(stats.span_attributes())
        meta = {**result.meta, "cache_hit": hit, "limiter_wait_s": stats.limiter_wait_s, "latency_s": time.perf_counter() - t0}
        return dataclasses.replace(result, retries=0 if hit else stats.retries, meta=meta)

    def _backoff(self, retry: int) -> float:
        cap = min(self._retry.backoff_max_s, self._retry.backoff_base_s * 2 ** (retry - 1))
        return random.uniform(cap / 2, cap)

    async def _attempt(self, query: str, k: int, stats: _AttemptStats) -> SearchResult:
        """One call of the engine within the timeout; its time and HTTP status go to `stats`."""
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.backend.search(query, k), self._retry.timeout_s)
        except DeepRetrievalError as e:
            if getattr(e, "http_status", None) is not None:
                stats.http_statuses.append(e.http_status)  # type: ignore[attr-defined]
            raise
        finally:
            stats.api_s += time.perf_counter() - t0
        if result.http_status is not None:
            stats.http_statuses.append(result.http_status)
        return result

    async def _search_with_retries(self, query: str, k: int, stats: _AttemptStats, span: trace.Span) -> SearchResult:
        name = self.backend.name
        started = time.monotonic()
        last: Exception | None = None
        for attempt in range(1, self._retry.max_attempts + 1):
            if self._limiter is not None:
                waited = await self._limiter.acquire(self._limiter_key)
                stats.limiter_wait_s += waited
            try:
                result = await self._attempt(query, k, stats)
            except QuerySyntaxError as e:
                span.set_attribute(names.SEARCH_ERROR, "syntax")
                span.set_status(Status(StatusCode.ERROR, str(e)[:200]))
                raise
            except RateLimited as e:
                last = e
                # Honour Retry-After, but never retry a refusal faster than the backoff would.
                pause = max(e.retry_after_s if e.retry_after_s is not None else self._retry.retry_after_default_s,
                            self._backoff(attempt))
                if self._limiter is not None:
                    await self._limiter.penalize(self._limiter_key, pause)
                else:
                    await asyncio.sleep(pause)
                    stats.backoff_s += pause
                span.add_event(names.EVENT_RATE_LIMITED, {names.EVENT_ATTEMPT: attempt, names.EVENT_RETRY_AFTER_S: pause})
                wait = 0.0
            except (BackendUnavailable, asyncio.TimeoutError, OSError) as e:
                last = e if not isinstance(e, asyncio.TimeoutError) else BackendUnavailable(f"{name}: no answer within {self._retry.timeout_s}s")
                wait = self._backoff(attempt)
                span.add_event(names.EVENT_RETRY, {names.EVENT_ATTEMPT: attempt, names.EVENT_ERROR: str(last)[:200], names.EVENT_BACKOFF_S: wait})
            else:
                return dataclasses.replace(result, retries=stats.retries)
            if attempt == self._retry.max_attempts or time.monotonic() - started + wait > self._retry.budget_s:
                break
            stats.retries += 1
            if wait:
                await asyncio.sleep(wait)
                stats.backoff_s += wait
        err = BackendUnavailable(f"{name}: gave up after {stats.retries + 1} attempt(s) in {time.monotonic() - started:.1f}s: {last}",
                                 http_status=getattr(last, "http_status", None))
        span.set_attribute(names.SEARCH_ERROR, "unavailable")
        span.set_status(Status(StatusCode.ERROR, str(err)[:200]))
        raise err from last
