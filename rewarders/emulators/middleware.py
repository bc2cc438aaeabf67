"""The request pipeline both emulators share: latency, rate limit, faults, headers, a DEBUG log line.

Order per request: injected latency, then the per-key rate limit (a real service refuses at its
edge before any work), then the injected fault (429 burst, 5xx, hang, bad body), then the API
handler. Every answer carries `X-Index-Version` so clients can key caches by the index served.
With a tracer, each request is one SERVER span (`<METHOD> <path>`) continuing the client's
`traceparent`, so an emulated API call shows up under the sample's `rl.search.<backend>` span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from opentelemetry import trace

from deepretrieval.common import trace_names as names
from deepretrieval.common.telemetry import extract_context
from deepretrieval.rewarders.emulators.faults import FaultInjector, FaultKind, FaultPlan, mangle_body
from deepretrieval.rewarders.emulators.server_rate_limit import RateDecision, SlidingWindowLimiter

log = logging.getLogger(__name__)

INDEX_VERSION_HEADER = "X-Index-Version"
_NO_FAULT = FaultPlan(0.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiHooks:
    """What differs between the emulated APIs inside the shared pipeline.

    Args:
        rate_key: the request's rate-limit key and whether it is an API key (else the address).
        too_many_requests: the API's 429 answer for a refused request and its key.
        server_error: the API's answer for an injected 5xx status.
        rate_headers: send `X-RateLimit-Limit`/`-Remaining` (NCBI does, ClinicalTrials.gov not).
    """

    rate_key: Callable[[web.Request], Awaitable[tuple[str, bool]]]
    too_many_requests: Callable[[RateDecision, str], web.Response]
    server_error: Callable[[int], web.Response]
    rate_headers: bool


STATS_PATH = "/_emulator/stats"


@dataclass
class ServerStats:
    """Answers the emulator gave, by HTTP status (an emulator-only extension at `GET /_emulator/stats`,
    so benchmarks can count what the server saw rather than what clients believe they sent)."""

    requests: int = 0
    by_status: dict[int, int] | None = None
    started_at: float = 0.0

    def count(self, status: int) -> None:
        self.requests += 1
        if self.by_status is None:
            self.by_status = {}
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def to_json(self) -> dict[str, object]:
        return {"requests": self.requests, "by_status": {str(k): v for k, v in sorted((self.by_status or {}).items())},
                "started_at": self.started_at, "now": time.time()}


@dataclass(frozen=True)
class RateLimits:
    """The server's quota per window.

    Args:
        limiter: the sliding-window limiter; None = no limit (benchmarks).
        limit: requests per window without an API key (per client address).
        limit_with_key: requests per window with an API key (per key).
    """

    limiter: SlidingWindowLimiter | None
    limit: int
    limit_with_key: int


def make_pipeline(hooks: ApiHooks, limits: RateLimits, injector: FaultInjector, *, index_version: str, hang_s: float, retry_after_s: int,
                  stats: ServerStats | None = None, tracer: trace.Tracer | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Build the aiohttp middleware of one emulator.

    Args:
        hooks: the API's own answers.
        limits: the quota.
        injector: the fault generator (inactive = no draws, no latency).
        index_version: sent in `X-Index-Version` with every answer.
        hang_s: how long an injected hang waits before answering.
        retry_after_s: Retry-After of injected 429 answers.
        stats: counts every API answer by status (the stats route itself is not counted).
        tracer: when given, one SERVER span per API request (None: no spans, no overhead).

    Returns:
        The middleware.
    """

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == STATS_PATH:
            return await handler(request)
        if tracer is None:
            return await _serve(request, handler)
        parent = extract_context(request.headers.get("traceparent"), request.headers.get("tracestate"))
        with tracer.start_as_current_span(f"{request.method} {request.path}", context=parent, kind=trace.SpanKind.SERVER,
                                          attributes={names.HTTP_METHOD: request.method, names.URL_PATH: request.path}) as span:
            response = await _serve(request, handler, span)
            span.set_attribute(names.HTTP_STATUS, response.status)
            return response

    async def _serve(request: web.Request, handler: Handler, span: trace.Span | None = None) -> web.StreamResponse:
        t0 = time.perf_counter()
        plan = injector.plan() if injector.active else _NO_FAULT
        if span is not None:
            span.set_attribute(names.EMULATOR_FAULT, plan.kind.value)
        if plan.latency_s > 0:
            await asyncio.sleep(plan.latency_s)
        response = await _answer(request, handler, plan)
        response.headers[INDEX_VERSION_HEADER] = index_version
        if stats is not None:
            stats.count(response.status)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d in %.1f ms (fault=%s)", request.method, request.path, response.status, (time.perf_counter() - t0) * 1000, plan.kind.value)
        return response

    async def _answer(request: web.Request, handler: Handler, plan: FaultPlan) -> web.StreamResponse:
        decision: RateDecision | None = None
        if limits.limiter is not None:
            key, has_key = await hooks.rate_key(request)
            decision = limits.limiter.check(key, limits.limit_with_key if has_key else limits.limit)
            if not decision.allowed:
                response = hooks.too_many_requests(decision, key)
                response.headers["Retry-After"] = str(max(1, int(decision.retry_after_s + 0.999)))
                return _with_rate_headers(response, decision)
        if plan.kind is FaultKind.BURST_429:
            key, _ = await hooks.rate_key(request)
            burst = RateDecision(False, limits.limit + 1, limits.limit, 0, float(retry_after_s))
            response = hooks.too_many_requests(burst, key)
            response.headers["Retry-After"] = str(retry_after_s)
            return response
        if plan.kind is FaultKind.ERROR_5XX:
            return hooks.server_error(plan.status)
        if plan.kind is FaultKind.HANG:
            await asyncio.sleep(hang_s)
        response = await handler(request)
        if plan.kind is FaultKind.GARBAGE and response.status == 200 and isinstance(response, web.Response) and response.body is not None:
            response.body = mangle_body(bytes(response.body), plan)
        return _with_rate_headers(response, decision)

    def _with_rate_headers(response: web.StreamResponse, decision: RateDecision | None) -> web.StreamResponse:
        if hooks.rate_headers and decision is not None:
            response.headers["X-RateLimit-Limit"] = str(decision.limit)
            response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        return response

    return pipeline
