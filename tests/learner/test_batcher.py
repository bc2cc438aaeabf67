"""The learner's batcher against a real redis-server: full groups, staleness, dedupe, crash recovery."""

from __future__ import annotations

import numpy as np
import pytest

from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.streams import RedisStreamTransport, redis_client, scored_stream
from deepretrieval.common.wire import Prompt, Rollout, SamplingParams, Scored
from deepretrieval.learner.batcher import LEARNER_GROUP, Batcher

PROMPT = Prompt(uid="p", task="sparse", dataset="d", request="r", messages=[{"role": "user", "content": "r"}],
                prefill="", target={"type": "ids", "ids": {"1": 1}}, split="train")


def scored(group: str, i: int, *, version: int = 0, status: str = "ok", reward: float | None = 1.0) -> Scored:
    r = Rollout(uid=f"{group}-{i}", group_id=group, prompt_uid="p", policy_version=version,
                prompt_token_ids=np.arange(3, dtype=np.int32), response_token_ids=np.arange(2, dtype=np.int32),
                logprobs=np.zeros(2, np.float32), sampling=SamplingParams(1.0, 1.0, 8, False), finish_reason="stop",
                completion="x", engine="t", created_at=0.0)
    return Scored(rollout=r, reward=None if status == "unavailable" else reward + i, components={}, status=status,
                  query="q", retrieved_ids=[], backend="b", index_version="v", latency_s=0.0, retries=0, cache_hit=False)


def _transport(url: str) -> RedisStreamTransport:
    return RedisStreamTransport(redis_client(url), TransportConfig(url=url, claim_idle_ms=24 * 3600 * 1000), owns_client=True)


def _batcher(t, coord, ledger=None, **kw) -> Batcher:
    return Batcher(t, coord, "r", group_size=2, groups_per_step=1, max_staleness=kw.pop("max_staleness", 1), ledger=ledger if ledger is not None else set(), **kw)


async def test_full_fresh_groups_only_and_dropped_groups_are_acked_at_once(redis_url):
    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    await coord.try_admit(4, 10)
    for s in [scored("a", 0, version=2), scored("u", 0, version=2), scored("u", 1, version=2, status="unavailable"),
              scored("old", 0, version=0), scored("old", 1, version=0), scored("a", 1, version=2), scored("partial", 0, version=2)]:
        await t.publish(scored_stream("r"), s)
    b = _batcher(t, coord)
    batch = await b.next_batch(learner_version=2, block_ms=50)
    assert batch.group_ids == ["a"] and sorted(batch.uids) == ["a-0", "a-1"]
    assert b.stats.groups_unavailable == 1 and b.stats.groups_stale == 1
    # Dropped groups are acked and free their admission slots; the trained group stays pending
    # until the caller commits it; the partial group is still held.
    assert await coord.in_flight() == 2
    pending = await t._redis.xpending(scored_stream("r"), LEARNER_GROUP)
    assert pending["pending"] == 3  # a-0, a-1, partial-0
    await t.close()


async def test_restart_gets_uncommitted_entries_back_and_the_ledger_drops_trained_ones(redis_url):
    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    for s in [scored("a", 0), scored("a", 1), scored("b", 0), scored("b", 1)]:
        await t.publish(scored_stream("r"), s)
    first = _batcher(t, coord)
    assert (await first.next_batch(0, block_ms=50)).group_ids == ["a"]
    assert (await first.next_batch(0, block_ms=50)).group_ids == ["b"]
    # Crash: nothing committed. The last checkpoint had trained group "a" only.
    second = _batcher(t, coord, ledger={"a-0", "a-1"})
    batch = await second.next_batch(0, block_ms=50)
    assert batch.group_ids == ["b"]
    assert second.stats.duplicates == 2
    # A duplicate delivery of an already-trained uid (a rewarder re-scored it) is dropped too.
    await t.publish(scored_stream("r"), scored("b", 0))
    await t.publish(scored_stream("r"), scored("c", 0))
    await t.publish(scored_stream("r"), scored("c", 1))
    second.ledger.update(batch.uids)
    assert (await second.next_batch(0, block_ms=50)).group_ids == ["c"]
    assert second.stats.duplicates == 3
    await t.close()


def test_lag_counts_this_lineage_steps_and_not_the_lost_ones():
    b = Batcher(None, None, "r", group_size=2, groups_per_step=1, max_staleness=2, ledger=set())  # type: ignore[arg-type]
    assert b.lag(3, 7) == 4  # no restart: plain version difference
    # Resumed at checkpoint v4 after a predecessor announced up to v6: this lineage starts at v7.
    b.continue_lineage(resumed_version=4, first_version=7)
    assert [b.lag(v, 7) for v in (2, 3, 4, 5, 6)] == [2, 1, 0, 0, 0]  # the checkpoint's lead on older samples only
    assert b.lag(5, 9) == 2  # plus this lineage's own steps since it started
    assert b.lag(8, 9) == 1  # a sample of this lineage: plain difference
    with pytest.raises(ValueError, match="must follow"):
        b.continue_lineage(resumed_version=4, first_version=4)


async def test_groups_in_flight_at_a_learner_crash_are_trained_after_the_version_jump(redis_url):
    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    # Checkpoint at v4; the crashed learner had announced v5 and v6; groups from v4..v6 were in flight.
    for g, v in (("g4", 4), ("g5", 5), ("g6", 6)):
        for i in range(2):
            await t.publish(scored_stream("r"), scored(g, i, version=v))
    resumed = _batcher(t, coord, max_staleness=2)
    resumed.continue_lineage(resumed_version=4, first_version=7)
    got = [(await resumed.next_batch(7 + step, block_ms=50)).group_ids[0] for step in range(2)]
    assert got == ["g4", "g5"] and resumed.stats.groups_stale == 0
    # By plain version numbers they were 3, 2 and 1 versions old at v7: g4 would have been dropped.
    plain = _batcher(t, Coordinator(t._redis, "r2"), max_staleness=2)
    assert plain.lag(4, 7) == 3 > 2
    await t.close()


def _tied(group: str, version: int = 0) -> list[Scored]:
    return [scored(group, 0, version=version, reward=2.0), scored(group, 1, version=version, reward=1.0)]  # 2.0 and 2.0


async def test_fill_with_spread_drops_tied_groups_as_they_arrive_and_waits_for_groups_with_a_spread(redis_url):
    from functools import partial

    from deepretrieval.common.learner_config import LossConfig
    from deepretrieval.learner.sequences import has_spread

    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    await coord.try_admit(5, 10)
    for s in [*_tied("t1"), scored("a", 0), scored("a", 1), *_tied("t2"), *_tied("t3"), scored("b", 0), scored("b", 1)]:
        await t.publish(scored_stream("r"), s)
    b = Batcher(t, coord, "r", group_size=2, groups_per_step=2, max_staleness=1, ledger=set(),
                spread=partial(has_spread, cfg=LossConfig()), max_groups=8)
    batch = await b.next_batch(0, block_ms=50)
    assert batch.group_ids == ["a", "b"] and b.stats.groups_uniform == 3
    assert sorted(s.rollout.group_id for s in batch.dropped) == ["t1", "t1", "t2", "t2", "t3", "t3"]
    # The tied groups are acked and their admission slots free at once (the actors sample more).
    assert await coord.in_flight() == 2
    assert (await t._redis.xpending(scored_stream("r"), LEARNER_GROUP))["pending"] == 4
    await t.close()


async def test_fill_with_spread_stops_reading_at_max_groups(redis_url):
    """A policy whose groups all tie cannot stall the run: the step trains on what it found."""
    from functools import partial

    from deepretrieval.common.learner_config import LossConfig
    from deepretrieval.learner.sequences import has_spread

    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    for s in [*_tied("t1"), scored("a", 0), scored("a", 1), *_tied("t2"), *_tied("t3"), *_tied("t4")]:
        await t.publish(scored_stream("r"), s)
    b = Batcher(t, coord, "r", group_size=2, groups_per_step=2, max_staleness=1, ledger=set(),
                spread=partial(has_spread, cfg=LossConfig()), max_groups=3)
    first = await b.next_batch(0, block_ms=50)  # one read returns all five groups: 5 >= 3
    assert first.group_ids == ["a"] and sorted({s.rollout.group_id for s in first.dropped}) == ["t1", "t2", "t3", "t4"]
    for s in [*_tied("t5"), *_tied("t6"), *_tied("t7")]:
        await t.publish(scored_stream("r"), s)
    second = await b.next_batch(0, block_ms=50)
    assert second.group_ids == [] and second.scored == [] and len(second.dropped) == 6
    with pytest.raises(ValueError, match="max_groups"):
        Batcher(t, coord, "r", group_size=2, groups_per_step=2, max_staleness=1, ledger=set(), spread=lambda g: True, max_groups=1)
    await t.close()


async def test_drain_drops_tied_groups_while_a_step_trains_so_actors_get_their_slots_back(redis_url):
    """Reading on during a training step frees the tied groups' admission slots then, not after the step."""
    import asyncio
    from functools import partial

    from deepretrieval.common.learner_config import LossConfig
    from deepretrieval.learner.sequences import has_spread

    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    await coord.try_admit(4, 10)
    for s in [scored("a", 0), scored("a", 1)]:
        await t.publish(scored_stream("r"), s)
    b = Batcher(t, coord, "r", group_size=2, groups_per_step=1, max_staleness=1, ledger=set(),
                spread=partial(has_spread, cfg=LossConfig()), max_groups=8)
    assert (await b.next_batch(0, block_ms=50)).group_ids == ["a"]
    training = asyncio.get_running_loop().create_future()  # the step trains until this is done
    draining = asyncio.create_task(b.drain(0, training, block_ms=50))
    for s in [*_tied("t1"), *_tied("t2"), scored("b", 0), scored("b", 1)]:
        await t.publish(scored_stream("r"), s)
    for _ in range(100):  # while the step still trains, the tied groups are dropped and their slots freed
        if await coord.in_flight() == 2:
            break
        await asyncio.sleep(0.02)
    assert not training.done() and await coord.in_flight() == 2  # "a" (until committed) and "b" (queued)
    assert b.stats.groups_uniform == 2
    training.set_result(None)
    await asyncio.wait_for(draining, 1.0)
    nxt = await b.next_batch(1, block_ms=50)  # the queued group is taken without another read
    assert nxt.group_ids == ["b"] and sorted({s.rollout.group_id for s in nxt.dropped}) == ["t1", "t2"]
    await t.close()


async def test_a_queued_group_that_grew_too_old_by_its_step_is_dropped(redis_url):
    t = _transport(redis_url)
    coord = Coordinator(t._redis, "r")
    await coord.try_admit(3, 10)
    for s in [scored("a", 0), scored("a", 1), scored("b", 0), scored("b", 1)]:
        await t.publish(scored_stream("r"), s)
    b = _batcher(t, coord, max_staleness=1)
    assert (await b.next_batch(0, block_ms=50)).group_ids == ["a"]  # one read queued "b" too, fresh at v0
    for s in [scored("c", 0, version=2), scored("c", 1, version=2)]:
        await t.publish(scored_stream("r"), s)
    # Two steps later "b" lags 2 versions (max 1): dropped, acked, its slot freed, never trained.
    assert (await b.next_batch(2, block_ms=50)).group_ids == ["c"]
    assert b.stats.groups_stale == 1 and await coord.in_flight() == 2  # "a" and "c" until committed
    pending = await t._redis.xpending(scored_stream("r"), LEARNER_GROUP)
    assert pending["pending"] == 4  # a-0, a-1, c-0, c-1
    await t.close()
