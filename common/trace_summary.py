"""Where a sample's time goes, from the spans of a run (`deepretrieval trace summary FILE`).

Definitions (span and attribute names in `common/trace_names.py`):

- A *sample trace* is a trace holding an `rl.generate` or `rl.reward` span. It is *complete* when
  it holds `rl.generate`, `rl.reward` and at least one `rl.search.<backend>` span, and some
  `rl.train` span links to it. Samples whose completion broke the format are scored without a
  search, so they are never complete.
- Percentiles interpolate linearly between the two nearest ranks (numpy's default): the p-th
  percentile of sorted values v[0..n-1] is at rank p/100 * (n - 1).
- *Queue wait*: `queue.wait_s` of every `rl.reward` span (rollout created by the actor, just
  before publishing, to the rewarder starting on it).
- Per backend, over its `rl.search.<backend>` spans: *cache-hit rate* = searches answered from
  the cache / searches; *API latency* = `search.api_latency_s` (seconds inside the engine's own
  calls, all attempts) of the searches that were not cache hits (traces from before that
  attribute existed: the span's duration); *rate-limiter wait* = `ratelimit.wait_s` of the same
  searches; *retries* = sum of `search.retries`; *HTTP status counts* = every attempt's status
  (`search.http_statuses`, else the one `http.response.status_code`).
- *API wait share*: for each sample trace with an `rl.generate`, an `rl.reward` and at least one
  search, its search time S = sum of its `rl.search.*` span durations (rate-limiter waits,
  backoff and cache lookups included: all the time the sample waits for the engine) and its
  latency L = end of its last `rl.reward` - start of its `rl.generate` (generation, queueing,
  scoring). Reported as the ratio of sums, sum(S) / sum(L), the share of all sample time, and as
  the median of the per-trace S / L.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import median

from deepretrieval.common import trace_names as names
from deepretrieval.common.trace_file import SpanRecord, read_trace_file

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of `values`, linearly interpolated between nearest ranks.

    Raises:
        ValueError: `values` is empty or p is outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class Distribution:
    """Count and p50/p95/p99 of some values (None when there are none)."""

    n: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        vals = list(values)
        if not vals:
            return cls(0)
        return cls(len(vals), *(percentile(vals, p) for p in PERCENTILES))


@dataclass(frozen=True)
class BackendSummary:
    """The searches of one backend.

    Args:
        searches: `rl.search.<backend>` spans.
        cache_hits: searches answered from the cache.
        cache_hit_rate: cache_hits / searches.
        retries: retries over all searches.
        searches_retried: searches with at least one retry.
        errors: searches that failed (syntax or unavailable).
        http_status: HTTP status -> attempts answered with it.
        api_latency_s: seconds inside the engine's calls, searches that were not cache hits.
        ratelimit_wait_s: seconds in the rate limiter, the same searches.
    """

    searches: int
    cache_hits: int
    cache_hit_rate: float
    retries: int
    searches_retried: int
    errors: int
    http_status: dict[str, int]
    api_latency_s: Distribution
    ratelimit_wait_s: Distribution


@dataclass(frozen=True)
class TraceCounts:
    """How far the sample traces got: generated, scored, searched, trained, complete (all four)."""

    samples: int
    generated: int
    scored: int
    searched: int
    trained: int
    complete: int


@dataclass(frozen=True)
class ApiWaitShare:
    """Share of sample latency spent in searches (see the module docstring)."""

    traces: int
    ratio_of_sums: float | None
    median: float | None


@dataclass(frozen=True)
class TraceSummary:
    """Everything `trace summary` reports."""

    spans: int
    spans_by_name: dict[str, int]
    traces: TraceCounts
    reward_status: dict[str, int]
    queue_wait_s: Distribution
    backends: dict[str, BackendSummary]
    api_wait_share: ApiWaitShare
    source: str = ""
    bad_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _http_statuses(span: SpanRecord) -> list[int]:
    many = span.attributes.get(names.HTTP_STATUSES)
    if isinstance(many, list):
        return [int(s) for s in many if _number(s) is not None]
    one = _number(span.attributes.get(names.HTTP_STATUS, span.attributes.get(names.LEGACY_HTTP_STATUS)))
    return [int(one)] if one is not None else []


def _backend_summary(searches: list[SpanRecord]) -> BackendSummary:
    hits = [s for s in searches if s.attributes.get(names.CACHE_HIT) is True]
    called = [s for s in searches if s.attributes.get(names.CACHE_HIT) is not True]
    retries = [int(_number(s.attributes.get(names.SEARCH_RETRIES)) or 0) for s in searches]
    statuses = Counter(code for s in searches for code in _http_statuses(s))
    api = [_number(s.attributes.get(names.SEARCH_API_LATENCY_S)) for s in called]
    return BackendSummary(
        searches=len(searches), cache_hits=len(hits), cache_hit_rate=len(hits) / len(searches),
        retries=sum(retries), searches_retried=sum(r > 0 for r in retries),
        errors=sum(s.status == "ERROR" for s in searches),
        http_status={str(code): n for code, n in sorted(statuses.items())},
        api_latency_s=Distribution.of(a if a is not None else s.duration_s for a, s in zip(api, called)),
        ratelimit_wait_s=Distribution.of(w for s in called if (w := _number(s.attributes.get(names.RATELIMIT_WAIT_S))) is not None),
    )


def _api_wait_share(by_trace: dict[str, list[SpanRecord]]) -> ApiWaitShare:
    shares: list[float] = []
    search_s = latency_s = 0.0
    for spans in by_trace.values():
        generate = [s for s in spans if s.name == names.GENERATE]
        rewards = [s for s in spans if s.name == names.REWARD_SPAN]
        searches = [s for s in spans if names.search_backend_of(s.name) is not None]
        if not (generate and rewards and searches):
            continue
        latency = (max(r.end_ns for r in rewards) - min(g.start_ns for g in generate)) / 1e9
        if latency <= 0:
            continue
        waited = sum(s.duration_s for s in searches)
        shares.append(waited / latency)
        search_s += waited
        latency_s += latency
    if not shares:
        return ApiWaitShare(0, None, None)
    return ApiWaitShare(len(shares), search_s / latency_s, median(shares))


def summarize(spans: Sequence[SpanRecord]) -> TraceSummary:
    """The summary of a run's spans (see the module docstring for every definition)."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    trained: set[str] = set()
    by_backend: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
        if s.name == names.TRAIN:
            trained.update(link.trace_id for link in s.links)
        backend = names.search_backend_of(s.name)
        if backend is not None:
            by_backend[backend].append(s)
    samples = {t: {s.name for s in ss} for t, ss in by_trace.items()
               if any(s.name in (names.GENERATE, names.REWARD_SPAN) for s in ss)}

    def has_search(span_names: set[str]) -> bool:
        return any(names.search_backend_of(n) is not None for n in span_names)

    counts = TraceCounts(
        samples=len(samples),
        generated=sum(names.GENERATE in n for n in samples.values()),
        scored=sum(names.REWARD_SPAN in n for n in samples.values()),
        searched=sum(has_search(n) for n in samples.values()),
        trained=sum(t in trained for t in samples),
        complete=sum(names.GENERATE in n and names.REWARD_SPAN in n and has_search(n) and t in trained for t, n in samples.items()),
    )
    rewards = [s for s in spans if s.name == names.REWARD_SPAN]
    notes = []
    if not any(names.SEARCH_API_LATENCY_S in s.attributes for ss in by_backend.values() for s in ss) and by_backend:
        notes.append(f"no {names.SEARCH_API_LATENCY_S} attribute (older trace): API latency is the search span's duration")
    return TraceSummary(
        spans=len(spans),
        spans_by_name=dict(sorted(Counter(s.name for s in spans).items())),
        traces=counts,
        reward_status=dict(sorted(Counter(str(s.attributes.get(names.REWARD_STATUS, "?")) for s in rewards).items())),
        queue_wait_s=Distribution.of(w for s in rewards if (w := _number(s.attributes.get(names.QUEUE_WAIT_S))) is not None),
        backends={b: _backend_summary(ss) for b, ss in sorted(by_backend.items())},
        api_wait_share=_api_wait_share(by_trace),
        notes=notes,
    )


def summarize_file(path: Path) -> TraceSummary:
    """Read a JSON-lines trace file and summarize it.

    Raises:
        TraceFileError: the file is missing, empty or has no valid span.
    """
    trace_file = read_trace_file(path)
    summary = summarize(trace_file.spans)
    return replace(summary, source=str(trace_file.path), bad_lines=trace_file.bad_lines)
