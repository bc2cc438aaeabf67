"""Resumable training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

A checkpoint folder `step_00000042/` holds the sharded model and optimizer state (`.metadata`,
`__<rank>_0.distcp`; DCP reshards on load, so a different world size can resume it), the RNG
states of every rank (`rng_rank<r>.pt`) and `trainer_state.json` (step, policy version, the
caller's `extra`). It is written to `<dir>.tmp` and renamed into place once every rank has
finished, so a folder without the suffix is always complete; `latest_checkpoint` trusts only those.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from deepretrieval.common.errors import ModelError
from deepretrieval.learner.sharding import barrier, rank_and_world

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """The small, non-tensor part of a checkpoint.

    Args:
        step: optimizer steps taken.
        policy_version: version of the current weights (what actors tag their rollouts with).
        extra: the caller's JSON-serialisable state (e.g. the ledger of consumed uids).
    """

    step: int = 0
    policy_version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _single_process_quiet(world: int) -> Iterator[None]:
    """DCP warns on every single-process save/load that it "assumes" one process; here we asked for it."""
    with warnings.catch_warnings():
        if world == 1:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def checkpoint_path(root: Path, step: int) -> Path:
    """The folder of the checkpoint after `step` optimizer steps: `<root>/step_<8 digits>`."""
    return Path(root) / f"step_{step:08d}"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState) -> Path:
    """Save model + optimizer (sharded), RNG states and `state` to `path`, atomically.

    Collective: every rank calls it with the same `path`. An existing checkpoint at `path` is
    replaced only after the new one is complete.

    Raises:
        TypeError: `state.extra` is not JSON-serialisable.
    """
    path = Path(path)
    rank, world = rank_and_world()
    try:
        state_json = json.dumps({"step": state.step, "policy_version": state.policy_version,
                                 "world_size": world, "extra": state.extra}, indent=1)
    except TypeError as e:
        raise TypeError(f"checkpoint extra must be JSON-serialisable (lists, dicts, str, numbers): {e}") from e
    tmp = path.with_name(path.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _single_process_quiet(world):
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp), no_dist=world == 1)
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        (tmp / STATE_FILE).write_text(state_json)
    barrier()
    if rank == 0:
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s (step %d, policy version %d)", path, state.step, state.policy_version)
    barrier()
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainerState:
    """Load a checkpoint written by `save_checkpoint` into `model` and `optimizer` (in place).

    Collective. Restores this rank's RNG states when the checkpoint has them (same world size).

    Raises:
        ModelError: `path` is not a complete checkpoint.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file() or not (path / ".metadata").is_file():
        raise ModelError(f"{path} is not a complete checkpoint (needs {STATE_FILE} and .metadata); pick one with latest_checkpoint(root)")
    rank, world = rank_and_world()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    loaded = {"model": model_sd, "optim": optim_sd}
    with _single_process_quiet(world):
        dcp.load(loaded, checkpoint_id=str(path), no_dist=world == 1)
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))  # our own file: numpy/python RNG tuples
    else:
        log.warning("checkpoint %s has no RNG state for rank %d (saved with another world size); RNG not restored", path, rank)
    raw = json.loads((path / STATE_FILE).read_text())
    return TrainerState(step=int(raw["step"]), policy_version=int(raw["policy_version"]), extra=dict(raw["extra"]))


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file() and (child / ".metadata").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`; None when there is none."""
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints, and leftover `.tmp`/`.old` folders.

    Call on rank 0 only, after a save has completed. Returns what was deleted.
    """
    root = Path(root)
    complete = complete_checkpoints(root)
    doomed = [p for _, p in complete[:-keep]] if keep > 0 else [p for _, p in complete]
    doomed += [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.suffix in (".tmp", ".old")]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed
