"""Export the policy as a Hugging Face checkpoint folder, the format actors and `eval --rewriter` load.

The folder holds `model.safetensors`, `config.json`, `generation_config.json` and the tokenizer
files of the source folder. It is written under a hidden temporary name beside the target and
renamed into place, so a reader never sees a half-written folder.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from deepretrieval.learner.sharding import rank_and_world

WEIGHTS_FILE = "model.safetensors"
# Files copied from the source checkpoint folder: the tokenizer, chat template, generation defaults.
TOKENIZER_PATTERNS: tuple[str, ...] = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
    "chat_template.*", "generation_config.json",
)


# safetensors' dtype names (its format spec) of the dtypes a policy's state dict holds.
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                       torch.bool: "BOOL"}


def _safetensors_layout(path: Path) -> tuple[int, dict[str, dict]]:
    """(offset of the data section, tensor name -> {dtype, shape, data_offsets}) from a safetensors header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def rewrite_safetensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Overwrite the tensor bytes of an existing safetensors file in place, if it holds exactly `tensors`' layout.

    Writing into a file's existing pages skips what a fresh export pays: a serialised copy of every
    tensor and new page-cache (tmpfs) pages for the whole file. The caller owns the file: readers
    must not have it open (`FilesystemWeightSync` hides the folder under a private name first).

    Args:
        path: a safetensors file, e.g. a previous export of the same model.
        tensors: name -> contiguous CPU tensor, already in the dtype to write.

    Returns:
        True when the file was rewritten; False (file untouched) when its tensor names, dtypes or
        shapes differ from `tensors`'.
    """
    start, layout = _safetensors_layout(path)
    if set(layout) != set(tensors):
        return False
    for name, t in tensors.items():
        entry = layout[name]
        if entry["dtype"] != _SAFETENSORS_DTYPES.get(t.dtype) or entry["shape"] != list(t.shape):
            return False
    fd = os.open(path, os.O_WRONLY)
    try:
        for name, t in tensors.items():
            offset = start + layout[name]["data_offsets"][0]
            view = memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
    finally:
        os.close(fd)
    return True


def tied_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of parameters that are the same tensor as an earlier-named one (e.g. a tied lm_head).

    Call on the unsharded model. For SmolLM2 this is ["lm_head.weight"].
    """
    seen: set[int] = set()
    tied = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.append(name)
        seen.add(id(param))
    return tied


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The consolidated, unsharded state dict on CPU: complete on rank 0, empty on other ranks.

    Collective when a process group has more than one rank (every rank must call it). In a single
    process the tensors may share storage with the live parameters: treat them as read-only.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return state if rank_and_world()[0] == 0 else {}


def write_hf_checkpoint(
    out_dir: Path,
    state_dict: dict[str, torch.Tensor],
    config: object,
    *,
    source_dir: Path | None,
    drop_keys: Collection[str] = (),
    dtype: torch.dtype | None = None,
    generation_config: object | None = None,
    reuse: bool = False,
) -> Path:
    """Write a Hugging Face checkpoint folder atomically (single process; call it on rank 0).

    Args:
        out_dir: the folder to create; an existing one is replaced after the new one is complete.
        state_dict: name → tensor, as `model.state_dict()` names them.
        config: the model's `PretrainedConfig` (saved as config.json, with `dtype` updated).
        source_dir: the folder the policy was loaded from; its tokenizer and generation config
            files are copied. None copies nothing.
        drop_keys: keys not to write (tied weights, which the loader re-ties).
        dtype: cast floating tensors to this; None keeps them as they are.
        generation_config: saved as generation_config.json when the source folder has none.
        reuse: `out_dir` is an earlier export of the same model that nobody else reads: when its
            weights file has the same tensors, dtypes and shapes, overwrite their bytes in place
            (`rewrite_safetensors`) and keep its other files; otherwise write a new folder.

    Returns:
        out_dir.
    """
    out_dir = Path(out_dir)
    tensors = {}
    for name, tensor in state_dict.items():
        if name in drop_keys:
            continue
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    if reuse and (out_dir / WEIGHTS_FILE).is_file() and rewrite_safetensors(out_dir / WEIGHTS_FILE, tensors):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        cfg = copy.deepcopy(config)
        if dtype is not None or tensors:
            cfg.dtype = dtype or next(iter(tensors.values())).dtype  # type: ignore[attr-defined]
        cfg.save_pretrained(tmp)  # type: ignore[attr-defined]
        if source_dir is not None:
            for src in sorted(Path(source_dir).iterdir()):
                if src.is_file() and any(fnmatch.fnmatch(src.name, pat) for pat in TOKENIZER_PATTERNS):
                    shutil.copy2(src, tmp / src.name)
        if generation_config is not None and not (tmp / "generation_config.json").exists():
            generation_config.save_pretrained(tmp)  # type: ignore[attr-defined]
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
