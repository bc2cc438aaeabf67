"""Protocols of the shared layer: the transport that carries wire messages between roles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from deepretrieval.common.wire import WireMessage


@runtime_checkable
class Transport(Protocol):
    """At-least-once, backpressured message streams with consumer groups (DESIGN.md §4 "Streams").

    Intended use on a consumer: `read` a batch, process it, `publish` the results downstream,
    then `ack` the batch. An entry not acked is delivered again (to this or another consumer), so
    downstream de-duplicates by uid.
    """

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group `group` on `stream` (and the stream) if missing; idempotent.

        A new group starts at the beginning of the stream, so nothing published before it
        existed is skipped.
        """
        ...

    async def publish(self, stream: str, message: WireMessage) -> str:
        """Append `message`, first waiting while the stream's unacked backlog is at its bound.

        Returns:
            The entry id.
        """
        ...

    async def publish_many(self, stream: str, messages: Sequence[WireMessage]) -> list[str]:
        """Append `messages` all at once or not at all (a whole GRPO group); waits like `publish`.

        Returns:
            The entry ids, in order.
        """
        ...

    async def read_own_pending(self, stream: str, group: str, consumer: str, count: int) -> list[tuple[str, WireMessage]]:
        """Entries this consumer read earlier and has not acked (after a restart)."""
        ...

    async def read(self, stream: str, group: str, consumer: str, count: int,
                   block_ms: int | None = None) -> list[tuple[str, WireMessage]]:
        """Up to `count` entries for `consumer`: first ones reclaimed from dead consumers, then new ones.

        Entries that cannot be decoded, or were delivered too often, go to the dead-letter
        stream instead of being returned.

        Returns:
            `(entry_id, message)` pairs, oldest first within each source; empty after `block_ms`.
        """
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Mark entries as processed by `group`.

        Returns:
            How many of `ids` were pending and are now acked.
        """
        ...

    async def close(self) -> None:
        """Release connections this transport owns."""
        ...
