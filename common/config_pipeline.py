"""Config models of the pipeline plumbing: the stream transport, rate limits, the reward cache.

They live in `common` so the run's root config can compose them; the code they configure lives in
`common/streams.py`, `rewarders/rate_limiter.py` and `rewarders/reward_cache.py`. No torch/vLLM here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepretrieval.common.config import StrictModel


class TransportConfig(StrictModel):
    """Redis Streams transport between actors, rewarders and the learner (DESIGN.md §4 "Streams")."""

    type: Literal["redis"] = Field("redis", description="Transport backend; only 'redis' (Redis Streams) exists.")
    url: str | None = Field(None, description="Redis URL, e.g. redis://host:6379/0; None = the launcher starts a private redis-server for the run. Keep passwords out of config files (use the REDIS_URL env override).")
    backlog_bound: int = Field(4096, ge=1, description="Most entries a stream may hold that its slowest consumer group has not acked (undelivered + pending); publish waits while the backlog is at this bound. Nothing is ever trimmed unacked.")
    block_ms: int = Field(1000, ge=0, description="How long one read blocks waiting for new entries, in ms (0 = do not block).")
    claim_idle_ms: int = Field(60_000, ge=1, description="An entry delivered but not acked for this long (its consumer presumably died) is reclaimed by the next reader, in ms. Must exceed the longest normal processing time of one batch.")
    max_deliveries: int = Field(5, ge=1, description="An entry delivered this many times without an ack goes to the dead-letter stream '<stream>:dead' instead of being delivered again.")
    publish_poll_max_s: float = Field(0.5, gt=0, description="Longest pause between backlog checks while a publisher waits on backpressure, in s (the pause backs off from 5 ms up to this).")
    trim_acked: bool = Field(True, description="After an ack, drop entries every consumer group has acked (XTRIM MINID below the oldest unacked entry), so memory stays bounded; never removes an unacked entry.")


class RateLimitConfig(StrictModel):
    """A cluster-wide request rate limit for one API key / backend, shared through Redis.

    Why burst=1 and headroom<1 by default: a server that counts requests per 1-s window sees at
    most `burst + rate_per_s * 1 s` requests in any window from a token bucket. With burst=rate
    that is 2x the limit at start; with burst=1 it is `limit + 1` only when the requests land
    exactly one interval apart at both window edges, which network jitter makes happen. Using
    `headroom` of the limit (default 90%) keeps `1 + 0.9 * limit * (1 s + jitter)` below
    `limit + 1` for jitter up to ~100 ms, so the server never counts more than its limit.
    """

    limit_per_s: float = Field(3.0, gt=0, description="The server's documented limit, requests/s per key (PubMed: 3 without an API key, 10 with one).")
    headroom: float = Field(0.9, gt=0, le=1, description="Fraction of limit_per_s actually used; below 1 so arrival jitter never makes the server count limit+1 in a 1-s window.")
    burst: int = Field(1, ge=1, description="Bucket capacity: requests that may go back to back after an idle spell. Keep 1 for per-second server limits (burst=rate can send 2x the limit in the first second).")
    jitter_s: float = Field(0.002, ge=0, le=1, description="Random extra delay (0..jitter_s) added after a wait, so many waiters do not wake in the same instant; only ever delays.")

    @property
    def rate_per_s(self) -> float:
        """The rate the token bucket refills at: `limit_per_s * headroom`."""
        return self.limit_per_s * self.headroom


class RewardCacheConfig(StrictModel):
    """Redis cache of search results keyed by backend, index version, normalised query and k."""

    enabled: bool = Field(True, description="Look results up in (and store them to) the cache.")
    namespace: str = Field("dr:cache", min_length=1, description="Prefix of every cache key; runs sharing it share results (safe: the key holds the index version).")
    ttl_s: float = Field(7 * 24 * 3600.0, gt=0, description="How long a cached result lives, in s. Live APIs (PubMed) change daily, so keep this at most a few days there.")
    lock_ttl_ms: int = Field(10_000, ge=100, description="Lifetime of the cross-process single-flight lock, in ms; the owner renews it while its search runs, so this only bounds how long others wait after the owner died.")
    poll_interval_s: float = Field(0.02, gt=0, description="How often a process waiting on another's search polls the cache, in s.")
