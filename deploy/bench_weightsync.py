"""Benchmark: publishing a policy version and loading it into an actor engine, vs a plain memcpy.

One process plays both sides of the CPU weight path (DESIGN.md §2): a Trainer publishes version v
with `FilesystemWeightSync` (export a safetensors folder + announce on a private Redis + prune),
then the engine reads the announcement and reloads the folder in place, as an actor does.

    sync_s   = publish (export + announce + prune) + actor side (read announcement + load_weights)
    memcpy_s = torch `copy_` of the same number of bytes into a preallocated buffer (best of 3)
    ratio    = sync_s / memcpy_s   (both the best of their rounds)

Engine start-up (vLLM: tens of seconds on CPU) is set-up and not timed. The versions go to
tmpfs (/dev/shm) by default: on one machine that is where the weight store belongs (on disk, dirty
page write-back throttles the second and later exports to ~3x the first). The 1-minute load
average is recorded, since other processes on the machine inflate every timing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.streams import redis_client
from deepretrieval.deploy.bench_common import private_redis

if TYPE_CHECKING:
    import torch

    from deepretrieval.actors.base import GenerationEngine
    from deepretrieval.learner.trainer import Trainer

log = logging.getLogger(__name__)


def unique_param_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters, tied ones counted once (what an export writes)."""
    return sum(p.nbytes for p in model.parameters())


def memcpy_seconds(nbytes: int, rounds: int = 3) -> float:
    """Best time of `rounds` torch `copy_`s of `nbytes` bytes between two preallocated CPU buffers.

    Both buffers are written once first, so page faults are not timed.

    Args:
        nbytes: bytes copied per round.
        rounds: repetitions; the fastest is returned.

    Returns:
        Seconds of the fastest round.
    """
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return best


def default_store_root() -> Path | None:
    """/dev/shm when this machine has it (tmpfs), else None (the system temp folder)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _make_engine(kind: str, model_dir: Path) -> GenerationEngine:
    from deepretrieval.actors.engines import make_engine
    from deepretrieval.common.engine_config import HFEngineConfig, VLLMEngineConfig

    config = VLLMEngineConfig(max_model_len=1024) if kind == "vllm" else HFEngineConfig()
    return make_engine(model_dir, config)


async def _rounds(trainer: Trainer, engine: GenerationEngine, root: Path, repeats: int, export_dtype: torch.dtype | None) -> list[dict[str, float]]:
    """Publish versions 1..repeats and load each into `engine`; per-round timings."""
    from deepretrieval.learner.weight_sync import FilesystemWeightSync

    rounds = []
    async with private_redis() as url:
        client = redis_client(url)
        try:
            coordinator = Coordinator(client, "bench-weightsync")
            sync = FilesystemWeightSync(root, coordinator, keep=2, dtype=export_dtype)
            for version in range(1, repeats + 1):
                t0 = time.perf_counter()
                publication = await sync.publish(version, trainer)
                publish_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                latest = await coordinator.latest()
                discover_s = time.perf_counter() - t0
                assert latest is not None and latest.version == version
                load_s = engine.load_weights(latest.weights_dir, latest.version)
                actor_s = time.perf_counter() - t0
                rounds.append({"version": version, "sync_s": publish_s + actor_s, "publish_s": publish_s,
                               "export_s": publication.export_s, "announce_s": publication.announce_s,
                               "prune_s": publication.prune_s, "discover_s": discover_s, "load_s": load_s,
                               "bytes": publication.bytes})
        finally:
            await client.aclose()
    return rounds


def run(model_dir: Path, *, engine: str = "vllm", repeats: int = 3, root: Path | None = None) -> dict[str, Any]:
    """Time publish + actor reload of the policy against a memcpy of its bytes.

    Args:
        model_dir: the policy's Hugging Face folder.
        engine: "vllm" or "hf", the actor engine that reloads.
        repeats: versions published (and loaded); the fastest round is the headline.
        root: the folder a temporary weight store is made in (removed afterwards); None =
            `default_store_root()`.

    Returns:
        JSON-able result: sync_s, memcpy_s, ratio (fastest rounds), the fastest round's breakdown,
        the median sync_s, every round, param bytes, engine name and dtype.
    """
    import torch

    from deepretrieval.common.learner_config import LearnerConfig
    from deepretrieval.learner.trainer import Trainer

    root = root if root is not None else default_store_root()
    trainer = Trainer.from_pretrained(model_dir, LearnerConfig(dtype="float32"), device="cpu")
    param_bytes = unique_param_bytes(trainer.model)
    t0 = time.perf_counter()
    actor = _make_engine(engine, model_dir)
    engine_start_s = time.perf_counter() - t0
    engine_dtype = getattr(actor, "dtype_name", "float32")
    export_dtype = None if engine_dtype == "float32" else getattr(torch, engine_dtype)
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="dr-bench-weights-", dir=root) as tmp:
            rounds = asyncio.run(_rounds(trainer, actor, Path(tmp), repeats, export_dtype))
    finally:
        actor.close()
    memcpy_s = memcpy_seconds(param_bytes)
    load_after = os.getloadavg()[0]
    best = min(rounds, key=lambda r: r["sync_s"])
    return {
        "engine": engine, "engine_dtype": engine_dtype, "model": str(model_dir), "param_bytes": param_bytes,
        "export_bytes": best["bytes"], "repeats": repeats, "engine_start_s": round(engine_start_s, 1),
        "sync_s": round(best["sync_s"], 4), "memcpy_s": round(memcpy_s, 5), "ratio": round(best["sync_s"] / memcpy_s, 2),
        "breakdown": {k: round(best[k], 4) for k in ("export_s", "announce_s", "prune_s", "discover_s", "load_s")},
        "sync_s_median": round(statistics.median(r["sync_s"] for r in rounds), 4),
        "memcpy_gb_per_s": round(param_bytes / memcpy_s / 1e9, 2),
        "rounds": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rounds],
        "store_dir": str(root or tempfile.gettempdir()),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)], "cpu_count": os.cpu_count(),
    }

