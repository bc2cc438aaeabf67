"""The lexical grammar of the policy's answer format, as regular expressions.

One definition serves two users: the parser (`answer_format.parse_answer`) checks the JSON object
against `json_object_regex`, and `answer_regex` gives the whole completion as one regex for
grammar-constrained sampling (vLLM structured outputs / xgrammar). Both describe the same language,
so what a constrained sampler writes is exactly what the parser accepts (TASKS.md §1, §7).

The regexes use only constructs Python `re` and xgrammar's regex front end share: character
classes, `(?:...)`, `*`, `+`, `?`, `{m,n}` and `\\uXXXX` escapes; no anchors, no lookaround.

The language (think mode "prefill"; see `answer_regex` for the others)::

    REASONING </think> WS <answer> WS {WS "key" WS : WS "VALUE" WS} WS </answer> WS

- WS is JSON whitespace (space, tab, LF, CR), zero or more.
- REASONING is any text without the four tags `<think>`, `</think>`, `<answer>`, `</answer>`.
- VALUE is a JSON string body (RFC 8259 escapes) that holds none of the four tags as raw text
  and decodes to a string with at least one character that is not whitespace (`str.isspace`).
- The key is written literally (no escapes); there is exactly one key.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepretrieval.common.answer_format import AnswerFormat

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
TAGS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

JSON_WHITESPACE = " \t\n\r"
"""Whitespace allowed between tags and around JSON tokens (the JSON set)."""

UNICODE_WHITESPACE: frozenset[int] = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
"""Code points for which `str.isspace()` is true (checked against the running Python in tests)."""

_HEX_DIGIT = "[0-9a-fA-F]"
_WSJ = "[ \\t\\n\\r]*"
# Tags all start with "<" and hold no other "<"; the tag-free construction below relies on it.
_TAG_SUFFIXES = tuple(tag[1:] for tag in TAGS)


def _u(cp: int) -> str:
    """A code point as a `\\uXXXX` regex escape (BMP only; all code points used here are)."""
    return f"\\u{cp:04x}"


def _class_items(cps: Iterable[int]) -> str:
    """Code points as the inside of a character class, runs written as ranges."""
    out: list[str] = []
    ordered = sorted(set(cps))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(_u(ordered[i]) if i == j else f"{_u(ordered[i])}-{_u(ordered[j])}")
        i = j + 1
    return "".join(out)


def _hex_digit_class(digits: list[int]) -> str:
    """A class matching the given hex digit values, letters in both cases."""
    chars = "".join(f"{d:x}{d:X}" if d > 9 else str(d) for d in digits)
    return "[" + "".join(dict.fromkeys(chars)) + "]"


def _hex_number_regex(values: frozenset[int], width: int, complement: bool) -> str | None:
    """Regex for `width` hex digits whose value is in `values` (or not in it, if `complement`).

    Returns None when no digit string qualifies. Built as a trie over the digits, merging digits
    whose continuations are the same regex into one character class.
    """
    space = 16**width
    if not values or len(values) == space:
        everything = (not values) == complement
        if not everything:
            return None
        return "" if width == 0 else f"{_HEX_DIGIT}{{{width}}}"
    place = 16 ** (width - 1)
    by_rest: dict[str, list[int]] = {}
    for digit in range(16):
        rest = frozenset(v - digit * place for v in values if v // place == digit)
        sub = _hex_number_regex(rest, width - 1, complement)
        if sub is not None:
            by_rest.setdefault(sub, []).append(digit)
    alternatives = [_hex_digit_class(digits) + sub for sub, digits in by_rest.items()]
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


def _raw_char_class(excluded_literals: str, extra_items: str = "") -> str:
    """A class of one raw JSON string character: not `"`, a backslash or a control, nor any of
    `excluded_literals` (ASCII) or the class items `extra_items`."""
    extra = "".join(re.escape(c) for c in excluded_literals)
    return f'[^"\\\\\\u0000-\\u001f{extra}{extra_items}]'


def _unit_regex(excluded_literals: str, literal_ws: bool | None, escapes: str, hex_ws: bool | None, *, hex_escapes: bool = True) -> str:
    """One JSON string unit (a raw character or an escape sequence), filtered.

    Args:
        excluded_literals: ASCII characters the raw-character branch must not match.
        literal_ws: True = raw whitespace characters only, False = none of them, None = no filter.
        escapes: the single-letter escapes allowed (subset of `"\\/bfnrt`).
        hex_ws: True = `\\uXXXX` of whitespace only, False = of non-whitespace only, None = any.
        hex_escapes: False = no `\\uXXXX` branch at all (`hex_ws` is then ignored).
    """
    raw_ws = [cp for cp in UNICODE_WHITESPACE if cp >= 0x20]
    if literal_ws:
        literal = "[" + _class_items(cp for cp in raw_ws if chr(cp) not in excluded_literals) + "]"
    else:
        literal = _raw_char_class(excluded_literals, _class_items(raw_ws) if literal_ws is False else "")
    branches = [literal]
    if escapes:
        branches.append("\\\\[" + "".join(re.escape(c) for c in escapes) + "]")
    hex_part = (
        f"{_HEX_DIGIT}{{4}}" if hex_ws is None else _hex_number_regex(UNICODE_WHITESPACE, 4, complement=not hex_ws)
    )
    if hex_escapes and hex_part is not None:
        branches.append("\\\\u" + hex_part)
    return "(?:" + "|".join(branches) + ")"


def _tag_free_parts(plain: Callable[[str], str]) -> tuple[str, str]:
    """Regexes of the pieces of tag-free text that start with "<".

    Args:
        plain: maps a string of excluded ASCII characters to a regex of one unit that is neither
            "<" nor any excluded character.

    Returns:
        (token, tail): `token` is a run of "<" plus text that can no longer complete a tag;
        `tail` is a run of "<" plus text that could still grow into a tag, allowed only at the end.
    """
    prefixes = sorted({s[:i] for s in _TAG_SUFFIXES for i in range(len(s))})
    breaks = []
    for p in prefixes:
        nexts = "".join(sorted({s[len(p)] for s in _TAG_SUFFIXES if s.startswith(p) and len(s) > len(p)}))
        breaks.append(re.escape(p) + plain(nexts))
    nonempty = [re.escape(p) for p in prefixes if p]
    chain = "<+(?:(?:" + "|".join(nonempty) + ")<+)*"
    token = chain + "(?:" + "|".join(breaks) + ")"
    tail = chain + "(?:" + "|".join(nonempty) + ")?"
    return token, tail


_ASCII_ALNUM = string.digits + string.ascii_letters

MAX_QUERY_LEAD = 8
"""With a query bound: most raw characters before the query's first ASCII letter or digit."""

QUERY_LEADS = "("
"""ASCII punctuation a sampled query may start with (besides a letter, a digit, non-ASCII, and `\"`
when the query is unbounded)."""

# What a prose reasoning (`answer_regex(..., prose_reasoning=True)`) never holds besides "<".
PROSE_EXCLUDED = '{}[]"'


# The builders below are pure; memoised because the parser checks every completion against
# `json_object_regex` and building it takes about a millisecond.
@lru_cache(maxsize=1)
def tag_free_text_regex() -> str:
    """Regex of any text (newlines included) that contains none of the four tags."""
    token, tail = _tag_free_parts(lambda excluded: "[^<" + re.escape(excluded) + "]")
    return f"(?:[^<]|{token})*(?:{tail})?"


@lru_cache(maxsize=1)
def json_string_body_regex() -> str:
    """Regex of a JSON string body (between the quotes) that is tag-free and decodes non-blank."""
    any_unit = _unit_regex("<", None, '"\\/bfnrt', None)
    ws_unit = _unit_regex("<", True, "fnrt", True)
    solid_unit = _unit_regex("<", False, '"\\/b', False)
    token, tail = _tag_free_parts(lambda excluded: _unit_regex("<" + excluded, None, '"\\/bfnrt', None))
    rest = f"(?:{any_unit}|{token})*(?:{tail})?"
    return f"{ws_unit}*(?:{solid_unit}{rest}|{token}{rest}|{tail})"


@lru_cache(maxsize=8)
def plain_string_body_regex(max_chars: int | None = None) -> str:
    r"""Regex of the sampling sublanguage of JSON string bodies: plain text a grammar mask checks fast.

    No "<" and no `\uXXXX` escapes; the query starts as a query does (`QUERY_LEADS`): with an
    ASCII letter or digit, "(" (a Boolean group) or `\"` (a phrase), or a non-ASCII character that
    is not whitespace ("α-synuclein"); the rest are raw characters other than `"`, a backslash, "<"
    and controls, or single-letter escapes; and an ASCII letter or digit comes somewhere, so the
    query has something to search (`TaskSpec.answer_problem`: "..." is well-formed JSON but no
    query). The lead keeps the prompt's placeholder out of sampled queries: run Q's warm-up kept
    "... set truffles" and "...USE...USE...", and its policy then answered a bare "..." at greedy.
    Every such body is in `json_string_body_regex`'s language (a test checks it), and a query loses
    nothing by it: any text can be written without "<" or `\u` escapes.

    With `max_chars`, the body is bounded so a decoder under it must close the answer: raw
    characters only (no escapes, so no `\"` phrase), at most `MAX_QUERY_LEAD` before the first
    ASCII letter or digit, and `max_chars` from it on. A bounded reasoning alone does not close
    every completion: run S's RL policy, decoded under the grammar, looped "radioiodine treatment
    of thyroid volume, ..." in the query until the token cap.

    Why it exists: xgrammar masks the exact body (its tag-free alternation makes most tokens
    context-dependent) in about 20 ms per token per sequence on one CPU core, which made it the
    bottleneck of constrained sampling; this body takes about 0.01 ms.
    """
    alnum = f"[{_ASCII_ALNUM}]"
    non_ascii = "[^" + _class_items(range(0x80)) + _class_items(cp for cp in UNICODE_WHITESPACE if cp >= 0x80) + "]"
    lead = "(?:" + re.escape(QUERY_LEADS) + "|" + non_ascii + ")"   # besides a letter or digit
    between = _unit_regex("<" + _ASCII_ALNUM, None, '"\\/bfnrt', None, hex_escapes=False)
    rest = _unit_regex("<", None, '"\\/bfnrt', None, hex_escapes=False)
    if max_chars is None:
        return f"(?:{alnum}|(?:{lead}|\\\\\"){between}*{alnum}){rest}*"   # ... or a phrase's escaped quote
    if max_chars < 1:
        raise ValueError(f"max_rewrite_chars must be >= 1, got {max_chars}")
    # Bounded: raw characters only. xgrammar expands a bounded repeat of an alternation (a raw
    # character or an escape) into nested rules: 11 ms per token to mask at 64 characters against
    # 0.15 ms at 256 for a bounded character class (measured with SmolLM2's vocabulary).
    return (f"(?:{alnum}|{lead}{_raw_char_class('<' + _ASCII_ALNUM)}{{0,{MAX_QUERY_LEAD - 1}}}{alnum})"
            f"{_raw_char_class('<')}{{0,{max_chars - 1}}}")


@lru_cache(maxsize=32)
def json_object_regex(key: str, body: str | None = None) -> str:
    """Regex of the answer object `{"<key>": "<non-blank string>"}` with JSON whitespace around.

    Args:
        key: the one key (an identifier; written literally, without escapes).
        body: the string body's regex; None = `json_string_body_regex()` (exactly the parser's).

    Returns:
        A regex for the whole text between `<answer>` and `</answer>`.
    """
    body = json_string_body_regex() if body is None else body
    return f'{_WSJ}\\{{{_WSJ}"{re.escape(key)}"{_WSJ}:{_WSJ}"{body}"{_WSJ}\\}}{_WSJ}'


def answer_regex(fmt: AnswerFormat, max_reasoning_chars: int | None = None, *, prose_reasoning: bool = False,
                 max_rewrite_chars: int | None = None) -> str:
    r"""A regex matching exactly the completions `parse_answer(completion, fmt)` accepts.

    For grammar-constrained sampling (e.g. vLLM `StructuredOutputsParams(regex=...)`). Match it
    against the whole completion (the text after the prompt and the prefill).

    Args:
        fmt: the answer format (key and think mode).
        max_reasoning_chars: None: the reasoning is any tag-free text, and the regex accepts
            exactly what the parser accepts. An int N, the sampling grammar: the reasoning is at
            most N characters and holds no "<" at all (a bounded tag-free language has no compact
            regex), and the value is `plain_string_body_regex` (fast to mask); every match is still
            accepted by the parser, which accepts more (longer reasoning, "<", `\u` escapes).
        prose_reasoning: with `max_reasoning_chars`, the reasoning also holds none of
            `PROSE_EXCLUDED` (JSON brackets and double quotes): prose, never an answer-like object
            or a list of quoted strings, which a policy fine-tuned on such samples goes on writing
            in place of its answer (docs/design-notes.md, run I).
        max_rewrite_chars: with `max_reasoning_chars`, the value is bounded too
            (`plain_string_body_regex(max_rewrite_chars)`), so every decoding closes within
            `max_reasoning_chars + max_rewrite_chars + MAX_QUERY_LEAD` characters plus the tags.

    Returns:
        The regex (no anchors; use `re.fullmatch` in Python).
    """
    if max_reasoning_chars is None:
        if prose_reasoning or max_rewrite_chars is not None:
            raise ValueError("prose_reasoning and max_rewrite_chars need max_reasoning_chars (the sampling grammar)")
        reasoning, body = tag_free_text_regex(), None
    else:
        if max_reasoning_chars < 0:
            raise ValueError(f"max_reasoning_chars must be >= 0, got {max_reasoning_chars}")
        excluded = "<" + (re.escape(PROSE_EXCLUDED) if prose_reasoning else "")
        reasoning, body = f"[^{excluded}]{{0,{max_reasoning_chars}}}", plain_string_body_regex(max_rewrite_chars)
    answer = f"{re.escape(ANSWER_OPEN)}{json_object_regex(fmt.key, body)}{re.escape(ANSWER_CLOSE)}{_WSJ}"
    think_block = f"{reasoning}{re.escape(THINK_CLOSE)}{_WSJ}"
    if fmt.think == "prefill":
        return think_block + answer
    if fmt.think == "generate":
        return f"{_WSJ}{re.escape(THINK_OPEN)}" + think_block + answer
    return _WSJ + answer
