"""Prompt token ids from chat messages, with the tokenizer's own chat template (TASKS.md §1).

Every engine and the learner take prompts as token ids built here, so they all see the same ids:
the template is rendered as text, the assistant prefill (e.g. "<think>") is appended, and the
text is tokenized once without adding special tokens again (the template already wrote them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deepretrieval.common.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ChatMessage = Mapping[str, str]
"""One chat turn: {"role": "system" | "user" | "assistant", "content": str}."""


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatMessage], prefill: str = "") -> str:
    """The prompt as text: the chat template with a generation prompt, then the assistant prefill.

    Args:
        tokenizer: a tokenizer that has a chat template.
        messages: the conversation so far, ending with the user turn.
        prefill: text the assistant turn starts with (e.g. "<think>"); "" for none.

    Returns:
        The rendered prompt text.

    Raises:
        ConfigError: no messages, or the tokenizer has no chat template.
    """
    if not messages:
        raise ConfigError("a prompt needs at least one chat message, got none")
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; use an instruct checkpoint")
    text = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
    return text + prefill


def build_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatMessage], prefill: str = "") -> list[int]:
    """Prompt token ids: `render_prompt` tokenized without adding special tokens a second time.

    Args:
        tokenizer: a tokenizer that has a chat template.
        messages: the conversation so far, ending with the user turn.
        prefill: text the assistant turn starts with (e.g. "<think>"); "" for none.

    Returns:
        Token ids, shape [prompt_len].
    """
    text = render_prompt(tokenizer, messages, prefill)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
