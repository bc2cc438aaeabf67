"""Redis Streams transport against a real redis-server: groups, reclaim, dead letters, backpressure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgpack
import pytest
import redis.asyncio as aredis

from deepretrieval.common.base import Transport
from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.streams import (PAYLOAD_FIELD, RedisStreamTransport, dead_letter_stream, prompts_stream,
                                          redis_client, rollouts_stream, scored_stream)
from deepretrieval.common.wire import Prompt, encode

T = TypeVar("T")
STREAM, GROUP = "run1:prompts", "g"


def prompt(i: int) -> Prompt:
    return Prompt(uid=f"p{i}", task="t", dataset="d", request=f"request {i}", messages=[], prefill="", target={}, split="train")


def config(url: str, **overrides) -> TransportConfig:
    return TransportConfig(**{"url": url, "block_ms": 50, "claim_idle_ms": 200, "max_deliveries": 3, **overrides})


async def poll(step: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 5.0) -> T:
    """Call `step` until `done(result)`; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await step()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"condition not met within {timeout_s}s; last result {result!r}"
        await asyncio.sleep(0.02)


def run(url: str, body: Callable[[RedisStreamTransport], Awaitable[None]], **overrides) -> None:
    async def main() -> None:
        transport = RedisStreamTransport.from_config(config(url, **overrides))
        try:
            await body(transport)
        finally:
            await transport.close()
    asyncio.run(main())


def test_stream_names_and_protocol(redis_url):
    assert (prompts_stream("r"), rollouts_stream("r"), scored_stream("r")) == ("r:prompts", "r:rollouts", "r:scored")
    assert dead_letter_stream("r:rollouts") == "r:rollouts:dead"

    async def body(t: RedisStreamTransport) -> None:
        assert isinstance(t, Transport)
    run(redis_url, body)


def test_group_read_and_ack(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        await t.ensure_group(STREAM, GROUP)  # idempotent
        ids = [await t.publish(STREAM, prompt(i)) for i in range(5)]
        got = await t.read(STREAM, GROUP, "c1", count=10)
        assert [eid for eid, _ in got] == ids
        assert [m for _, m in got] == [prompt(i) for i in range(5)]
        assert await t.read(STREAM, GROUP, "c2", count=10, block_ms=0) == []  # delivered once per group
        assert await t.ack(STREAM, GROUP, ids) == 5
        assert (await t._redis.xpending(STREAM, GROUP))["pending"] == 0
    run(redis_url, body)


def test_messages_published_before_the_group_exist_are_delivered(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.publish(STREAM, prompt(0))
        got = await t.read(STREAM, GROUP, "c1", count=10)  # creates the group at the stream's start
        assert [m.uid for _, m in got] == ["p0"]
    run(redis_url, body)


def test_dead_consumer_entries_are_reclaimed_after_idle_timeout(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        ids = [await t.publish(STREAM, prompt(i)) for i in range(3)]
        assert [eid for eid, _ in await t.read(STREAM, GROUP, "dead", count=3)] == ids  # read, never acked
        assert await t.read(STREAM, GROUP, "alive", count=3, block_ms=0) == []  # not idle long enough yet
        started = time.monotonic()
        got = await poll(lambda: t.read(STREAM, GROUP, "alive", count=3, block_ms=0), bool)
        assert time.monotonic() - started >= 0.1  # the 200 ms idle timeout applied (minus the reads above)
        assert [eid for eid, _ in got] == ids and [m.uid for _, m in got] == ["p0", "p1", "p2"]
        assert t.stats.reclaimed == 3
        await t.ack(STREAM, GROUP, ids)
        assert (await t._redis.xpending(STREAM, GROUP))["pending"] == 0
    run(redis_url, body)


def test_entry_is_dead_lettered_after_max_deliveries(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        eid = await t.publish(STREAM, prompt(7))
        assert len(await t.read(STREAM, GROUP, "c1", count=1)) == 1  # delivery 1, never acked
        for consumer in ("c2", "c3"):  # deliveries 2 and 3 by reclaim, never acked
            got = await poll(lambda c=consumer: t.read(STREAM, GROUP, c, count=1, block_ms=0), bool)
            assert got[0][0] == eid
        dead_stream = dead_letter_stream(STREAM)
        # the 4th delivery would exceed max_deliveries=3: dead-lettered instead of returned
        await poll(lambda: t.read(STREAM, GROUP, "c4", count=1, block_ms=0), lambda got: t.stats.dead_lettered == 1)
        assert await t.read(STREAM, GROUP, "c5", count=1, block_ms=0) == []
        (dead_id, fields), = await t._redis.xrange(dead_stream)
        assert fields[b"entry_id"].decode() == eid
        assert b"delivered 3 times" in fields[b"reason"]
        assert fields[b"payload"] == encode(prompt(7))
        assert (await t._redis.xpending(STREAM, GROUP))["pending"] == 0  # acked: never redelivered
    run(redis_url, body, claim_idle_ms=50)


def test_undecodable_entries_are_dead_lettered_at_once(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        future = msgpack.unpackb(encode(prompt(1)), raw=False) | {"schema": "prompt/9"}
        await t._redis.xadd(STREAM, {PAYLOAD_FIELD: b"\xc1garbage"})
        await t._redis.xadd(STREAM, {PAYLOAD_FIELD: msgpack.packb(future)})
        await t._redis.xadd(STREAM, {b"other": b"x"})
        good = await t.publish(STREAM, prompt(2))
        got = await t.read(STREAM, GROUP, "c1", count=10)
        assert [(eid, m.uid) for eid, m in got] == [(good, "p2")]
        reasons = [f[b"reason"].decode() for _, f in await t._redis.xrange(dead_letter_stream(STREAM))]
        assert reasons[0].startswith("SchemaError: not a msgpack message")
        assert reasons[1].startswith("SchemaVersionError: schema 'prompt/9'")
        assert "no 'm' field" in reasons[2]
        pending = await t._redis.xpending(STREAM, GROUP)
        assert pending["pending"] == 1 and pending["min"].decode() == good  # the bad ones were acked
    run(redis_url, body)


def test_publisher_waits_at_backlog_bound_and_nothing_is_trimmed(redis_url):
    bound, total = 4, 12

    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        producer = asyncio.create_task(_publish_all(t, total))
        await poll(lambda: asyncio.sleep(0, t.stats.published), lambda n: n == bound)
        await asyncio.sleep(0.3)  # a window in which a non-blocking producer would have finished
        assert t.stats.published == bound and not producer.done()
        assert await t.backlog(STREAM) == bound

        received: list[str] = []
        while len(received) < total:
            batch = await t.read(STREAM, GROUP, "c1", count=2)
            assert await t.backlog(STREAM) <= bound
            received += [m.uid for _, m in batch]
            await t.ack(STREAM, GROUP, [eid for eid, _ in batch])
        await asyncio.wait_for(producer, 5)
        assert received == [f"p{i}" for i in range(total)]
        assert await t._redis.xlen(STREAM) == total  # every entry is still there: bounded, not trimmed
        assert t.stats.publish_wait_s > 0.2
    run(redis_url, body, backlog_bound=bound, trim_acked=False)


def test_backlog_counts_pending_entries(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        for i in range(3):
            await t.publish(STREAM, prompt(i))
        assert await t.backlog(STREAM) == 3
        batch = await t.read(STREAM, GROUP, "c1", count=2)
        assert await t.backlog(STREAM) == 3  # 1 undelivered + 2 delivered, unacked
        await t.ack(STREAM, GROUP, [eid for eid, _ in batch])
        assert await t.backlog(STREAM) == 1
    run(redis_url, body)


def test_backlog_is_counted_when_redis_cannot_derive_the_lag(redis_url):
    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        ids = [await t.publish(STREAM, prompt(i)) for i in range(4)]
        await t._redis.xdel(STREAM, ids[1])  # a hole: XINFO GROUPS now reports lag = nil
        assert (await t._redis.xinfo_groups(STREAM))[0]["lag"] is None
        assert await t.backlog(STREAM) == 3
    run(redis_url, body)


def test_trim_acked_drops_only_acked_entries(redis_url):
    total = 250

    async def body(t: RedisStreamTransport) -> None:
        await t.ensure_group(STREAM, GROUP)
        ids = [await t.publish(STREAM, prompt(i)) for i in range(total)]
        batch = await t.read(STREAM, GROUP, "c1", count=total)
        await t.ack(STREAM, GROUP, ids[:150])
        remaining = [eid.decode() for eid, _ in await t._redis.xrange(STREAM)]
        assert set(ids[150:]) <= set(remaining)  # unacked entries are never trimmed
        assert len(batch) == total
        await t.ack(STREAM, GROUP, ids[150:])
        assert await t._redis.xlen(STREAM) < total  # acked entries are dropped (whole radix nodes)
    run(redis_url, body, backlog_bound=1000)


async def _publish_all(t: RedisStreamTransport, n: int) -> None:
    for i in range(n):
        await t.publish(STREAM, prompt(i))


def test_client_with_decoded_responses_is_refused(redis_url):
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses=False"):
        RedisStreamTransport(client, config(redis_url))
    assert redis_client(redis_url).connection_pool.connection_kwargs.get("decode_responses") is False


async def test_publish_many_appends_a_group_whole(redis_url):
    from deepretrieval.common.config_pipeline import TransportConfig
    from deepretrieval.common.streams import RedisStreamTransport, redis_client

    t = RedisStreamTransport(redis_client(redis_url), TransportConfig(url=redis_url), owns_client=True)
    msgs = [make_rollout_for_many(i) for i in range(3)]
    ids = await t.publish_many("s", msgs)
    assert len(ids) == 3 and ids == sorted(ids)
    got = await t.read("s", "g", "c", 10, block_ms=0)
    assert [e for e, _ in got] == ids and [m.uid for _, m in got] == [m.uid for m in msgs]
    assert await t.publish_many("s", []) == []
    await t.close()


def make_rollout_for_many(i: int):
    import numpy as np

    from deepretrieval.common.wire import Rollout, SamplingParams

    return Rollout(uid=f"u{i}", group_id="g", prompt_uid="p", policy_version=0, prompt_token_ids=np.arange(2, dtype=np.int32),
                   response_token_ids=np.arange(1, dtype=np.int32), logprobs=np.zeros(1, np.float32),
                   sampling=SamplingParams(1.0, 1.0, 4, False), finish_reason="stop", completion="x", engine="t", created_at=0.0)
