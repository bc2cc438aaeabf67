"""Redis Streams transport: consumer groups, backpressure, reclaim, dead letters (DESIGN.md §4).

Delivery is at least once: a consumer reads, processes, publishes downstream and only then acks.
Entries left pending by a dead consumer are reclaimed with XAUTOCLAIM once idle for
`claim_idle_ms`; an entry delivered `max_deliveries` times without an ack, or one that does not
decode, goes to the dead-letter stream `<stream>:dead` and is acked, so no poison message loops.

Backpressure: a stream's backlog is, for its slowest consumer group, entries not yet delivered
(XINFO GROUPS `lag`) plus entries delivered but not acked (`pending`); with no group yet it is
XLEN. `publish` checks this and XADDs in one Lua script, so the bound holds exactly even with
many producers, and waits (backing off) while the bound is reached. Nothing unacked is ever
trimmed; with `trim_acked`, entries every group has acked are dropped so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.errors import ConfigError, SchemaError, SchemaVersionError
from deepretrieval.common.wire import WireMessage, decode, encode

logger = logging.getLogger(__name__)

PAYLOAD_FIELD = b"m"
_BACKLOG_PROBE_CAP = 1_000_000  # most undelivered entries `backlog()` counts one by one (lag = nil case)
DEAD_LETTER_SUFFIX = ":dead"

# KEYS[1] stream; ARGV[1] backlog bound, ARGV[2] field name, ARGV[3..] payloads (none: only measure).
# Appends every payload at once (all or none) when the backlog is below the bound; returns
# {first entry id, backlog, {entry ids}} when appended, {0, backlog} when at the bound or measuring.
_PUBLISH_LUA = """
local bound = tonumber(ARGV[1])
local backlog = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
  if #groups == 0 then
    backlog = redis.call('XLEN', KEYS[1])
  end
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    local lag = info['lag']
    if not lag then
      -- lag is nil when Redis cannot derive it (XDEL holes); count undelivered entries, capped
      lag = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+', 'COUNT', bound + 1)
    end
    local b = lag + info['pending']
    if b > backlog then backlog = b end
  end
end
if backlog >= bound or ARGV[3] == nil then return {0, backlog} end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i]) end
return {ids[1], backlog, ids}
"""

# KEYS[1] stream. Trims entries below the oldest entry any group still needs (its oldest
# pending entry, else its last delivered one). Returns how many entries were removed.
_TRIM_ACKED_LUA = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local floor = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local keep = info['last-delivered-id']
  if info['pending'] > 0 then keep = redis.call('XPENDING', KEYS[1], info['name'])[2] end
  if floor == nil or less(keep, floor) then floor = keep end
end
if floor == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)
"""


def prompts_stream(run: str) -> str:
    """Stream of `Prompt`s of run `run`."""
    return f"{run}:prompts"


def rollouts_stream(run: str) -> str:
    """Stream of `Rollout`s of run `run` (consumer group "rewarders")."""
    return f"{run}:rollouts"


def scored_stream(run: str) -> str:
    """Stream of `Scored` rollouts of run `run` (consumer group "learner")."""
    return f"{run}:scored"


def dead_letter_stream(stream: str) -> str:
    """Where undecodable or too-often-delivered entries of `stream` go."""
    return stream + DEAD_LETTER_SUFFIX


def redis_client(url: str) -> aredis.Redis:
    """An asyncio Redis client suited to the transport (binary replies); connects lazily.

    Args:
        url: Redis URL, e.g. redis://127.0.0.1:6379/0.
    """
    return aredis.Redis.from_url(url, decode_responses=False)


@dataclass
class TransportStats:
    """Counters of one transport instance (sum them across workers)."""

    published: int = 0
    publish_wait_s: float = 0.0
    read: int = 0
    reclaimed: int = 0
    acked: int = 0
    dead_lettered: int = 0


class RedisStreamTransport:
    """`Transport` over Redis Streams.

    Args:
        client: a `redis.asyncio.Redis` created with `decode_responses=False` (payloads are binary).
        config: bounds and timeouts.
        owns_client: close `client` in `close()`.
    """

    def __init__(self, client: aredis.Redis, config: TransportConfig, *, owns_client: bool = False):
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError("RedisStreamTransport needs a client with decode_responses=False (payloads are msgpack bytes)")
        self._redis = client
        self._config = config
        self._owns_client = owns_client
        self._publish_script = client.register_script(_PUBLISH_LUA)
        self._trim_script = client.register_script(_TRIM_ACKED_LUA)
        self._groups_ready: set[tuple[str, str]] = set()
        self._claim_cursor: dict[tuple[str, str], bytes] = {}
        self.stats = TransportStats()

    @classmethod
    def from_config(cls, config: TransportConfig) -> RedisStreamTransport:
        """A transport owning a new client for `config.url` (which must be set)."""
        if config.url is None:
            raise ConfigError("transport.url is None: start a redis-server (the launcher does) and set its URL")
        return cls(redis_client(config.url), config, owns_client=True)

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create `group` on `stream` at the stream's start (MKSTREAM); a no-op when it exists.

        Args:
            stream: stream key.
            group: consumer group name.
        """
        try:
            await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._groups_ready.add((stream, group))

    async def publish(self, stream: str, message: WireMessage) -> str:
        """Append `message` to `stream`, waiting while the stream's backlog is at the bound.

        Args:
            stream: stream key.
            message: the wire message.

        Returns:
            The new entry id.
        """
        return (await self.publish_many(stream, [message]))[0]

    async def publish_many(self, stream: str, messages: Sequence[WireMessage]) -> list[str]:
        """Append `messages` atomically (all or none: a GRPO group is never half-published by a
        producer that dies), waiting while the backlog is at the bound. The bound is checked
        before the batch, so a stream may exceed it by at most one batch.

        Returns:
            The new entry ids, in order.
        """
        payloads = [encode(m) for m in messages]
        if not payloads:
            return []
        pause_s, started = 0.005, None
        loop = asyncio.get_running_loop()
        while True:
            res = await self._publish_script(keys=[stream], args=[self._config.backlog_bound, PAYLOAD_FIELD, *payloads])
            if res[0] != 0:
                self.stats.published += len(payloads)
                if started is not None:
                    self.stats.publish_wait_s += loop.time() - started
                return [_text(i) for i in res[2]]
            if started is None:
                started = loop.time()
                logger.debug("stream %s backlog %d at bound %d; publisher waits", stream, res[1], self._config.backlog_bound)
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, self._config.publish_poll_max_s)

    async def read(self, stream: str, group: str, consumer: str, count: int,
                   block_ms: int | None = None) -> list[tuple[str, WireMessage]]:
        """Up to `count` entries: first stale ones reclaimed from dead consumers, then new ones.

        Args:
            stream: stream key.
            group: consumer group (created if missing).
            consumer: this consumer's name, unique per live process.
            count: most entries to return.
            block_ms: how long to wait for new entries; None = `config.block_ms`; 0 = no wait.
                No wait at all when something was reclaimed.

        Returns:
            `(entry_id, message)` pairs. Undecodable or too-often-delivered entries are not
            returned: they are dead-lettered and acked.
        """
        if (stream, group) not in self._groups_ready:
            await self.ensure_group(stream, group)
        block = self._config.block_ms if block_ms is None else block_ms
        try:
            raw = await self._fetch(stream, group, consumer, count, block)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group(stream, group)  # the stream was deleted under us
            raw = await self._fetch(stream, group, consumer, count, block)
        return await self._decode(stream, group, consumer, raw)

    async def read_own_pending(self, stream: str, group: str, consumer: str, count: int) -> list[tuple[str, WireMessage]]:
        """Entries delivered to `consumer` earlier and not yet acked (XREADGROUP from id 0).

        A consumer restarting under the same name (the learner after a crash) gets back what it
        had read but not committed, at once, without waiting for the idle timeout of a reclaim.
        """
        if (stream, group) not in self._groups_ready:
            await self.ensure_group(stream, group)
        resp = await self._redis.xreadgroup(group, consumer, {stream: "0"}, count=count)
        return await self._decode(stream, group, consumer, _stream_entries(resp))

    async def _decode(self, stream: str, group: str, consumer: str,
                      raw: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[str, WireMessage]]:
        """Decode raw entries; undecodable ones are dead-lettered (and acked), never half-read."""
        out: list[tuple[str, WireMessage]] = []
        dead: list[tuple[bytes, dict[bytes, bytes], str, int]] = []
        for entry_id, fields in raw:
            payload = fields.get(PAYLOAD_FIELD)
            if payload is None:
                dead.append((entry_id, fields, f"entry has no {PAYLOAD_FIELD.decode()!r} field (fields: {sorted(_text(k) for k in fields)})", 1))
                continue
            try:
                out.append((_text(entry_id), decode(payload)))
            except (SchemaError, SchemaVersionError) as e:
                dead.append((entry_id, fields, f"{type(e).__name__}: {e}", 1))
        await self._dead_letter(stream, group, consumer, dead)
        self.stats.read += len(out)
        return out

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Ack `ids` for `group`; then, with `trim_acked`, drop entries every group has acked.

        Args:
            stream: stream key.
            group: consumer group.
            ids: entry ids returned by `read`.

        Returns:
            How many entries were pending and are now acked.
        """
        if not ids:
            return 0
        acked = int(await self._redis.xack(stream, group, *ids))
        self.stats.acked += acked
        if self._config.trim_acked:
            await self._trim_script(keys=[stream])
        return acked

    async def backlog(self, stream: str) -> int:
        """The stream's backlog as `publish` measures it (slowest group's undelivered + pending)."""
        res = await self._publish_script(keys=[stream], args=[_BACKLOG_PROBE_CAP])
        return int(res[1])

    async def close(self) -> None:
        """Close the Redis client when this transport created it."""
        if self._owns_client:
            await self._redis.aclose()

    async def _fetch(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Raw entries: reclaimed stale ones first, then new ones (blocking only when none were reclaimed)."""
        raw = await self._reclaim(stream, group, consumer, count)
        if len(raw) < count:
            # BLOCK 0 means "forever" to Redis; we mean "do not block".
            block_arg = None if (raw or block_ms <= 0) else block_ms
            resp = await self._redis.xreadgroup(group, consumer, {stream: ">"}, count=count - len(raw), block=block_arg)
            raw.extend(_stream_entries(resp))
        return raw

    async def _reclaim(self, stream: str, group: str, consumer: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Claim entries idle past `claim_idle_ms`; dead-letter those delivered too often."""
        # XAUTOCLAIM scans the pending list like SCAN (about 10*count entries a call): resume from
        # its cursor so stale entries behind many live in-flight ones are reached too.
        cursor = self._claim_cursor.get((stream, group), b"0-0")
        resp = await self._redis.xautoclaim(stream, group, consumer, min_idle_time=self._config.claim_idle_ms,
                                            start_id=cursor, count=count)
        self._claim_cursor[(stream, group)] = resp[0]
        claimed = [(eid, fields) for eid, fields in resp[1] if fields is not None]
        if len(resp) > 2 and resp[2]:
            # Entries deleted from the stream while pending; XAUTOCLAIM already dropped them from the PEL.
            logger.warning("stream %s group %s: %d pending entries were deleted before processing", stream, group, len(resp[2]))
        if not claimed:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for eid, _ in claimed:
            pipe.xpending_range(stream, group, min=eid, max=eid, count=1)
        counts = [rows[0]["times_delivered"] if rows else 1 for rows in await pipe.execute()]
        keep, dead = [], []
        for (eid, fields), delivered in zip(claimed, counts, strict=True):
            if delivered > self._config.max_deliveries:
                dead.append((eid, fields, f"delivered {delivered - 1} times without an ack (max_deliveries={self._config.max_deliveries})", delivered - 1))
            else:
                keep.append((eid, fields))
        self.stats.reclaimed += len(keep)
        if keep:
            logger.info("stream %s group %s: consumer %s reclaimed %d stale entries", stream, group, consumer, len(keep))
        await self._dead_letter(stream, group, consumer, dead)
        return keep

    async def _dead_letter(self, stream: str, group: str, consumer: str,
                           entries: list[tuple[bytes, dict[bytes, bytes], str, int]]) -> None:
        """Copy each entry to `<stream>:dead` with the reason, and ack it, atomically per batch."""
        if not entries:
            return
        pipe = self._redis.pipeline(transaction=True)
        for eid, fields, reason, deliveries in entries:
            pipe.xadd(dead_letter_stream(stream), {
                b"entry_id": eid, b"payload": fields.get(PAYLOAD_FIELD, b""), b"stream": stream, b"group": group,
                b"consumer": consumer, b"reason": reason[:2000], b"deliveries": deliveries})
            pipe.xack(stream, group, eid)
            logger.warning("stream %s entry %s dead-lettered: %s", stream, _text(eid), reason[:300])
        await pipe.execute()
        self.stats.dead_lettered += len(entries)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_entries(resp: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries of a one-stream XREADGROUP reply, in RESP2 (list) or RESP3 (map) shape."""
    if not resp:
        return []
    groups = resp.values() if isinstance(resp, dict) else (entries for _, entries in resp)
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entries in groups:
        for item in entries:
            eid, fields = item[0], item[1]
            if fields is not None:
                out.append((eid, fields))
    return out
