"""Redis cache of search results, with single-flight loading inside and across processes.

Key: backend name + index version + k + normalised query (hashed). Rebuilding an index changes its
version, so stale results are never served across rebuilds. Value: msgpack of the result's
ids, scores, total and HTTP status; `retries` and `meta` describe one call, not the result, and
are not cached.

Single flight: concurrent identical misses in one process share one asyncio task; across
processes the first to `SET NX PX` a short lock calls the engine (renewing the lock while it
runs) and the others poll the cache until it is filled or the lock disappears (owner failed or
died), in which case one of them takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import redis.asyncio as aredis
from redis.exceptions import RedisError

from deepretrieval.common.config_pipeline import RewardCacheConfig
from deepretrieval.rewarders.base import SearchResult

logger = logging.getLogger(__name__)

CACHE_FORMAT = "v1"
_WHITESPACE = re.compile(r"\s+")

# KEYS[1] lock; ARGV[1] token; ARGV[2] ms (0 = release). Only the holder may renew or release.
_LOCK_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""

Normalizer = Callable[[str], str]


def normalize_whitespace(query: str) -> str:
    """Strip and collapse whitespace runs to one space; case is kept.

    The safe default: right for engines whose operators or matching are case-sensitive
    (PubMed's AND/OR/NOT must be upper-case, lower-case "and" is a search term).
    """
    return _WHITESPACE.sub(" ", query).strip()


def normalize_case_insensitive(query: str) -> str:
    """Whitespace-normalise and lower-case; only for engines that lower-case queries themselves
    (Lucene BM25 with the standard analyzer has no operators in our bag-of-words queries)."""
    return normalize_whitespace(query).lower()


def normalize_exact(query: str) -> str:
    """Strip only: for languages where inner whitespace and case are meaningful (SQL literals)."""
    return query.strip()


def default_normalizers() -> dict[str, Normalizer]:
    """Normaliser per backend kind; kinds not listed use `normalize_whitespace` (case-preserving)."""
    return {
        "bm25": normalize_case_insensitive,
        "pubmed": normalize_whitespace,
        "ctgov": normalize_whitespace,
        "dense": normalize_whitespace,
        "sql": normalize_exact,
    }


class CacheAnswer(NamedTuple):
    """A search result and whether it came without this call running the search."""

    result: SearchResult
    hit: bool


@dataclass
class CacheStats:
    """In-process counters (the cluster-wide ones are in the Redis hash `<namespace>:stats`).

    hits: answered from Redis; misses: this process ran the search; coalesced: shared an
    in-process search already running; peer_waits: waited for another process's search.
    """

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    peer_waits: int = 0


class RewardCache:
    """Search-result cache with single-flight misses.

    Args:
        client: asyncio Redis client created with `decode_responses=False`.
        config: TTL, lock and polling settings, key namespace.
        normalizers: query normaliser per backend kind; default `default_normalizers()`.
    """

    def __init__(self, client: aredis.Redis, config: RewardCacheConfig,
                 normalizers: Mapping[str, Normalizer] | None = None):
        self._redis = client
        self._config = config
        self._normalizers = dict(default_normalizers() if normalizers is None else normalizers)
        self._lock_script = client.register_script(_LOCK_LUA)
        self._inflight: dict[str, asyncio.Task[CacheAnswer]] = {}
        self.stats = CacheStats()

    def key(self, backend: str, index_version: str, query: str, k: int, kind: str | None = None) -> str:
        """The Redis key of a result.

        Args:
            backend: backend name.
            index_version: version of the index (or API snapshot) answering.
            query: the query as the policy wrote it.
            k: results asked for.
            kind: backend kind choosing the normaliser; default `backend`.

        Returns:
            `<namespace>:v1:<backend>:<index_version>:<k>:<sha256 of the normalised query>`.
        """
        normalize = self._normalizers.get(kind or backend, normalize_whitespace)
        digest = hashlib.sha256(normalize(query).encode()).hexdigest()
        return f"{self._config.namespace}:{CACHE_FORMAT}:{backend}:{index_version}:{k}:{digest}"

    async def get(self, key: str) -> SearchResult | None:
        """The cached result under `key`, or None."""
        raw = await self._redis.get(key)
        return None if raw is None else _unpack(raw)

    async def put(self, key: str, result: SearchResult) -> None:
        """Store `result` under `key` for `config.ttl_s`."""
        await self._redis.set(key, _pack(result), px=max(1, int(self._config.ttl_s * 1000)))

    async def get_or_load(self, backend: str, index_version: str, query: str, k: int,
                          loader: Callable[[], Awaitable[SearchResult]], *, kind: str | None = None) -> CacheAnswer:
        """The cached result, or the loader's, calling the loader once per key cluster-wide.

        Args:
            backend, index_version, query, k, kind: as in `key`.
            loader: runs the search (with its own rate limit and retries). Its exceptions reach
                every caller waiting on it in this process and are never cached.

        Returns:
            The result and whether this call was served without running `loader` itself.
        """
        if not self._config.enabled:
            self.stats.misses += 1
            return CacheAnswer(await loader(), False)
        key = self.key(backend, index_version, query, k, kind)
        task = self._inflight.get(key)
        if task is not None:
            self.stats.coalesced += 1
            await self._count(backend, "coalesced")
            answer = await asyncio.shield(task)
            return CacheAnswer(answer.result, True)
        task = asyncio.create_task(self._load(key, backend, loader))
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))
        # shield: a cancelled caller must not cancel the search others wait on.
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[CacheAnswer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an all-callers-cancelled failure is not reported as lost

    async def _load(self, key: str, backend: str, loader: Callable[[], Awaitable[SearchResult]]) -> CacheAnswer:
        lock_key, token = f"{key}:lock", uuid.uuid4().hex
        lock_ms = self._config.lock_ttl_ms
        waited = False
        while True:
            cached = await self.get(key)
            if cached is not None:
                await self._count(backend, "hits")
                self.stats.hits += 1
                self.stats.peer_waits += waited
                return CacheAnswer(cached, True)
            if await self._redis.set(lock_key, token, nx=True, px=lock_ms):
                break
            waited = True
            await self._wait_for_peer(key, lock_key)
        try:
            cached = await self.get(key)  # filled between our GET and SET NX
            if cached is not None:
                await self._count(backend, "hits")
                self.stats.hits += 1
                self.stats.peer_waits += waited
                return CacheAnswer(cached, True)
            async with self._holding(lock_key, token):
                result = await loader()
            await self.put(key, result)
            await self._count(backend, "misses")
            self.stats.misses += 1
            return CacheAnswer(result, False)
        finally:
            await self._lock_script(keys=[lock_key], args=[token, 0])

    async def _wait_for_peer(self, key: str, lock_key: str) -> None:
        """Poll until `key` is filled or `lock_key` is gone."""
        while True:
            await asyncio.sleep(self._config.poll_interval_s)
            pipe = self._redis.pipeline(transaction=False)
            pipe.exists(key)
            pipe.exists(lock_key)
            filled, locked = await pipe.execute()
            if filled or not locked:
                return

    @contextlib.asynccontextmanager
    async def _holding(self, lock_key: str, token: str):
        """Renew the lock every third of its TTL while the body runs."""
        ttl_ms = self._config.lock_ttl_ms
        # Stopped by an event, never by cancel(): a cancellation landing inside the Redis call can
        # be swallowed by the client, which left the renewer looping (renewing the lock forever)
        # and this context manager waiting for it forever.
        done = asyncio.Event()

        async def renew() -> None:
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), ttl_ms / 3000)
                except asyncio.TimeoutError:
                    try:
                        await self._lock_script(keys=[lock_key], args=[token, ttl_ms])
                    except RedisError as e:  # the lock may lapse: at worst a peer repeats the search
                        logger.warning("could not renew %s: %s", lock_key, e)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            done.set()
            await renewer

    async def _count(self, backend: str, what: str) -> None:
        await self._redis.hincrby(f"{self._config.namespace}:stats", f"{backend}:{what}", 1)

    async def cluster_stats(self) -> dict[str, int]:
        """Cluster-wide counters, e.g. {"pubmed:hits": 10, "pubmed:misses": 3, "pubmed:coalesced": 2}."""
        raw = await self._redis.hgetall(f"{self._config.namespace}:stats")
        return {_text(k): int(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pack(result: SearchResult) -> bytes:
    return msgpack.packb({"ids": list(result.ids), "scores": [float(s) for s in result.scores],
                          "total": result.total, "http_status": result.http_status}, use_bin_type=True)


def _unpack(raw: bytes) -> SearchResult:
    data = msgpack.unpackb(raw, raw=False)
    return SearchResult(ids=list(data["ids"]), scores=list(data["scores"]), total=data["total"],
                        http_status=data["http_status"])
