"""Run the AVX2 machine kind's code paths on an AVX-512 machine (run W, docs/design-notes.md).

Put this folder first on PYTHONPATH with EMULATE_AVX2=1 and the ISA caps below; every Python process
of the run (learner, actors, vLLM's engine core, rewarders) then:
- picks float32, as `deepretrieval.common.hardware` does on a CPU without bf16 (its flags lose every
  `avx512*` and `amx*` entry);
- loads vLLM's AVX2 kernels (`vllm._C_AVX2`: torch.cpu reports no AVX-512, BF16 or AMX);
- and, with the caps, runs torch's and oneDNN's AVX2 kernels.

    EMULATE_AVX2=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    PYTHONPATH=bench/avx2-emulation pytest -m slow tests/deploy/test_default_run.py

The instruction set is the AVX2 kind's; the core is not (a Zen 4 runs AVX2 code faster than the
Zen 1 that kind had), so wall times measured this way are a lower bound for that kind.
"""

import os

if os.environ.get("EMULATE_AVX2") == "1":
    import torch

    torch.cpu._is_avx512_supported = lambda: False
    torch.cpu._is_avx512_bf16_supported = lambda: False
    torch.cpu._is_amx_tile_supported = lambda: False

    from deepretrieval.common import hardware

    _flags = hardware.cpu_flags

    def _avx2_flags() -> set[str]:
        return {f for f in _flags() if not f.startswith(("avx512", "amx"))}

    hardware.cpu_flags = _avx2_flags
