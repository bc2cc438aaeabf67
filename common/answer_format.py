"""Parse what the policy wrote: `… reasoning …</think><answer>{"query": "…"}</answer>` (TASKS.md §1).

`parse_answer` never raises on model output: empty, cut off at the token limit, undecodable bytes,
repeated or nested tags, bad JSON all come back as a `ParsedAnswer` with `ok=False`, a machine-
readable `error` code and a short message. The accepted language is the one `answer_grammar`
defines, so `answer_grammar.answer_regex(fmt)` matches exactly the completions accepted here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from deepretrieval.common.answer_grammar import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    JSON_WHITESPACE,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    json_object_regex,
)
from deepretrieval.common.config import StrictModel

_SURROGATE = re.compile("[\ud800-\udfff]")

ThinkMode = Literal["prefill", "generate", "none"]


class AnswerFormat(StrictModel):
    """How a task's answer is written: the JSON key and whether a reasoning block comes first."""

    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The one key of the answer object: 'query' (search tasks) or 'sql'.")
    think: ThinkMode = Field(
        "prefill",
        description="'prefill': the assistant turn is prefilled with <think> and the completion starts after it (TASKS.md §1 default); "
        "'generate': the model writes <think> itself; 'none': the 'no reasoning' variant, answer block only.",
    )

    @property
    def prefill(self) -> str:
        """Text that starts the assistant turn (after the chat template's generation prompt)."""
        return THINK_OPEN if self.think == "prefill" else ""

    @property
    def stop(self) -> list[str]:
        """Stop strings for generation. The engine must keep the stop string in the output
        (vLLM `include_stop_str_in_output=True`): the parser requires the closing tag."""
        return [ANSWER_CLOSE]


class FormatError(StrEnum):
    """Why a completion is not a valid answer (the policy's fault: reward status `invalid`)."""

    EMPTY = "empty"
    REPEATED_TAG = "repeated_tag"
    UNEXPECTED_TAG = "unexpected_tag"
    TRUNCATED = "truncated"
    MISSING_TAG = "missing_tag"
    TAG_ORDER = "tag_order"
    TEXT_OUTSIDE_TAGS = "text_outside_tags"
    NOT_JSON = "answer_not_json"
    NOT_OBJECT = "answer_not_object"
    WRONG_KEYS = "answer_wrong_keys"
    NOT_STRING = "answer_not_string"
    EMPTY_VALUE = "answer_empty"
    NONCANONICAL = "answer_noncanonical"


@dataclass(frozen=True)
class ParsedAnswer:
    """The outcome of parsing one completion.

    Args:
        ok: the completion follows the format; `value` is set.
        value: the decoded string under the task's key (query text or SQL); None unless ok.
        reasoning: the text between <think> and </think> when that block was found, else None.
        error: the first problem found; None when ok.
        message: a short human-readable explanation ("" when ok).
        text_replaced: the input was not valid UTF-8 (bytes) or held lone surrogates, and the bad
            parts were replaced with U+FFFD before parsing.
    """

    ok: bool
    value: str | None
    reasoning: str | None
    error: FormatError | None
    message: str
    text_replaced: bool = False


def format_instruction(fmt: AnswerFormat) -> str:
    """The sentence telling the model the answer's shape (never a concrete answer: small models copy it).

    Args:
        fmt: the answer format.

    Returns:
        Instruction text for the user turn, e.g. for key "query" it shows `{"query": "..."}`.
    """
    shape = f'{ANSWER_OPEN}\n{{"{fmt.key}": "..."}}\n{ANSWER_CLOSE}'
    if fmt.think == "none":
        return f"Reply with only the answer, in exactly this form:\n{shape}"
    return (
        f"First think step by step inside {THINK_OPEN} {THINK_CLOSE}. "
        f"Then give the answer after {THINK_CLOSE}, in exactly this form:\n{shape}"
    )


def render_answer(fmt: AnswerFormat, value: str, reasoning: str = "") -> str:
    """The canonical completion carrying `value`: what `parse_answer` reads back as `value`.

    Used to score a request as it is (the warm-up's "original query" baseline) through the same
    parser, backend and reward as the policy's completions.

    Args:
        fmt: the answer format.
        value: the query (or SQL).
        reasoning: text for the reasoning block (ignored when `fmt.think` is "none"); must hold no tag.

    Returns:
        The completion text (after the prompt and the prefill).
    """
    obj = json.dumps({fmt.key: value}, ensure_ascii=False)
    answer = f"{ANSWER_OPEN}\n{obj}\n{ANSWER_CLOSE}"
    if fmt.think == "none":
        return answer
    head = THINK_OPEN if fmt.think == "generate" else ""
    return f"{head}{reasoning}{THINK_CLOSE}\n{answer}"


def _to_text(completion: str | bytes) -> tuple[str, bool]:
    """Decode bytes as UTF-8 and drop lone surrogates, replacing bad parts with U+FFFD."""
    if isinstance(completion, bytes | bytearray):
        try:
            return bytes(completion).decode("utf-8"), False
        except UnicodeDecodeError:
            return bytes(completion).decode("utf-8", errors="replace"), True
    return _clean_surrogates(completion)


def _clean_surrogates(text: str) -> tuple[str, bool]:
    """Replace each lone surrogate (not encodable as UTF-8) with U+FFFD."""
    cleaned = _SURROGATE.sub("\ufffd", text)
    return cleaned, cleaned != text


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so duplicate keys stay visible."""


def _json_type(value: object) -> str:
    if isinstance(value, _Pairs):
        return "object"
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_blank(text: str) -> bool:
    return all(c in JSON_WHITESPACE for c in text)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_answer(completion: str | bytes, fmt: AnswerFormat) -> ParsedAnswer:
    """Check a completion against the answer format and extract the value (TASKS.md §1).

    Args:
        completion: the generated text after the prompt and prefill (str, or raw bytes).
        fmt: the task's answer format.

    Returns:
        A ParsedAnswer; never raises on malformed model output.
    """
    text, replaced = _to_text(completion)
    full = fmt.prefill + text

    def fail(code: FormatError, message: str, reasoning: str | None = None) -> ParsedAnswer:
        return ParsedAnswer(False, None, reasoning, code, message, replaced)

    if not text.strip():
        return fail(FormatError.EMPTY, "the completion is empty")
    counts = {tag: full.count(tag) for tag in TAGS}
    repeated = [tag for tag, n in counts.items() if n > 1]
    if repeated:
        return fail(FormatError.REPEATED_TAG, f"{repeated[0]} appears {counts[repeated[0]]} times (at most once)")
    if fmt.think == "none" and (counts[THINK_OPEN] or counts[THINK_CLOSE]):
        return fail(FormatError.UNEXPECTED_TAG, "the no-reasoning format has no <think> block")
    if not counts[ANSWER_CLOSE]:
        return fail(FormatError.TRUNCATED, f"no {ANSWER_CLOSE}: the completion ended (or was cut at the token limit) before closing the answer")
    required = TAGS if fmt.think != "none" else (ANSWER_OPEN, ANSWER_CLOSE)
    missing = [tag for tag in required if not counts[tag]]
    if missing:
        return fail(FormatError.MISSING_TAG, f"{missing[0]} is missing")
    positions = [full.index(tag) for tag in required]
    if positions != sorted(positions):
        return fail(FormatError.TAG_ORDER, f"tags out of order; expected {' … '.join(required)}")

    reasoning = None
    gaps = [full[: positions[0]], full[positions[-1] + len(ANSWER_CLOSE) :]]
    if fmt.think != "none":
        reasoning = full[positions[0] + len(THINK_OPEN) : positions[1]]
        gaps.append(full[positions[1] + len(THINK_CLOSE) : positions[2]])
    stray = next((g for g in gaps if not _is_blank(g)), None)
    if stray is not None:
        return fail(FormatError.TEXT_OUTSIDE_TAGS, f"text outside the tags: {_short(stray.strip())}", reasoning)

    inner = full[positions[-2] + len(ANSWER_OPEN) : positions[-1]]
    problem = _check_object(inner, fmt.key)
    if problem is not None:
        return fail(problem[0], problem[1], reasoning)
    value, value_replaced = _clean_surrogates(json.loads(inner)[fmt.key])
    return ParsedAnswer(True, value, reasoning, None, "", replaced or value_replaced)


def _check_object(inner: str, key: str) -> tuple[FormatError, str] | None:
    """Why the answer text is not `{"<key>": "<non-blank string>"}`, or None when it is."""
    try:
        obj: Any = json.loads(inner, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError) as e:
        return FormatError.NOT_JSON, f"the answer is not JSON ({str(e)[:60]})"
    if not isinstance(obj, _Pairs):
        return FormatError.NOT_OBJECT, f"the answer is a JSON {_json_type(obj)}, not an object"
    keys = [k for k, _ in obj]
    if keys != [key]:
        return FormatError.WRONG_KEYS, f"the answer object must have exactly the key {key!r}; got {keys[:5]!r}"
    value = obj[0][1]
    if not isinstance(value, str):
        return FormatError.NOT_STRING, f"{key!r} must be a string, got a JSON {_json_type(value)}"
    if not value.strip():
        return FormatError.EMPTY_VALUE, f"{key!r} is empty"
    if re.fullmatch(json_object_regex(key), inner) is None:
        return FormatError.NONCANONICAL, "the answer object is valid JSON but not in the accepted form (key written with escapes)"
    return None
