"""Grammar-constrained decoding for the transformers engine: xgrammar token masks over logits.

The vLLM engine hands a request's constraint regex to vLLM's structured outputs, which compiles it
with xgrammar; this module does the same for our own sampling loop, from the same regex
(`common.answer_grammar.answer_regex`), so both engines enforce one grammar object. Per decoding
step each constrained row gets a bitmask of the tokens that keep the text a prefix of the
language; disallowed logits become -inf *before* temperature/top-p, so the sampled token's
behaviour log-prob is that of the masked, renormalised distribution it was drawn from (the
`restricted` case of learner/grpo_loss.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from deepretrieval.common.errors import EngineError
from deepretrieval.common.signals import keep_sigsegv_handler

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


def import_xgrammar() -> Any:
    """Import xgrammar keeping the process's SIGSEGV handler (its tvm_ffi replaces it at load,
    which kills a JVM started earlier in the process; see common/signals.py)."""
    with keep_sigsegv_handler():
        import xgrammar
    return xgrammar


class GrammarMasker:
    """Compiles constraint regexes for one tokenizer (each regex once) and starts batch matchers.

    Args:
        tokenizer: the engine's tokenizer.
        vocab_size: the model's logit width (may exceed the tokenizer's vocabulary).
        stop_token_ids: end-of-sequence ids; a finished grammar allows exactly these.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_token_ids: Iterable[int]):
        xgr = import_xgrammar()
        self._xgr = xgr
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_token_ids))
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._compiled: dict[str, Any] = {}

    def compile(self, regex: str) -> Any:
        """The compiled grammar of `regex` (cached).

        Raises:
            EngineError: xgrammar cannot compile the regex.
        """
        if regex not in self._compiled:
            try:
                self._compiled[regex] = self._compiler.compile_regex(regex)
            except (RuntimeError, ValueError) as e:
                raise EngineError(f"cannot compile the constraint regex ({len(regex)} chars) with xgrammar: {e}") from e
        return self._compiled[regex]

    def start(self, constraints: Sequence[str | None]) -> GrammarBatch | None:
        """Matchers for a batch of rows (None = unconstrained row); None when no row is constrained."""
        if all(c is None for c in constraints):
            return None
        matchers = [None if c is None else self._xgr.GrammarMatcher(self.compile(c)) for c in constraints]
        return GrammarBatch(self._xgr, matchers, self.vocab_size)


class GrammarBatch:
    """The grammar state of each row of one decoding batch."""

    def __init__(self, xgr: Any, matchers: list[Any], vocab_size: int):
        self._xgr = xgr
        self._matchers = matchers
        self._vocab_size = vocab_size
        self._bitmask = xgr.allocate_token_bitmask(len(matchers), vocab_size)

    def mask_(self, logits: torch.Tensor, active: Sequence[bool]) -> torch.Tensor:
        """Set the logits of tokens the grammar forbids to -inf, in place, on active constrained rows.

        Args:
            logits: [B, V] float32 next-token logits.
            active: [B] rows still decoding.

        Returns:
            `logits` (float32, masked).
        """
        rows = [i for i, m in enumerate(self._matchers) if m is not None and active[i]]
        if not rows:
            return logits
        for i in rows:
            self._matchers[i].fill_next_token_bitmask(self._bitmask, i)
        logits = logits.float()  # xgrammar's CPU kernel masks float32 (a no-op when already so)
        self._xgr.apply_token_bitmask_inplace(logits, self._bitmask.to(logits.device), vocab_size=self._vocab_size, indices=rows)
        return logits

    def accept(self, row: int, token: int) -> bool:
        """Advance row `row` by `token`; True when its grammar has terminated (a stop token accepted).

        Raises:
            EngineError: the grammar rejects the token (the mask was not applied to this row).
        """
        m = self._matchers[row]
        if m is None:
            return False
        if not m.accept_token(token):
            raise EngineError(f"row {row}: the grammar rejected token {token}; the sampler drew outside the mask")
        return bool(m.is_terminated())
