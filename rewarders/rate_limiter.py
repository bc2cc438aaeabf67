"""Cluster-wide request rate limit per API key, kept in Redis so every rewarder process agrees.

The bucket is GCRA (a token bucket stored as one "theoretical arrival time", TAT), updated by a
Lua script that reads the clock with Redis `TIME`, so processes on different machines share one
clock. `acquire` *reserves* the next free slot and sleeps until it: requests are paced before
they are sent, never sent and refused, and waiters are served in arrival order without polling.

Any 1-s window then holds at most `burst + rate_per_s` request starts; see `RateLimitConfig` for
why the defaults are burst=1 and 90% of the server's limit. `penalize` records a Retry-After
"blocked until" time that the script honours for every process; a waiter whose reserved slot
falls inside a block re-reserves a slot after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random

import redis.asyncio as aredis

from deepretrieval.common.config_pipeline import RateLimitConfig

logger = logging.getLogger(__name__)

# KEYS[1] TAT key, KEYS[2] blocked-until key; ARGV[1] interval_s (1/rate), ARGV[2] burst,
# ARGV[3] tokens. Reserves the slot and returns the seconds to wait before using it (a string:
# Lua numbers are truncated to integers on return).
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local new_tat = math.max(tat, now, blocked) + tokens * interval
local send_at = math.max(new_tat - burst * interval, now, blocked)
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return string.format('%.6f', send_at - now)
"""

# KEYS[1] blocked-until key; ARGV[1] seconds (0 = only read). Returns the seconds still blocked.
_BLOCK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local seconds = tonumber(ARGV[1])
if seconds > 0 and now + seconds > blocked then
  blocked = now + seconds
  redis.call('SET', KEYS[1], string.format('%.6f', blocked), 'PX', math.ceil(seconds * 1000) + 1000)
end
return string.format('%.6f', math.max(blocked - now, 0))
"""


class RateLimiter:
    """A token bucket per key shared by every process using the same Redis.

    Args:
        client: asyncio Redis client (any `decode_responses`).
        rate_per_s: tokens added per second (the pace of requests).
        burst: bucket capacity (requests allowed back to back after idling); 1 is safe for
            servers counting requests per second.
        jitter_s: random extra sleep in [0, jitter_s] after a wait; it only ever delays.
        namespace: prefix of the Redis keys.
    """

    def __init__(self, client: aredis.Redis, *, rate_per_s: float, burst: int = 1, jitter_s: float = 0.002,
                 namespace: str = "dr:ratelimit"):
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if jitter_s < 0:
            raise ValueError(f"jitter_s must be >= 0, got {jitter_s}")
        self._redis = client
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self._jitter_s = jitter_s
        self._namespace = namespace
        self._reserve = client.register_script(_RESERVE_LUA)
        self._block = client.register_script(_BLOCK_LUA)

    @classmethod
    def from_config(cls, client: aredis.Redis, config: RateLimitConfig, namespace: str = "dr:ratelimit") -> RateLimiter:
        """A limiter pacing at `config.rate_per_s` (the server limit times the headroom)."""
        return cls(client, rate_per_s=config.rate_per_s, burst=config.burst, jitter_s=config.jitter_s, namespace=namespace)

    def _keys(self, key: str) -> list[str]:
        # Keys may be API keys: only a digest goes to Redis, where KEYS/MONITOR would show it.
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return [f"{self._namespace}:{digest}:tat", f"{self._namespace}:{digest}:blocked"]

    async def acquire(self, key: str, tokens: int = 1) -> float:
        """Wait until `tokens` requests may be sent for `key`, cluster-wide.

        Args:
            key: what the limit applies to (API key or backend name); hashed before use.
            tokens: requests about to be sent (at most `burst`).

        Returns:
            Seconds spent waiting (for metrics and spans).

        Raises:
            ValueError: `tokens` is not in [1, burst].
        """
        if not 1 <= tokens <= self.burst:
            raise ValueError(f"tokens must be in [1, burst={self.burst}], got {tokens}")
        keys = self._keys(key)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            wait_s = float(await self._reserve(keys=keys, args=[repr(1.0 / self.rate_per_s), self.burst, tokens]))
            if wait_s <= 0:
                return loop.time() - started
            await asyncio.sleep(wait_s + random.uniform(0.0, self._jitter_s))
            # A penalty set while we slept voids our slot: reserve again, after the block.
            if float(await self._block(keys=keys[1:], args=[0])) <= 0:
                return loop.time() - started

    async def penalize(self, key: str, seconds: float) -> None:
        """Block every process from sending for `key` during the next `seconds` (a Retry-After).

        A later, shorter penalty never shortens an earlier one.

        Args:
            key: as in `acquire`.
            seconds: how long the server asked us to wait.
        """
        if seconds <= 0:
            return
        await self._block(keys=self._keys(key)[1:], args=[repr(float(seconds))])
        logger.info("rate limit: requests blocked for %.3f s after a Retry-After", seconds)

    async def blocked_for(self, key: str) -> float:
        """Seconds `key` stays blocked by a penalty (0 when not blocked)."""
        return float(await self._block(keys=self._keys(key)[1:], args=[0]))
