"""The learner's pluggable seams: how a new policy version reaches the actors (`WeightSync`).

Implementations satisfy the protocols structurally (no subclassing):
`learner/weight_sync.py` (`FilesystemWeightSync`: safetensors folder + Redis announcement, what
CPU actors reload with vLLM's `reload_weights`) and `learner/nccl_weight_sync.py`
(`NcclWeightSync`: vLLM's native NCCL weight transfer, GPU only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class PublishablePolicy(Protocol):
    """What a `WeightSync` needs from the learner; `learner.trainer.Trainer` satisfies it.

    Every trainer rank calls `WeightSync.publish` with its own policy object: exporting is a
    collective (FSDP gathers the full state onto rank 0), and rank 0 alone writes or sends.
    """

    rank: int
    """This process's rank in the learner's process group (0 when unsharded)."""

    model: torch.nn.Module
    """The (possibly FSDP-sharded) policy whose parameters are published."""

    def export_safetensors(self, out_dir: Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write the policy as a Hugging Face safetensors folder at `out_dir` (rank 0 writes; collective).

        Args:
            out_dir: the folder to create.
            dtype: cast floating tensors to this; None keeps the master dtype.

        Returns:
            out_dir.
        """
        ...


@dataclass(frozen=True)
class WeightPublication:
    """What one `WeightSync.publish` did and how long each part took.

    Args:
        version: the policy version published.
        weights_dir: the folder actors load it from; None for in-band transfers (NCCL) and on
            ranks other than 0.
        bytes: weight bytes written or sent (0 on ranks other than 0).
        export_s: seconds to gather and write (or send) the weights.
        announce_s: seconds to announce the version on Redis.
        prune_s: seconds to delete versions beyond the retention limit.
        announced: whether the announcement now names this version (False when a newer one was
            already announced, or on ranks other than 0).
        pruned: folders deleted by this publication.
    """

    version: int
    weights_dir: Path | None
    bytes: int
    export_s: float
    announce_s: float = 0.0
    prune_s: float = 0.0
    announced: bool = False
    pruned: tuple[Path, ...] = field(default=())

    @property
    def total_s(self) -> float:
        """Seconds of the whole publication."""
        return self.export_s + self.announce_s + self.prune_s


@runtime_checkable
class WeightSync(Protocol):
    """Publishes policy versions to the actors; after `publish` returns, actors can load the version."""

    async def publish(self, version: int, policy: PublishablePolicy) -> WeightPublication:
        """Make `policy`'s current weights available to the actors as `version`.

        Called on every trainer rank (the export is collective). Atomic: actors see the whole
        version or nothing; on an error nothing is announced.

        Args:
            version: the policy version, larger than every version published before.
            policy: the learner's policy (a `Trainer`).

        Returns:
            What was published and the time each part took.
        """
        ...

    def close(self) -> None:
        """Release connections and communicators; the sync is unusable afterwards."""
        ...
