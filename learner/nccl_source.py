"""The policy's parameters as a vLLM `WeightSource`, cast to the actors' dtype on the way out.

Imports vLLM at module level (tens of seconds on a cold CPU machine): only
`learner/nccl_weight_sync.py` imports it, when it connects.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from vllm.distributed.weight_transfer import ParamMeta, WeightSource
from vllm.distributed.weight_transfer.base import materialize_full_tensor


class CastModuleSource(WeightSource):
    """`module.named_parameters()` as (name, full tensor) pairs in a wire dtype.

    Subclasses vLLM's `WeightSource`, the extension point its trainer engines are written
    against. Tied parameters are yielded once (named_parameters de-duplicates them; vLLM re-ties
    SmolLM2's lm_head). FSDP2 shards are gathered with `full_tensor()`, a collective: every
    trainer rank iterates in the same order.

    Args:
        module: the policy, unsharded or FSDP2-sharded, on a CUDA device.
        dtype: wire dtype of floating tensors (the actors' dtype); None sends them as stored.
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype | None):
        self._module = module
        self._dtype = dtype

    def _wire_dtype(self, param: torch.Tensor) -> torch.dtype:
        return self._dtype if self._dtype is not None and param.is_floating_point() else param.dtype

    def metadata(self) -> list[ParamMeta]:
        """(name, wire dtype, full shape) of every parameter, without gathering."""
        return [ParamMeta(name, self._wire_dtype(p), tuple(p.shape)) for name, p in self._module.named_parameters()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in self._module.named_parameters():
            yield name, materialize_full_tensor(param.detach()).to(self._wire_dtype(param))

    def nbytes(self) -> int:
        """Bytes one full transfer sends."""
        return sum(torch.Size(m.shape).numel() * m.dtype.itemsize for m in self.metadata())
