"""Search-result cache against a real redis-server: keys, TTL, single flight in and across processes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest
import redis.asyncio as aredis
from pydantic import ValidationError

from deepretrieval.common.config_pipeline import RewardCacheConfig
from deepretrieval.common.errors import BackendUnavailable
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.reward_cache import (RewardCache, normalize_case_insensitive, normalize_exact,
                                                  normalize_whitespace)

RESULT = SearchResult(ids=["d3", "d1", "d2"], scores=[3.5, 2.25, 1.0], total=42, http_status=200, retries=2, meta={"x": 1})


class CountingLoader:
    """A stand-in search: counts calls, optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.calls, self.delay_s, self.fail = 0, delay_s, fail

    async def __call__(self) -> SearchResult:
        self.calls += 1
        await asyncio.sleep(self.delay_s)  # the API's latency
        if self.fail:
            raise BackendUnavailable("engine down")
        return RESULT


def run_with_cache(url: str, body, **config) -> None:
    async def main() -> None:
        client = aredis.Redis.from_url(url)
        try:
            await body(RewardCache(client, RewardCacheConfig(**config)), client)
        finally:
            await client.aclose()
    asyncio.run(main())


def test_miss_then_hit_returns_the_same_result(redis_url):
    async def body(cache: RewardCache, client) -> None:
        loader = CountingLoader()
        first = await cache.get_or_load("bm25", "v1", "statins liver", 100, loader)
        second = await cache.get_or_load("bm25", "v1", "  Statins   LIVER ", 100, loader)  # same normalised query
        assert (first.hit, second.hit, loader.calls) == (False, True, 1)
        assert first.result == RESULT
        assert (second.result.ids, second.result.scores, second.result.total) == (RESULT.ids, RESULT.scores, 42)
        assert second.result.retries == 0  # per-call provenance is not cached
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)
        assert await cache.cluster_stats() == {"bm25:hits": 1, "bm25:misses": 1}
    run_with_cache(redis_url, body)


def test_key_includes_backend_index_version_and_k(redis_url):
    async def body(cache: RewardCache, client) -> None:
        loader = CountingLoader()
        for backend, version, k in [("bm25", "v1", 100), ("bm25", "v2", 100), ("bm25", "v1", 10), ("dense", "v1", 100)]:
            answer = await cache.get_or_load(backend, version, "q", k, loader)
            assert not answer.hit
        assert loader.calls == 4
        assert (await cache.get_or_load("bm25", "v2", "q", 100, loader)).hit
    run_with_cache(redis_url, body)


def test_normalisation_keeps_case_where_it_matters(redis_url):
    async def body(cache: RewardCache, client) -> None:
        key = cache.key
        assert key("bm25", "v", "Foo  BAR", 10) == key("bm25", "v", "foo bar", 10)
        assert key("pubmed", "v", "a AND b", 10) != key("pubmed", "v", "a and b", 10)  # operators are upper-case
        assert key("pubmed", "v", " a\tAND\n b ", 10) == key("pubmed", "v", "a AND b", 10)
        assert key("sql", "v", "SELECT 'a  b'", 10) != key("sql", "v", "SELECT 'a b'", 10)
        assert key("my-pubmed", "v", "a AND b", 10, kind="pubmed") != key("my-pubmed", "v", "a and b", 10, kind="pubmed")
        assert key("unknown", "v", "A", 10) != key("unknown", "v", "a", 10)  # default keeps case
    run_with_cache(redis_url, body)
    assert normalize_whitespace("  a \n B ") == "a B"
    assert normalize_case_insensitive(" A  B ") == "a b"
    assert normalize_exact(" a  B ") == "a  B"


def test_entries_expire_after_ttl(redis_url):
    async def body(cache: RewardCache, client) -> None:
        loader = CountingLoader()
        await cache.get_or_load("bm25", "v1", "q", 10, loader)
        key = cache.key("bm25", "v1", "q", 10)
        assert await cache.get(key) is not None
        deadline = time.monotonic() + 5
        while await cache.get(key) is not None:
            assert time.monotonic() < deadline, "cache entry did not expire"
            await asyncio.sleep(0.02)
        assert not (await cache.get_or_load("bm25", "v1", "q", 10, loader)).hit
        assert loader.calls == 2
    run_with_cache(redis_url, body, ttl_s=0.2)


def test_concurrent_identical_misses_call_the_loader_once(redis_url):
    async def body(cache: RewardCache, client) -> None:
        loader = CountingLoader(delay_s=0.2)
        answers = await asyncio.gather(*(cache.get_or_load("pubmed", "v1", "a AND b", 100, loader) for _ in range(10)))
        assert loader.calls == 1
        assert sorted(a.hit for a in answers) == [False] + [True] * 9
        assert all(a.result == RESULT for a in answers)
        assert cache.stats.coalesced == 9
        assert (await cache.cluster_stats())["pubmed:coalesced"] == 9
    run_with_cache(redis_url, body)


def test_failures_reach_every_waiter_and_are_not_cached(redis_url):
    async def body(cache: RewardCache, client) -> None:
        failing = CountingLoader(delay_s=0.1, fail=True)
        results = await asyncio.gather(*(cache.get_or_load("pubmed", "v1", "q", 10, failing) for _ in range(3)),
                                       return_exceptions=True)
        assert failing.calls == 1 and all(isinstance(r, BackendUnavailable) for r in results)
        assert await client.keys("*lock") == []  # the lock was released
        assert not (await cache.get_or_load("pubmed", "v1", "q", 10, CountingLoader())).hit
    run_with_cache(redis_url, body)


def test_waiter_takes_over_when_the_lock_owner_died(redis_url):
    async def body(cache: RewardCache, client) -> None:
        key = cache.key("pubmed", "v1", "q", 10)
        await client.set(f"{key}:lock", "a-process-that-died", px=300)
        loader = CountingLoader()
        started = time.monotonic()
        answer = await cache.get_or_load("pubmed", "v1", "q", 10, loader)
        assert not answer.hit and loader.calls == 1
        assert time.monotonic() - started >= 0.25  # it waited for the dead owner's lock to lapse
    run_with_cache(redis_url, body)


def test_lock_is_renewed_while_a_slow_search_runs(redis_url):
    async def main() -> None:
        clients = [aredis.Redis.from_url(redis_url) for _ in range(2)]
        config = RewardCacheConfig(lock_ttl_ms=150, poll_interval_s=0.01)
        caches = [RewardCache(c, config) for c in clients]  # two caches = two processes' worth of state
        loaders = [CountingLoader(delay_s=0.6), CountingLoader(delay_s=0.6)]
        owner = asyncio.create_task(caches[0].get_or_load("pubmed", "v1", "q", 10, loaders[0]))
        lock_key = caches[0].key("pubmed", "v1", "q", 10) + ":lock"
        deadline = time.monotonic() + 5
        while not await clients[1].exists(lock_key):  # the owner holds the lock and is searching
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        peer = await caches[1].get_or_load("pubmed", "v1", "q", 10, loaders[1])
        assert not (await owner).hit and peer.hit
        assert [l.calls for l in loaders] == [1, 0]  # 0.6 s search, 0.15 s lock: renewal kept the peer waiting
        assert caches[1].stats.peer_waits == 1
        for c in clients:
            await c.aclose()

    asyncio.run(main())


async def _load_in_process(url: str) -> dict:
    client = aredis.Redis.from_url(url)
    cache = RewardCache(client, RewardCacheConfig(poll_interval_s=0.01))

    async def loader() -> SearchResult:
        await client.incr("test:loader_calls")
        # hold the search open until the other process has asked for the same query
        deadline = time.monotonic() + 20
        while int(await client.get("test:started") or 0) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        return RESULT

    await client.incr("test:started")
    answer = await cache.get_or_load("pubmed", "v1", "statins AND liver", 100, loader)
    await client.aclose()
    return {"hit": answer.hit, "ids": answer.result.ids, "peer_waits": cache.stats.peer_waits}


def _process_main(url: str, barrier, out) -> None:
    barrier.wait(timeout=60)
    out.put(asyncio.run(_load_in_process(url)))


def test_identical_misses_in_two_processes_call_the_loader_once(redis_url):
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(redis_url, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()

    async def loader_calls() -> int:
        client = aredis.Redis.from_url(redis_url)
        calls = int(await client.get("test:loader_calls"))
        await client.aclose()
        return calls

    assert asyncio.run(loader_calls()) == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    assert all(r["ids"] == RESULT.ids for r in results)
    assert sum(r["peer_waits"] for r in results) == 1


def test_disabled_cache_always_loads(redis_url):
    async def body(cache: RewardCache, client) -> None:
        loader = CountingLoader()
        for _ in range(2):
            assert not (await cache.get_or_load("bm25", "v1", "q", 10, loader)).hit
        assert loader.calls == 2 and await client.keys("*") == []
    run_with_cache(redis_url, body, enabled=False)


@pytest.mark.parametrize("bad", [{"ttl_s": 0}, {"lock_ttl_ms": 10}, {"nope": 1}])
def test_config_is_validated(bad):
    with pytest.raises(ValidationError, match="ttl_s|lock_ttl_ms|nope"):
        RewardCacheConfig(**bad)
