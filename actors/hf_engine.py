"""The transformers reference engine: an explicit sampling loop over a KV cache.

Slower than vLLM, but every number is under our control: sampling and behaviour log-probs use
`processed_logprobs` (the same convention as vLLM's "processed_logprobs"), so this engine is the
yardstick the vLLM engine and the learner are compared against.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.actors.base import FinishReason, GenerationRequest, Sample
from deepretrieval.actors.grammar_mask import GrammarMasker
from deepretrieval.actors.logprobs import processed_logprobs
from deepretrieval.actors.weights_dir import safetensors_files
from deepretrieval.common.engine_config import HFEngineConfig
from deepretrieval.common.errors import EngineError
from deepretrieval.common.hardware import pick_dtype
from deepretrieval.common.sampling import SamplingConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class HFEngine:
    """A `GenerationEngine` on a transformers causal LM.

    Args:
        model_dir: Hugging Face checkpoint folder (config, safetensors, tokenizer).
        config: engine settings; defaults when None.
        dtype: "auto" (STACK.md §11: bfloat16 only with bf16 hardware) or a torch dtype name.
        name: label reported as `name`.
    """

    def __init__(self, model_dir: Path, config: HFEngineConfig | None = None, *, dtype: str = "auto", name: str = "hf"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._config = config or HFEngineConfig()
        self._name = name
        self._version = 0
        device = self._config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self.dtype_name = pick_dtype(dtype, cuda=self._device.type == "cuda")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, self.dtype_name))
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot load {model_dir} with transformers: {e}") from e
        self.model = model.to(self._device).eval()
        self._generator = torch.Generator(device=self._device).manual_seed(self._config.seed)
        self._eos_ids = self._eos_token_ids()
        pad = self._tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids)
        self._masker: GrammarMasker | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def policy_version(self) -> int:
        return self._version

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The checkpoint's tokenizer (for building prompts with common/chat.py)."""
        return self._tokenizer

    def _eos_token_ids(self) -> set[int]:
        """End-of-sequence ids: the tokenizer's plus the generation config's (as vLLM stops on both)."""
        ids: set[int] = set()
        if self._tokenizer.eos_token_id is not None:
            ids.add(int(self._tokenizer.eos_token_id))
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(int(i) for i in gen_eos)
        if not ids:
            raise EngineError("the checkpoint defines no end-of-sequence token (tokenizer or generation_config)")
        return ids

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[list[Sample]]:
        """Sample `params.n` completions per request (see `GenerationEngine.generate`).

        A request with a `constraint` is decoded under its grammar (actors/grammar_mask.py): its
        samples match the regex (or stop at the token limit) and their log-probs are those of the
        masked distribution.

        Raises:
            EngineError: a request has an empty prompt, or its constraint does not compile.
        """
        for r in requests:
            if not r.prompt_token_ids:
                raise EngineError("a GenerationRequest has an empty prompt_token_ids; build prompts with common.chat.build_prompt_ids")
        if params.seed is not None:
            self._generator.manual_seed(params.seed)
        rows = [list(r.prompt_token_ids) for r in requests for _ in range(params.n)]
        constraints = [r.constraint for r in requests for _ in range(params.n)]
        samples: list[Sample] = []
        step = self._config.max_batch_rows
        for start in range(0, len(rows), step):
            samples.extend(self._generate_rows(rows[start:start + step], constraints[start:start + step], params))
        return [samples[i * params.n:(i + 1) * params.n] for i in range(len(requests))]

    def _generate_rows(self, rows: list[list[int]], constraints: list[str | None], params: SamplingConfig) -> list[Sample]:
        """Decode one batch of prompts (already repeated n times) to completion.

        Args:
            rows: B prompts as token ids.
            constraints: B grammar regexes or None.
            params: sampling parameters.

        Returns:
            B samples, in row order.
        """
        import torch
        from transformers import DynamicCache

        batch = len(rows)
        width = max(len(r) for r in rows)
        # Left padding keeps each row's last prompt token in the last column.
        input_ids = torch.full((batch, width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            attention[i, width - len(r):] = 1
        input_ids, attention = input_ids.to(self._device), attention.to(self._device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [B, width]
        cache = DynamicCache(config=self.model.config)
        grammar = self._grammar().start(constraints) if any(c is not None for c in constraints) else None

        tokens_out: list[list[int]] = [[] for _ in range(batch)]
        logprobs_out: list[list[float]] = [[] for _ in range(batch)]
        finish: list[FinishReason | None] = [None] * batch
        stop_hit: list[str | None] = [None] * batch
        window = max((len(s) for s in params.stop), default=0) + 2
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
            for _ in range(params.max_new_tokens):
                logits = out.logits[:, -1, :]  # [B, V]
                if grammar is not None:
                    logits = grammar.mask_(logits, [f is None for f in finish])
                token, logprob = self._sample(logits, params)  # [B], [B]
                token_l, logprob_l = token.tolist(), logprob.tolist()
                for i in range(batch):
                    if finish[i] is not None:
                        continue
                    tokens_out[i].append(token_l[i])
                    logprobs_out[i].append(logprob_l[i])
                    ended = grammar is not None and grammar.accept(i, token_l[i])
                    if ended or token_l[i] in self._eos_ids:
                        finish[i] = "stop"
                    elif params.stop:
                        # A stop string not seen before must end in this token, so it lies in the
                        # last `window` tokens (each token decodes to at least one character).
                        tail = self._tokenizer.decode(tokens_out[i][-window:], skip_special_tokens=True)
                        hit = next((s for s in params.stop if s in tail), None)
                        if hit is not None:
                            finish[i], stop_hit[i] = "stop", hit
                    if finish[i] is None and len(tokens_out[i]) >= params.max_new_tokens:
                        finish[i] = "length"
                if all(f is not None for f in finish):
                    break
                attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=1)
                positions = positions[:, -1:] + 1
                out = self.model(input_ids=token[:, None], attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True)
        return [self._make_sample(tokens_out[i], logprobs_out[i], finish[i] or "length", stop_hit[i], params.stop) for i in range(batch)]

    def _grammar(self) -> GrammarMasker:
        """The engine's grammar compiler, built on first use (xgrammar tokenizer info takes ~1 s)."""
        if self._masker is None:
            self._masker = GrammarMasker(self._tokenizer, int(self.model.config.vocab_size), self._eos_ids)
        return self._masker

    def _sample(self, logits: torch.Tensor, params: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one token per row and its behaviour log-prob.

        Args:
            logits: [B, V] next-token logits.
            params: temperature 0 = argmax, else sampling from `processed_logprobs`.

        Returns:
            tokens [B] (long) and their log-probs [B] (float32).
        """
        import torch

        logprobs = processed_logprobs(logits, params.temperature, params.top_p)  # [B, V]
        if params.temperature == 0:
            token = logprobs.argmax(dim=-1)
        else:
            token = torch.multinomial(logprobs.exp(), 1, generator=self._generator).squeeze(-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)

    def _make_sample(self, token_ids: list[int], logprobs: list[float], finish: FinishReason, stop: str | None, stops: list[str]) -> Sample:
        text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        if stop is not None:
            # Cut after the earliest stop string, as vLLM does with include_stop_str_in_output.
            ends = [text.find(s) + len(s) for s in stops if s in text]
            text = text[:min(ends)] if ends else text
        return Sample(token_ids=token_ids, logprobs=logprobs, text=text, finish_reason=finish, stop_string=stop)

    def load_weights(self, weights_dir: Path, version: int) -> float:
        """Copy the tensors of a safetensors folder into the model in place (see `GenerationEngine`).

        Raises:
            EngineError: the folder has no safetensors, a tensor the model does not have, or misses
                a parameter that is not tied to one it has.
        """
        import torch
        from safetensors.torch import load_file

        t0 = time.perf_counter()
        state: dict[str, torch.Tensor] = {}
        for f in safetensors_files(weights_dir):
            state.update(load_file(str(f)))
        with torch.no_grad():
            result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise EngineError(f"{weights_dir} has tensors this model lacks (e.g. {result.unexpected_keys[:3]}); is it the same architecture?")
        loaded_ptrs = {p.data_ptr() for n, p in self.model.named_parameters() if n in state}
        untied = [k for k in result.missing_keys if self.model.get_parameter(k).data_ptr() not in loaded_ptrs]
        if untied:
            raise EngineError(f"{weights_dir} lacks parameters {untied[:3]} (not tied to any loaded one); the engine would keep stale weights")
        self._version = version
        seconds = time.perf_counter() - t0
        log.info("hf engine loaded %s as version %d in %.2fs", weights_dir, version, seconds)
        return seconds

    def close(self) -> None:
        """Drop the model; the engine is unusable afterwards."""
        self.model = None  # type: ignore[assignment]
