"""Export the policy as a Hugging Face checkpoint folder, the format actors and `eval --rewriter` load.

The folder holds `model.safetensors`, `config.json`, `generation_config.json` and the tokenizer
files of the source folder. It is written under a hidden temporary name beside the target and
renamed into place, so a reader never sees a half-written folder.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import shutil
from collections.abc import Collection
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

    Returns:
        out_dir.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tensors = {}
        for name, tensor in state_dict.items():
            if name in drop_keys:
                continue
            t = tensor.detach()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            tensors[name] = t.contiguous()
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
