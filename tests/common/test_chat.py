from __future__ import annotations

from pathlib import Path

import pytest

from deepretrieval.common.chat import build_prompt_ids
from deepretrieval.common.errors import ConfigError

MESSAGES = [{"role": "system", "content": "You write search queries."}, {"role": "user", "content": "statins and muscle pain"}]


@pytest.fixture(scope="module")
def tokenizer(policy_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(policy_dir))


def test_without_prefill_equals_the_template_tokenized(tokenizer):
    expected = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert build_prompt_ids(tokenizer, MESSAGES) == list(expected)


def test_prefill_is_appended_once_without_extra_special_tokens(tokenizer):
    ids = build_prompt_ids(tokenizer, MESSAGES, "<think>")
    base = build_prompt_ids(tokenizer, MESSAGES)
    assert ids[:len(base)] == base
    assert tokenizer.decode(ids[len(base):]) == "<think>"
    assert ids.count(tokenizer.bos_token_id) == base.count(tokenizer.bos_token_id)


def test_no_messages_is_an_error(tokenizer):
    with pytest.raises(ConfigError, match="at least one"):
        build_prompt_ids(tokenizer, [])
