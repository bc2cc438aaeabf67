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
from dataclasses import dataclass

from opentelemetry import baggage, trace
from opentelemetry.trace import Status, StatusCode

from deepretrieval.common.errors import BackendUnavailable, QuerySyntaxError, RateLimited
from deepretrieval.common.run_config import RetryConfig
from deepretrieval.rewarders.base import SearchBackend, SearchResult
from deepretrieval.rewarders.rate_limiter import RateLimiter
from deepretrieval.rewarders.reward_cache import RewardCache


@dataclass
class _AttemptStats:
    retries: int = 0
    limiter_wait_s: float = 0.0


class ResilientSearch:
    """One backend behind the rate limiter, retries and cache; itself a SearchBackend.

    The answer's `retries` counts retries, and `meta` gains `cache_hit`, `limiter_wait_s` and
    `latency_s`. OpenTelemetry baggage entries named `rl.*` (the rewarder sets `rl.uid`,
    `rl.policy_version`) are copied onto the `rl.search.<backend>` span.

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
        attributes = {k_: v for k_, v in baggage.get_all().items() if k_.startswith("rl.")}

        async def load() -> SearchResult:
            return await self._search_with_retries(query, k, stats, attributes)

        if self._cache is None:
            result, hit = await load(), False
        else:
            answer = await self._cache.get_or_load(self.backend.name, self.backend.version, query, k, load, kind=self._cache_kind)
            result, hit = answer.result, answer.hit
        meta = {**result.meta, "cache_hit": hit, "limiter_wait_s": stats.limiter_wait_s, "latency_s": time.perf_counter() - t0}
        return dataclasses.replace(result, retries=0 if hit else stats.retries, meta=meta)

    def _backoff(self, retry: int) -> float:
        cap = min(self._retry.backoff_max_s, self._retry.backoff_base_s * 2 ** (retry - 1))
        return random.uniform(cap / 2, cap)

    async def _search_with_retries(self, query: str, k: int, stats: _AttemptStats, attributes: dict[str, object]) -> SearchResult:
        name = self.backend.name
        started = time.monotonic()
        last: Exception | None = None
        with self._tracer.start_as_current_span(f"rl.search.{name}") as span:
            span.set_attributes({"search.backend": name, "search.index_version": self.backend.version, "search.k": k, **attributes})
            for attempt in range(1, self._retry.max_attempts + 1):
                if self._limiter is not None:
                    waited = await self._limiter.acquire(self._limiter_key)
                    stats.limiter_wait_s += waited
                try:
                    result = await asyncio.wait_for(self.backend.search(query, k), self._retry.timeout_s)
                except QuerySyntaxError as e:
                    span.set_attributes(self._span_attrs(stats, None, error="syntax"))
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
                    span.add_event("rate_limited", {"attempt": attempt, "retry_after_s": pause})
                    wait = 0.0
                except (BackendUnavailable, asyncio.TimeoutError, OSError) as e:
                    last = e if not isinstance(e, asyncio.TimeoutError) else BackendUnavailable(f"{name}: no answer within {self._retry.timeout_s}s")
                    wait = self._backoff(attempt)
                    span.add_event("retry", {"attempt": attempt, "error": str(last)[:200], "backoff_s": wait})
                else:
                    result = dataclasses.replace(result, retries=stats.retries)
                    span.set_attributes(self._span_attrs(stats, result.http_status))
                    return result
                if attempt == self._retry.max_attempts or time.monotonic() - started + wait > self._retry.budget_s:
                    break
                stats.retries += 1
                if wait:
                    await asyncio.sleep(wait)
            err = BackendUnavailable(f"{name}: gave up after {stats.retries + 1} attempt(s) in {time.monotonic() - started:.1f}s: {last}")
            span.set_attributes(self._span_attrs(stats, getattr(last, "http_status", None), error="unavailable"))
            span.set_status(Status(StatusCode.ERROR, str(err)[:200]))
            raise err from last

    @staticmethod
    def _span_attrs(stats: _AttemptStats, http_status: int | None, error: str | None = None) -> dict[str, object]:
        attrs: dict[str, object] = {"search.retries": stats.retries, "ratelimit.wait_s": round(stats.limiter_wait_s, 6)}
        if http_status is not None:
            attrs["http.status_code"] = http_status
        if error:
            attrs["search.error"] = error
        return attrs
