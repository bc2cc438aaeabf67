"""Check a weights folder before an engine reloads from it."""

from __future__ import annotations

from pathlib import Path

from deepretrieval.common.errors import EngineError


def safetensors_files(weights_dir: Path) -> list[Path]:
    """The `*.safetensors` files of a Hugging Face checkpoint folder, sorted by name.

    Raises:
        EngineError: the folder is missing or holds no safetensors file.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise EngineError(f"weights folder {weights_dir} does not exist; publish the checkpoint before asking actors to load it")
    files = sorted(weights_dir.glob("*.safetensors"))
    if not files:
        raise EngineError(f"weights folder {weights_dir} holds no *.safetensors file; save with save_pretrained(safe_serialization=True)")
    return files
