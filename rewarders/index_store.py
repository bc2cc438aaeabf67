"""On-disk conventions shared by every index kind: a manifest with a version, atomic publish, a build lock."""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "deepretrieval-index.json"


def manifest_version(index_dir: Path) -> str | None:
    """The version recorded in an index folder's manifest; None when there is none."""
    m = Path(index_dir) / MANIFEST
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text()).get("version")
    except (OSError, ValueError):
        return None


def write_manifest(staging: Path, manifest: dict[str, object]) -> None:
    """Write the manifest into a staging folder; it is the last file written before publish."""
    (Path(staging) / MANIFEST).write_text(json.dumps(manifest, indent=2))


def publish(staging: Path, final: Path) -> None:
    """Replace `final` with the fully built `staging` folder (same file system, rename)."""
    if final.exists():
        shutil.rmtree(final)
    Path(staging).rename(final)


@contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """Serialise builders of the same index across processes (an flock beside the folder)."""
    lock_path = Path(final).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
