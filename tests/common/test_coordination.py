"""Run coordination in a real Redis: policy announcements and admission slots."""

from pathlib import Path

from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.streams import redis_client


async def test_admission_slots_are_reserved_published_consumed_and_reclaimed(redis_url):
    client = redis_client(redis_url)
    c = Coordinator(client, "r")
    assert await c.try_admit(2, 4, owner="a0") and await c.try_admit(2, 4, owner="a1")
    assert not await c.try_admit(1, 4, owner="a0")  # full
    await c.published("a0", 1)                      # a0 published one of its two groups, then died
    assert await c.reclaim("a0") == 1               # its restart frees the one never published
    assert await c.in_flight() == 3
    assert await c.consume(["g1", "g2"]) == 2 and await c.consume(["g2", "g3"]) == 1  # once per group
    assert await c.in_flight() == 0
    assert await c.reclaim("a0") == 0
    await client.aclose()


async def test_announcements_only_move_forward(redis_url, tmp_path: Path):
    client = redis_client(redis_url)
    c = Coordinator(client, "r")
    assert await c.latest() is None
    await c.announce(2, tmp_path / "v2")
    await c.announce(1, tmp_path / "v1")
    latest = await c.latest()
    assert latest.version == 2 and latest.weights_dir == tmp_path / "v2"
    await client.aclose()
