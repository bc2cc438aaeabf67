"""Run-wide coordination state in Redis: the announced policy version and group admission.

Policy versions: the learner (through its WeightSync) announces `(version, weights_dir)`; actors
read the latest announcement between batches and load it.

Admission control (DESIGN.md §4): a group may start generating only while fewer than
`max_in_flight` groups are generated-but-not-yet-consumed by the learner. The learner consumes
`groups_per_step` groups per version, so `max_in_flight = (max_staleness + 1) * groups_per_step`
bounds how many versions old a sample can be when it is trained: the limit is enforced before
generation, not by discarding samples after the fact.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aredis

# KEYS[1] = in-flight counter, KEYS[2] = set of consumed group ids; ARGV = group ids.
# A group frees its slot once, however often it is consumed (a restarted learner re-reads the
# groups its last checkpoint did not cover).
_CONSUME_LUA = """
local freed = 0
for i = 1, #ARGV do
  freed = freed + redis.call('SADD', KEYS[2], ARGV[i])
end
if freed > 0 then
  redis.call('DECRBY', KEYS[1], freed)
end
return freed
"""

# KEYS[1] = in-flight counter, KEYS[2] = the owner's reserved-not-yet-published counter;
# ARGV[1] = groups wanted; ARGV[2] = limit. Atomic check-and-add.
_RESERVE_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if cur + want <= tonumber(ARGV[2]) then
  redis.call('INCRBY', KEYS[1], want)
  redis.call('INCRBY', KEYS[2], want)
  return 1
end
return 0
"""

# KEYS[1] = in-flight counter, KEYS[2] = owner's reserved counter. Frees what a dead owner
# reserved and never published; returns that count.
_RECLAIM_LUA = """
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > 0 then
  redis.call('DECRBY', KEYS[1], held)
end
redis.call('SET', KEYS[2], 0)
return held
"""


@dataclass(frozen=True)
class PolicyAnnouncement:
    """A published policy version and where its weights are (a HF safetensors folder)."""

    version: int
    weights_dir: Path


class Coordinator:
    """Policy announcements and group admission for one run.

    Args:
        client: asyncio Redis client.
        run: run name; every key is prefixed with it.
    """

    def __init__(self, client: aredis.Redis, run: str):
        self._redis = client
        self._run = run
        self._reserve = client.register_script(_RESERVE_LUA)
        self._consume = client.register_script(_CONSUME_LUA)
        self._reclaim = client.register_script(_RECLAIM_LUA)

    @property
    def _policy_key(self) -> str:
        return f"{self._run}:policy"

    @property
    def _inflight_key(self) -> str:
        return f"{self._run}:groups_in_flight"

    async def announce(self, version: int, weights_dir: Path) -> None:
        """Publish `version`; an older version never replaces a newer one."""
        payload = json.dumps({"version": int(version), "weights_dir": str(weights_dir)})
        current = await self.latest()
        if current is not None and current.version >= version:
            return
        await self._redis.set(self._policy_key, payload)
        await self._redis.publish(self._policy_key, payload)

    async def latest(self) -> PolicyAnnouncement | None:
        """The newest announced policy, or None before the first announcement."""
        raw = await self._redis.get(self._policy_key)
        if raw is None:
            return None
        data = json.loads(raw)
        return PolicyAnnouncement(int(data["version"]), Path(data["weights_dir"]))

    def _owner_key(self, owner: str) -> str:
        return f"{self._run}:reserved:{owner}"

    async def try_admit(self, groups: int, max_in_flight: int, owner: str = "-") -> bool:
        """Reserve `groups` in-flight slots for `owner` if the limit allows; True when reserved."""
        return bool(await self._reserve(keys=[self._inflight_key, self._owner_key(owner)], args=[groups, max_in_flight]))

    async def published(self, owner: str, groups: int = 1) -> None:
        """`owner` published `groups` of its reserved groups (they now count until consumed)."""
        await self._redis.decrby(self._owner_key(owner), groups)

    async def reclaim(self, owner: str) -> int:
        """Free the slots `owner` reserved but never published (it died, or stopped); returns how many."""
        return int(await self._reclaim(keys=[self._inflight_key, self._owner_key(owner)]))

    async def admit(self, groups: int, max_in_flight: int, poll_s: float = 0.05, stop: asyncio.Event | None = None,
                    owner: str = "-") -> bool:
        """Wait until `groups` slots are reserved for `owner`; False when `stop` was set first."""
        if groups > max_in_flight:
            raise ValueError(f"cannot admit {groups} groups with max_in_flight={max_in_flight}")
        delay = 0.005
        while not await self.try_admit(groups, max_in_flight, owner):
            if stop is not None and stop.is_set():
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, poll_s)
        return True

    async def consume(self, group_ids: list[str]) -> int:
        """Free the slots of groups the learner trained on or dropped, once per group id.

        Returns:
            How many slots were freed (groups consumed before are not counted again).
        """
        if not group_ids:
            return 0
        return int(await self._consume(keys=[self._inflight_key, f"{self._run}:groups_consumed"], args=list(group_ids)))

    async def in_flight(self) -> int:
        return int(await self._redis.get(self._inflight_key) or 0)
