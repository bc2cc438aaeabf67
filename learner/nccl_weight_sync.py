"""Push policy versions to GPU vLLM actors over NCCL with vLLM's native weight-transfer API (DESIGN.md §2).

vLLM 0.32 (`vllm.distributed.weight_transfer`): the learner's rank 0 and every inference worker
join one NCCL group (learner = rank 0, workers = ranks 1..world_size-1) through a TCP rendezvous.
Each update, `NCCLTrainerWeightTransferEngine.send_weights` drives the inference side through a
control-plane client (`start_weight_update` → `update_weights`, run concurrently with the NCCL
broadcast → `finish_weight_update`); the workers load the stream with `model.load_weights`
inside vLLM's layerwise-reload lifecycle. No file is written.

What the inference side needs (not built here; the actors own it):
- every actor's vLLM starts with `weight_transfer_config={"backend": "nccl"}`
  (`LLM(...)` / `--weight-transfer-config`), on a GPU the learner's rank 0 does not use
  (NCCL refuses two ranks on one device; colocated learner and actor need vLLM's "ipc" backend);
- `client` reaches every actor's control plane: vLLM's `HTTPVLLMWeightSyncClient` (an OpenAI
  server with `VLLM_SERVER_DEV_MODE=1`), `RayVLLMWeightSyncClient` (vLLM Ray actors), or any
  object with the same four methods (our actor wrapping `LLM`'s `RLOfflineMixin` methods);
- actors do not generate while an update is in flight (pause, or serialise with generate).

The version reaches vLLM in-band: `finish_weight_update(weight_version=str(version))`. Nothing
is announced on Redis, because `Coordinator` announcements name a folder that actors reload
from; an actor fed over NCCL reads its version from vLLM (`LLM.get_weight_version()`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from deepretrieval.common.errors import ConfigError
from deepretrieval.learner.base import PublishablePolicy, WeightPublication

if TYPE_CHECKING:
    from vllm.distributed.weight_transfer import TrainerWeightTransferEngine

log = logging.getLogger(__name__)


class VllmWeightSyncClient(Protocol):
    """The inference side's weight-sync control plane: vLLM's `VLLMWeightSyncClient`, restated so
    this module needs no vLLM import to type it (the protocol is structural in vLLM too)."""

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None: ...

    def start_weight_update(self) -> None: ...

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None: ...

    def finish_weight_update(self, weight_version: str | None = None) -> None: ...


@dataclass(frozen=True)
class NcclRendezvous:
    """Where the learner and the inference workers meet to form the transfer group.

    Args:
        master_address: host of the learner's rank 0, reachable by every inference worker.
        master_port: a free TCP port on that host for vLLM's StatelessProcessGroup store.
        world_size: 1 (the learner's sender) + the number of inference worker processes
            (sum over actors of tensor x pipeline x data parallel size).
    """

    master_address: str
    master_port: int
    world_size: int


class _VersionedClient:
    """Forwards the control plane, adding the version being published to `finish_weight_update`
    (vLLM's trainer engine calls it without one)."""

    def __init__(self, client: VllmWeightSyncClient):
        self._client = client
        self.version: int | None = None

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._client.init_weight_transfer_engine(init_info)

    def start_weight_update(self) -> None:
        self._client.start_weight_update()

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._client.update_weights(update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        version = weight_version if weight_version is not None else (None if self.version is None else str(self.version))
        self._client.finish_weight_update(weight_version=version)


class NcclWeightSync:
    """A `WeightSync` that broadcasts the policy to vLLM workers over NCCL (GPU only).

    Args:
        client: the inference side's control plane (see the module docstring).
        rendezvous: where the transfer group forms.
        dtype: wire dtype of floating weights, normally the actors' (bfloat16); None sends the
            learner's float32 (vLLM casts on load, at twice the bytes).
        packed: send through vLLM's packed double-buffered broadcast (fewer, larger NCCL calls).

    Raises:
        ConfigError: CUDA is not available (NCCL needs GPUs; use `FilesystemWeightSync` on CPU),
            or rendezvous.world_size < 2.
    """

    def __init__(self, client: VllmWeightSyncClient, rendezvous: NcclRendezvous, *, dtype: torch.dtype | None = torch.bfloat16,
                 packed: bool = True):
        if not torch.cuda.is_available():
            raise ConfigError("NcclWeightSync needs CUDA (torch.cuda.is_available() is False): NCCL moves GPU tensors; "
                              "on CPU use FilesystemWeightSync (safetensors folder + vLLM reload_weights)")
        if rendezvous.world_size < 2:
            raise ConfigError(f"NCCL rendezvous world_size={rendezvous.world_size}: it counts the learner's sender plus "
                              "at least one inference worker, so it must be >= 2")
        self._client = _VersionedClient(client)
        self._rendezvous = rendezvous
        self._dtype = dtype
        self._packed = packed
        self._engine: TrainerWeightTransferEngine | None = None
        self._nbytes = 0
        self._last_version: int | None = None
        self.connect_s: float | None = None

    def connect(self, policy: PublishablePolicy) -> float:
        """Form the NCCL group with the inference workers (blocking; every trainer rank calls it).

        `publish` connects on first use; call this earlier to keep the rendezvous (NCCL start-up,
        seconds) out of the first step.

        Args:
            policy: the learner's policy; its parameters must be on this rank's CUDA device.

        Returns:
            Seconds the rendezvous took.

        Raises:
            ConfigError: the policy's parameters are not on a CUDA device.
        """
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        from deepretrieval.learner.nccl_source import CastModuleSource

        device = next(policy.model.parameters()).device
        if device.type != "cuda":
            raise ConfigError(f"the policy's parameters are on {device}; NcclWeightSync broadcasts from a CUDA device (build the Trainer with device='cuda:N')")
        torch.cuda.set_device(device)
        t0 = time.perf_counter()
        source = CastModuleSource(policy.model, self._dtype)
        r = self._rendezvous
        info = NCCLTrainerInitInfo(master_address=r.master_address, master_port=r.master_port, world_size=r.world_size,
                                   rank=policy.rank, packed=self._packed)
        self._engine = WeightTransferTrainerFactory.trainer_init(info, client=self._client, source=source)
        self._nbytes = source.nbytes()
        self.connect_s = time.perf_counter() - t0
        log.info("NCCL weight transfer group formed (%d ranks) in %.1fs", r.world_size, self.connect_s)
        return self.connect_s

    async def publish(self, version: int, policy: PublishablePolicy) -> WeightPublication:
        """Broadcast `policy`'s weights to every inference worker as `version` (see `WeightSync.publish`).

        Workers replace layers as they arrive (vLLM's layerwise reload, finalised in
        `finish_weight_update`), so the update is atomic only if actors do not generate meanwhile
        (module docstring). A failed transfer raises here and leaves the NCCL group unusable
        (close and reconnect).

        Args:
            version: the policy version, larger than the last one this sync published.
            policy: the learner's policy; every trainer rank calls this (FSDP gathers are collective).

        Returns:
            The publication: `weights_dir` None, `export_s` the transfer time, `bytes` sent by rank 0.

        Raises:
            ValueError: `version` is not newer than the last published one.
        """
        if self._last_version is not None and version <= self._last_version:
            raise ValueError(f"version {version} is not newer than the last published version {self._last_version}")
        loop = asyncio.get_running_loop()
        if self._engine is None:
            await loop.run_in_executor(None, self.connect, policy)
        assert self._engine is not None
        self._client.version = version
        t0 = time.perf_counter()
        await loop.run_in_executor(None, self._engine.send_weights)
        export_s = time.perf_counter() - t0
        self._last_version = version
        sent = self._nbytes if policy.rank == 0 else 0
        log.info("sent policy v%d over NCCL (%.0f MB) in %.3fs", version, sent / 1e6, export_s)
        return WeightPublication(version=version, weights_dir=None, bytes=sent, export_s=export_s)

    def close(self) -> None:
        """Destroy this side's NCCL communicator (the inference side releases its own)."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
