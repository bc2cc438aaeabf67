"""Assemble training batches from scored samples: full groups only, fresh enough, each uid once.

Reads `Scored` from `<run>:scored` (consumer group "learner"). A group is complete when all G of
its samples arrived. Complete groups with an `unavailable` member, or older than `max_staleness`
versions, are dropped (counted, acked at once, their admission slots released). The others queue
oldest first; `next_batch` returns `groups_per_step` of them. With a `spread` test (DAPO's
over-sampling) a complete group whose rewards all tie is dropped at once too, and a step waits for
`groups_per_step` groups that pass or until it has read `max_groups` complete groups. `drain`
reads on while a step trains, so dropped groups free their admission slots without waiting for the
step to end; a queued group is re-checked for staleness when a step takes it. The entries
of the groups a step returns stay pending until the caller commits (checkpoints) the step that
trained them, so a crash redelivers exactly what the last checkpoint did not cover; the uid ledger
drops anything already trained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deepretrieval.common.base import Transport
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.streams import scored_stream
from deepretrieval.common.wire import Scored

log = logging.getLogger(__name__)

LEARNER_GROUP = "learner"


@dataclass
class Batch:
    """Groups for one optimizer step and the stream entries they came from."""

    scored: list[Scored]
    entry_ids: list[str]
    group_ids: list[str]
    dropped: list[Scored] = field(default_factory=list)
    """Samples of the groups dropped for tied rewards while this batch filled (already acked)."""

    @property
    def uids(self) -> list[str]:
        return [s.rollout.uid for s in self.scored]


@dataclass
class BatcherStats:
    """What the batcher saw (cumulative)."""

    samples_read: int = 0
    duplicates: int = 0
    groups_complete: int = 0
    groups_unavailable: int = 0
    groups_stale: int = 0
    groups_uniform: int = 0
    groups_incomplete_dropped: int = 0
    groups_trained: int = 0
    staleness: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    items: list[Scored] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    first_seen: float = field(default_factory=time.monotonic)


class Batcher:
    """Full, fresh, de-duplicated groups from the scored stream.

    Args:
        transport: the stream transport (a config with a long claim idle: the learner holds
            entries pending until a checkpoint covers them).
        coordinator: admission slots are released here when groups are consumed or dropped.
        run: run name.
        group_size: G, samples per group.
        groups_per_step: groups per batch.
        max_staleness: most versions a group may lag the learner.
        ledger: uids already trained (restored from the checkpoint); updated by `commit_trained`.
        consumer: this learner's consumer name (stable across restarts).
        incomplete_timeout_s: a group still missing samples after this long is dropped (its actor died).
        spread: None, or a test a complete group must pass to be trained (`sequences.has_spread`):
            one that fails is dropped as it arrives and the step waits for another.
        max_groups: with `spread`, a step stops waiting once it has read this many complete
            groups (those dropped included; reads come in chunks, so maybe more) and returns the
            groups that passed, maybe none.
    """

    def __init__(self, transport: Transport, coordinator: Coordinator, run: str, *, group_size: int, groups_per_step: int,
                 max_staleness: int, ledger: set[str], consumer: str = "learner-0", incomplete_timeout_s: float = 600.0,
                 spread: Callable[[Sequence[Scored]], bool] | None = None, max_groups: int | None = None):
        if max_groups is not None and max_groups < groups_per_step:
            raise ValueError(f"max_groups ({max_groups}) must be at least groups_per_step ({groups_per_step})")
        self._transport = transport
        self._coord = coordinator
        self._stream = scored_stream(run)
        self._g = group_size
        self._per_step = groups_per_step
        self._max_staleness = max_staleness
        self.ledger = ledger
        self._consumer = consumer
        self._incomplete_timeout_s = incomplete_timeout_s
        self._pending: dict[str, _Pending] = {}
        self._ready: OrderedDict[str, _Pending] = OrderedDict()
        self._recovered = False
        self._spread = spread
        self._max_groups = max_groups
        self._dropped_this_step: list[Scored] = []
        self._lineage: tuple[int, int] | None = None
        self.stats = BatcherStats()

    def continue_lineage(self, resumed_version: int, first_version: int) -> None:
        """Tell the batcher that this learner resumed at `resumed_version` and numbers on from `first_version`.

        A restarted learner continues after the versions its crashed predecessor announced
        (`Learner.continue_numbering`), so `first_version - 1 - resumed_version` versions belong
        to a lineage that no longer exists. `lag` does not charge samples for them.
        """
        if first_version <= resumed_version:
            raise ValueError(f"first_version {first_version} must follow resumed_version {resumed_version}")
        self._lineage = (resumed_version, first_version)

    def lag(self, behaviour_version: int, learner_version: int) -> int:
        """Learner steps between a sample's behaviour policy and the learner's policy.

        Versions this lineage published count one step each. A sample generated before the
        restart (`behaviour_version < first_version`) is counted from the checkpoint the learner
        resumed at: its steps since that checkpoint plus, if older, the checkpoint's lead on it.
        Steps of the lost lineage are not counted: the learner lost them, not the sample; the
        importance weight against the recorded behaviour log-probs still corrects the mismatch.
        Without this, every sample in flight at a crash was "stale" by the versions skipped and
        dropped, and the run lost it (bench chaos, 2026-12-06: 28 of 244 samples in 3 trials).
        """
        if self._lineage is None or behaviour_version >= self._lineage[1]:
            return learner_version - behaviour_version
        resumed, first = self._lineage
        return (learner_version - first) + max(0, resumed - behaviour_version)

    async def _feed(self, entries: list[tuple[str, object]], learner_version: int) -> None:
        ack_now: list[str] = []
        for entry_id, msg in entries:
            if not isinstance(msg, Scored):
                ack_now.append(entry_id)
                continue
            self.stats.samples_read += 1
            uid = msg.rollout.uid
            group = self._pending.get(msg.rollout.group_id)
            if uid in self.ledger or (group is not None and any(s.rollout.uid == uid for s in group.items)):
                self.stats.duplicates += 1  # trained already, or a redelivery of one we hold
                ack_now.append(entry_id)
                continue
            if group is None:
                group = self._pending[msg.rollout.group_id] = _Pending()
            group.items.append(msg)
            group.entry_ids.append(entry_id)
            if len(group.items) == self._g:
                del self._pending[msg.rollout.group_id]
                ack_now += await self._complete(msg.rollout.group_id, group, learner_version)
        ack_now += await self._expire_incomplete()
        if ack_now:
            await self._transport.ack(self._stream, LEARNER_GROUP, ack_now)

    async def _complete(self, group_id: str, group: _Pending, learner_version: int) -> list[str]:
        self.stats.groups_complete += 1
        lag = self._group_lag(group, learner_version)
        if any(s.status == "unavailable" for s in group.items):
            self.stats.groups_unavailable += 1
        elif lag > self._max_staleness:
            self.stats.groups_stale += 1
            log.warning("group %s is %d versions old (max %d): dropped", group_id, lag, self._max_staleness)
        elif self._spread is not None and not self._spread(group.items):
            self.stats.groups_uniform += 1
            self._dropped_this_step += group.items
        else:
            self._ready[group_id] = group
            return []
        await self._coord.consume([group_id])
        return group.entry_ids

    async def _expire_incomplete(self) -> list[str]:
        now = time.monotonic()
        expired = [gid for gid, g in self._pending.items() if now - g.first_seen > self._incomplete_timeout_s]
        out: list[str] = []
        for gid in expired:
            g = self._pending.pop(gid)
            self.stats.groups_incomplete_dropped += 1
            out += g.entry_ids
            await self._coord.consume([gid])
            log.warning("group %s stayed incomplete (%d of %d) for %.0fs: dropped", gid, len(g.items), self._g, self._incomplete_timeout_s)
        return out

    def _group_lag(self, group: _Pending, learner_version: int) -> int:
        """Learner steps between the group's oldest behaviour policy and `learner_version`."""
        return max(self.lag(s.rollout.policy_version, learner_version) for s in group.items)

    async def _drop_stale_ready(self, learner_version: int) -> None:
        """Drop (ack, free the slot of) each queued group that the steps since it queued made too old."""
        stale = [gid for gid, g in self._ready.items() if self._group_lag(g, learner_version) > self._max_staleness]
        if not stale:
            return
        ack: list[str] = []
        for gid in stale:
            ack += self._ready.pop(gid).entry_ids
            self.stats.groups_stale += 1
            log.warning("queued group %s grew older than %d versions while it waited: dropped", gid, self._max_staleness)
        await self._coord.consume(stale)
        await self._transport.ack(self._stream, LEARNER_GROUP, ack)

    async def drain(self, learner_version: int, until: asyncio.Future, block_ms: int = 200) -> None:
        """Read the stream while a step trains, until `until` is done.

        Groups that will not be trained (tied under the spread test, stale, unavailable) are
        dropped as they complete, so their admission slots free at once and the actors go on
        sampling; the others queue for the next step (re-checked for staleness when it starts).
        Without this, a step that drops most groups for ties left the actors waiting for slots
        for the whole of the previous training step.
        """
        if not self._recovered:
            return  # the first next_batch re-reads this consumer's own pending entries first
        while not until.done():
            entries = await self._transport.read(self._stream, LEARNER_GROUP, self._consumer, 512, block_ms=block_ms)
            await self._feed(entries, learner_version)

    def _read_enough(self) -> bool:
        """Whether this step has read at least its `max_groups` (only with a spread test)."""
        dropped = len(self._dropped_this_step) // self._g
        return self._max_groups is not None and dropped + len(self._ready) >= self._max_groups

    async def next_batch(self, learner_version: int, stop: asyncio.Event | None = None, block_ms: int = 200) -> Batch | None:
        """The next `groups_per_step` ready groups, oldest first; None when `stop` is set first."""
        if not self._recovered:
            # After a restart: what this consumer read before and did not commit comes back first.
            while entries := await self._transport.read_own_pending(self._stream, LEARNER_GROUP, self._consumer, 512):  # type: ignore[attr-defined]
                await self._feed(entries, learner_version)
                if len(entries) < 512:
                    break
            self._recovered = True
        await self._drop_stale_ready(learner_version)
        while len(self._ready) < self._per_step and not self._read_enough():
            if stop is not None and stop.is_set():
                return None
            entries = await self._transport.read(self._stream, LEARNER_GROUP, self._consumer, 512, block_ms=block_ms)
            await self._feed(entries, learner_version)
        groups = [self._ready.popitem(last=False) for _ in range(min(self._per_step, len(self._ready)))]
        dropped, self._dropped_this_step = self._dropped_this_step, []
        if len(groups) < self._per_step:
            log.warning("a step read %d groups and %d had a reward spread: training on those", len(dropped) // self._g + len(groups), len(groups))
        scored = [s for _, g in groups for s in g.items]
        self.stats.groups_trained += len(groups)
        self.stats.staleness += [self.lag(s.rollout.policy_version, learner_version) for s in scored]
        return Batch(scored, [e for _, g in groups for e in g.entry_ids], [gid for gid, _ in groups], dropped)
