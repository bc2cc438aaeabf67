"""Process group and FSDP2 sharding of the policy (STACK.md §2c: fully_shard per block, then root)."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from deepretrieval.common.errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called `name` ("float32", "bfloat16", "float16").

    Raises:
        ConfigError: an unknown name.
    """
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"dtype {name!r} is not one of {sorted(_DTYPES)}") from None


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(device: torch.device) -> None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT), once.

    On CUDA each rank takes GPU LOCAL_RANK. No-op without WORLD_SIZE in the environment (a plain single process) or when already joined.
    """
    if dist.is_initialized() or "WORLD_SIZE" not in os.environ:
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device))
    log.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend_for(device))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce of a (CPU) tensor across ranks; the tensor itself without a process group.

    NCCL reduces only CUDA tensors, so there the value makes a round trip through the GPU.
    """
    if rank_and_world()[1] == 1:
        return tensor
    if dist.get_backend() == "nccl":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu, op=op)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor, op=op)
    return tensor


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks: modules whose class is in `model._no_split_modules`.

    Raises:
        ConfigError: the model names none, or none are found.
    """
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} (its _no_split_modules is {sorted(names)}); FSDP needs one unit per block")
    return layers


def shard_model(model: torch.nn.Module, *, param_dtype: torch.dtype, device: torch.device) -> None:
    """Shard `model` in place with FSDP2 across the default process group.

    One FSDP unit per decoder layer, then the root (embeddings, final norm and a tied lm_head stay
    together in the root unit). Master parameters stay float32; with a lower `param_dtype` forward
    and backward run in it and gradients are reduced in float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
