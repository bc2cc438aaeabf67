"""Publish policy versions as safetensors folders and announce them on Redis (the CPU path, DESIGN.md §2).

Version v is written to `root/v{v:06d}` (a Hugging Face folder: weights, config, tokenizer), then
announced through the run's `Coordinator`; actors read the announcement between batches and
reload the folder in place (vLLM `reload_weights`, STACK.md §4). Old versions beyond `keep` are
deleted afterwards.

Atomicity: the export goes to a hidden `.v{v:06d}.partial-<pid>` folder beside the target and is
renamed into place only when complete, so a reader sees the whole folder or none; a failed export
is removed and nothing is announced. Deletion renames a folder to a hidden name before removing it,
for the same reason. Files are not fsynced: this guards against a crashed process, not a power
cut (a lost version is re-published from the learner's checkpoint).

Retention race: an actor still reading version v when v is pruned keeps its open files (POSIX
unlink semantics), but one that *starts* loading v after the prune fails; with `keep >= 2` that
needs `keep` publications within one actor reload (~0.4 s), which a learner step never is.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.common.coordination import Coordinator
from deepretrieval.learner.base import PublishablePolicy, WeightPublication

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^v(\d{6,})$")
# Hidden leftovers: ours (.v000042.partial-PID, .v000042.deleting-PID) and write_hf_checkpoint's
# (..v000042.partial-PID.tmp-PID); the last number is the writing process.
_PARTIAL_DIR = re.compile(r"^\.{1,2}v\d{6,}\..*-(\d+)$")


def version_dir_name(version: int) -> str:
    """The folder name of a policy version: 'v000042' for 42."""
    return f"v{version:06d}"


def published_versions(root: Path) -> list[int]:
    """The complete version folders under `root`, ascending (hidden partial folders excluded).

    Args:
        root: the weight store folder.

    Returns:
        Version numbers, e.g. [3, 4, 5]; [] when `root` does not exist.
    """
    if not Path(root).is_dir():
        return []
    found = (_VERSION_DIR.match(p.name) for p in Path(root).iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m is not None)


def versions_to_prune(versions: list[int], announced: int, keep: int) -> list[int]:
    """Which versions retention deletes: all but the `keep` newest announced-or-older ones.

    Never the newest version on disk, never one newer than `announced` (published but not yet
    announced, or announced by a concurrent publisher), never `announced` itself.

    Args:
        versions: the versions on disk, ascending.
        announced: the version the Coordinator names now.
        keep: how many versions at or below `announced` to keep (>= 1).

    Returns:
        Versions to delete, ascending.
    """
    eligible = [v for v in versions if v <= announced]
    protected = set(eligible[-keep:]) | {announced} | set(versions[-1:])
    return [v for v in eligible if v not in protected]


def _remove_atomically(path: Path) -> None:
    """Hide `path` under a dot name (one rename), then delete it."""
    hidden = path.parent / f".{path.name}.deleting-{os.getpid()}"
    path.rename(hidden)
    shutil.rmtree(hidden)


class FilesystemWeightSync:
    """A `WeightSync` over a folder of safetensors versions and the run's Redis announcement.

    Args:
        root: the weight store; actors must be able to read it (a shared volume on a cluster).
        coordinator: the run's Coordinator; `publish` announces through it.
        keep: versions kept on disk (>= 1); older announced ones are deleted after each publish.
        dtype: cast the weights when exporting (e.g. torch.bfloat16 for bf16 actors); None keeps
            the learner's float32.

    Raises:
        ValueError: keep < 1.
    """

    def __init__(self, root: Path, coordinator: Coordinator, keep: int = 3, *, dtype: torch.dtype | None = None):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the announced version is always kept), got {keep}")
        # Announced paths are read by other processes (other working directories): make them absolute.
        self.root = Path(root).absolute()
        self._coordinator = coordinator
        self._keep = keep
        self._dtype = dtype

    def version_dir(self, version: int) -> Path:
        """Where `version` is (or will be) published."""
        return self.root / version_dir_name(version)

    async def publish(self, version: int, policy: PublishablePolicy) -> WeightPublication:
        """Export `policy` as `version`, announce it, prune old versions (see `WeightSync.publish`).

        Args:
            version: the policy version (>= 0); an existing folder of that version (a crashed
                run's) is replaced.
            policy: the learner's policy; every trainer rank calls this (the export is collective).

        Returns:
            The publication with its timings; on ranks other than 0 only `export_s` is set.

        Raises:
            ValueError: `version` is negative.
            Exception: whatever the export raised; the partial folder is removed and nothing is
                announced.
        """
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        target = self.version_dir(version)
        writer = policy.rank == 0
        partial = self.root / f".{target.name}.partial-{os.getpid()}"
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        if writer:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
        try:
            await loop.run_in_executor(None, functools.partial(policy.export_safetensors, partial, dtype=self._dtype))
            if writer:
                if not any(partial.glob("*.safetensors")):
                    raise RuntimeError(f"export_safetensors wrote no *.safetensors into {partial}")
                self._move_into_place(partial, target)
        except BaseException:
            if writer:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        export_s = time.perf_counter() - t0
        if not writer:
            return WeightPublication(version=version, weights_dir=None, bytes=0, export_s=export_s)

        nbytes = sum(f.stat().st_size for f in target.glob("*.safetensors"))
        t0 = time.perf_counter()
        await self._coordinator.announce(version, target)
        latest = await self._coordinator.latest()
        announce_s = time.perf_counter() - t0
        announced = latest is not None and latest.version == version
        if not announced:
            log.warning("published version %d at %s, but version %s is already announced; actors keep the newer one",
                        version, target, None if latest is None else latest.version)

        t0 = time.perf_counter()
        # Deleting a version is blocking file I/O; actors can load the announced one meanwhile.
        pruned = await loop.run_in_executor(None, self._prune, latest.version) if latest is not None else []
        prune_s = time.perf_counter() - t0
        log.info("published policy v%d (%.0f MB) in %.2fs + announce %.3fs + prune %.3fs", version, nbytes / 1e6,
                 export_s, announce_s, prune_s)
        return WeightPublication(version=version, weights_dir=target, bytes=nbytes, export_s=export_s,
                                 announce_s=announce_s, prune_s=prune_s, announced=announced, pruned=tuple(pruned))

    @staticmethod
    def _move_into_place(partial: Path, target: Path) -> None:
        """Rename the finished export to its version folder, replacing one left by an earlier run.

        A learner resumed from a checkpoint at version C re-publishes C (and C+1, ... later), whose
        folders a crashed predecessor may have written: the resumed learner's weights win. The old
        folder is hidden first, so a reader finds the old folder, the new one, or (for the instant
        between the two renames) none, never a mix.
        """
        if not target.exists():
            partial.rename(target)
            return
        log.warning("version folder %s exists (an earlier run's); replacing it with this learner's weights", target)
        stale = target.parent / f".{target.name}.deleting-{os.getpid()}"
        target.rename(stale)
        partial.rename(target)
        shutil.rmtree(stale, ignore_errors=True)

    def _prune(self, announced: int) -> list[Path]:
        """Delete versions retention drops and hidden leftovers of other processes; returns what was deleted."""
        removed = []
        for v in versions_to_prune(published_versions(self.root), announced, self._keep):
            path = self.version_dir(v)
            _remove_atomically(path)
            removed.append(path)
        for p in self.root.iterdir():
            m = _PARTIAL_DIR.match(p.name)
            # A single learner rank writes the store: another pid's partial folder is a crashed run's.
            if m is not None and int(m.group(1)) != os.getpid():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed

    def close(self) -> None:
        """Nothing to release (the Coordinator's Redis client belongs to the caller)."""
