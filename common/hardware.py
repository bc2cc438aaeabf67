"""Pick the compute dtype from the hardware (STACK.md §11).

bfloat16 only where the CPU has bf16 instructions (AVX512-BF16 or AMX) or a CUDA GPU supports it;
float32 otherwise, where emulated bf16 is ~5x slower than fp32.
"""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (from /proc/cpuinfo; empty when unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def pick_dtype(requested: str = "auto", *, cuda: bool | None = None, flags: set[str] | None = None) -> str:
    """The dtype name to compute in.

    Args:
        requested: "auto" or an explicit dtype name (returned unchanged).
        cuda: whether a CUDA device is used (None: ask torch).
        flags: CPU flags (None: read this machine's).
    """
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16(flags) else "float32"


def describe_cpu() -> str:
    """One line: CPU model name and whether it has bf16 hardware."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    simd = "AVX512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return f"{name} ({simd}, bf16 hardware: {'yes' if cpu_has_bf16(flags) else 'no'})"
