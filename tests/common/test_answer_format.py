"""The answer parser (TASKS.md §1) and its regex twin agree, and malformed output never raises."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest

from deepretrieval.common.answer_format import AnswerFormat, FormatError, format_instruction, parse_answer
from deepretrieval.common.answer_grammar import PROSE_EXCLUDED, UNICODE_WHITESPACE, answer_regex, json_string_body_regex, plain_string_body_regex
from deepretrieval.common.query_composition import has_terms

QUERY = AnswerFormat(key="query")
SQL = AnswerFormat(key="sql")
FORMATS = {mode: AnswerFormat(key="query", think=mode) for mode in ("prefill", "generate", "none")}


@pytest.mark.parametrize(
    "completion, value, reasoning",
    [
        ('I should search for X.</think>\n<answer>\n{"query": "beta blockers"}\n</answer>', "beta blockers", "I should search for X."),
        ('</think><answer>{"query":"a"}</answer>', "a", ""),
        ('r</think> <answer> {"query": "caf\\u00e9 \\"x\\""} </answer>\n', 'café "x"', "r"),
        ('x < y and <th</think><answer>{"query": "a<b"}</answer>', "a<b", "x < y and <th"),
        ('r</think><answer>{"query": " \\u0041 "}</answer>', " A ", "r"),
    ],
)
def test_valid_completions_give_the_value(completion, value, reasoning):
    parsed = parse_answer(completion, QUERY)
    assert parsed.ok and parsed.error is None and parsed.message == ""
    assert parsed.value == value
    assert parsed.reasoning == reasoning


def test_sql_key_and_generated_think_and_no_reasoning_variants():
    assert parse_answer('</think><answer>{"sql": "SELECT 1"}</answer>', SQL).value == "SELECT 1"
    gen = AnswerFormat(key="query", think="generate")
    assert gen.prefill == ""
    assert parse_answer('\n<think>hm</think><answer>{"query": "q"}</answer>', gen).reasoning == "hm"
    none = AnswerFormat(key="query", think="none")
    parsed = parse_answer('<answer>{"query": "q"}</answer>', none)
    assert parsed.ok and parsed.reasoning is None
    assert parse_answer('<think>x</think><answer>{"query": "q"}</answer>', none).error == FormatError.UNEXPECTED_TAG


@pytest.mark.parametrize(
    "completion, error",
    [
        ("", FormatError.EMPTY),
        ("  \n ", FormatError.EMPTY),
        ("I think the query should be about heart failure and then I think" * 20, FormatError.TRUNCATED),
        ('r</think><answer>{"query": "q"}', FormatError.TRUNCATED),
        ('<think>r</think><answer>{"query": "q"}</answer>', FormatError.REPEATED_TAG),
        ('r</think><answer><answer>{"query": "q"}</answer></answer>', FormatError.REPEATED_TAG),
        ('r</think><answer>{"query": "</think>"}</answer>', FormatError.REPEATED_TAG),
        ('r<answer>{"query": "q"}</answer>', FormatError.MISSING_TAG),
        ('r</think>{"query": "q"}</answer>', FormatError.MISSING_TAG),
        ('r<answer>{"query": "q"}</think></answer>', FormatError.TAG_ORDER),
        ('r</think>so:<answer>{"query": "q"}</answer>', FormatError.TEXT_OUTSIDE_TAGS),
        ('r</think><answer>{"query": "q"}</answer> done', FormatError.TEXT_OUTSIDE_TAGS),
        ("r</think><answer>beta blockers</answer>", FormatError.NOT_JSON),
        ('r</think><answer>{"query": "q"</answer>', FormatError.NOT_JSON),
        ("r</think><answer>" + "[" * 100_000 + "</answer>", FormatError.NOT_JSON),
        ('r</think><answer>["q"]</answer>', FormatError.NOT_OBJECT),
        ('r</think><answer>"q"</answer>', FormatError.NOT_OBJECT),
        ('r</think><answer>{"query": "q", "why": "x"}</answer>', FormatError.WRONG_KEYS),
        ('r</think><answer>{"query": "q", "query": "p"}</answer>', FormatError.WRONG_KEYS),
        ('r</think><answer>{"sql": "q"}</answer>', FormatError.WRONG_KEYS),
        ('r</think><answer>{}</answer>', FormatError.WRONG_KEYS),
        ('r</think><answer>{"query": 3}</answer>', FormatError.NOT_STRING),
        ('r</think><answer>{"query": ["a"]}</answer>', FormatError.NOT_STRING),
        ('r</think><answer>{"query": ""}</answer>', FormatError.EMPTY_VALUE),
        ('r</think><answer>{"query": " \\t\\u3000"}</answer>', FormatError.EMPTY_VALUE),
        ('r</think><answer>{"\\u0071uery": "q"}</answer>', FormatError.NONCANONICAL),
    ],
)
def test_malformed_completions_are_format_failures(completion, error):
    parsed = parse_answer(completion, QUERY)
    assert not parsed.ok and parsed.value is None
    assert parsed.error == error, parsed.message
    assert parsed.message


def test_bytes_are_decoded_leniently_and_flagged():
    good = parse_answer('r</think><answer>{"query": "caf\xc3\xa9"}</answer>'.encode("latin-1"), QUERY)
    assert good.ok and good.value == "café" and not good.text_replaced
    bad = parse_answer(b'r\xff</think><answer>{"query": "a\xfe"}</answer>', QUERY)
    assert bad.ok and bad.value == "a\ufffd" and bad.text_replaced
    assert parse_answer(b"\xff\xfe", QUERY).error == FormatError.TRUNCATED


def test_lone_surrogates_are_replaced_and_flagged():
    parsed = parse_answer('r\ud800</think><answer>{"query": "a\\ud800"}</answer>', QUERY)
    assert parsed.ok and parsed.text_replaced
    assert parsed.value == "a\ufffd" and parsed.reasoning == "r\ufffd"


def test_instruction_shows_the_shape_only():
    text = format_instruction(QUERY)
    assert '{"query": "..."}' in text and "<answer>" in text and "</think>" in text
    assert "<think>" not in format_instruction(FORMATS["none"])
    assert QUERY.stop == ["</answer>"]


def test_whitespace_table_matches_this_python():
    assert UNICODE_WHITESPACE == frozenset(c for c in range(sys.maxunicode + 1) if chr(c).isspace())


# ------------------------------------------------------------------ parser <-> regex agreement

_REASONING_BITS = ["ab", " ", "\n", "<", "<<", "<t", "<th", "<thin", "<think", "</", "</thin", "<a", "<answe", "</answer", ">", "/", '"', "\\", "{", "é", "\u2028", "x<", "think>"]
_GOOD_VALUE_BITS = [
    "a", "b c", " ", "\\u0020", "\\u0041", "\\u00A0", "\\u3000", "\\u200B", "\\t", "\\n", "\\f", "\\b", '\\"', "\\\\", "\\/",
    "\u2028", "\u3000", "<", "<t", "<answe", "</answe", "<think", "<a<", "é", "\\ud800", "\\u1680", "\x7f", "(", "...",
]  # fmt: skip
_BAD_VALUE_BITS = ["\\x", "\\u12", '"', "\n", "\x01", "\\U0041", "<think>", "</answer>"]
_GOOD_WS = ["", " ", "\n", "\t", "\r\n"]
_BAD_WS = ["\u3000", "\x0b", "x"]
_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]


def _random_completion(rng: random.Random, think: str) -> str:
    """A near-valid completion with rare bad pieces and (sometimes) a random edit."""

    def pick(good: list[str], bad: list[str]) -> str:
        return rng.choice(bad if rng.random() < 0.03 else good)

    ws = lambda: pick(_GOOD_WS, _BAD_WS)  # noqa: E731
    reasoning = "".join(rng.choice(_REASONING_BITS) for _ in range(rng.randint(0, 5)))
    value = "".join(pick(_GOOD_VALUE_BITS, _BAD_VALUE_BITS) for _ in range(rng.randint(0, 4)))
    key = pick(["query"], ["sql", "\\u0071uery", "Query"])
    body = f'{{{ws()}"{key}"{ws()}:{ws()}"{value}"{ws()}}}'
    if rng.random() < 0.05:
        body = rng.choice(['{"query": 1}', '["q"]', '{"query": "a", "x": "b"}', "{}", body[:-1], body + "}"])
    answer = f"<answer>{ws()}{body}{ws()}</answer>{ws()}"
    text = {"prefill": f"{reasoning}</think>{ws()}", "generate": f"{ws()}<think>{reasoning}</think>{ws()}", "none": ws()}[think] + answer
    if rng.random() < 0.2:
        i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
        text = rng.choice([text[:i] + text[j:], text[:i] + rng.choice(_TAGS + _REASONING_BITS) + text[i:], text[:i]])
    return text


@pytest.mark.parametrize("think", ["prefill", "generate", "none"])
def test_regex_accepts_exactly_what_the_parser_accepts(think):
    fmt = FORMATS[think]
    pattern = re.compile(answer_regex(fmt))
    rng = random.Random(1234)
    accepted = 0
    samples = [_random_completion(rng, think) for _ in range(1500)]
    for text in samples:
        ok = parse_answer(text, fmt).ok
        assert ok == bool(pattern.fullmatch(text)), (text, parse_answer(text, fmt))
        accepted += ok
    # Both sides of the language are exercised.
    assert 0.2 * len(samples) < accepted < 0.8 * len(samples)


_RAW_BODY = re.compile(r':[ \t\n\r]*"(.*)"[ \t\n\r]*\}[ \t\n\r]*</answer>', re.S)


def _in_sampling_sublanguage(text: str, max_reasoning_chars: int) -> bool:
    """`answer_regex(..., max_reasoning_chars)`'s documented language, from the parser's view."""
    parsed = parse_answer(text, QUERY)
    if not parsed.ok or "<" in parsed.reasoning or len(parsed.reasoning) > max_reasoning_chars:
        return False
    raw = _RAW_BODY.search(text).group(1)  # the JSON string body as written
    has_alnum = re.search("[0-9A-Za-z]", re.sub(r"\\.", "", raw)) is not None  # a raw one: "\\b" is an escape
    leads_as_a_query = raw.startswith('\\"') or (raw[:1].isalnum() and raw[:1].isascii()) or raw[:1] == "(" \
        or (not raw[:1].isascii() and not raw[:1].isspace())  # a letter, digit, "(", a phrase's quote, non-ASCII
    return "<" not in raw and "\\u" not in raw.replace("\\\\", "") and leads_as_a_query and has_alnum


def test_bounded_regex_is_the_documented_sublanguage():
    pattern = re.compile(answer_regex(QUERY, max_reasoning_chars=12))
    rng = random.Random(99)
    matched = 0
    for _ in range(24000):  # about 1 in 200 random completions is in it (the query needs a raw letter or digit)
        text = _random_completion(rng, "prefill")
        in_sublanguage = _in_sampling_sublanguage(text, 12)
        assert bool(pattern.fullmatch(text)) == in_sublanguage, text
        matched += in_sublanguage
    assert matched > 60, matched
    # Every body of the sampling grammar is a body of the parser's exact grammar.
    exact, plain = re.compile(json_string_body_regex()), re.compile(plain_string_body_regex())
    bodies = ["".join(rng.choice(_GOOD_VALUE_BITS + _BAD_VALUE_BITS) for _ in range(rng.randint(1, 5))) for _ in range(6000)]
    in_plain = [b for b in bodies if plain.fullmatch(b)]
    assert len(in_plain) > 120 and all(exact.fullmatch(b) for b in in_plain)
    # ... and decodes to a query with something to search (what the rewarder and eval require).
    assert all(has_terms(json.loads(f'"{b}"')) for b in in_plain)


def test_sampling_grammar_masks_fast():
    """The sampling grammar's per-token mask stays cheap (the exact body's took ~20 ms per token on one core)."""
    pytest.importorskip("xgrammar", reason="xgrammar (a vLLM dependency) is not installed")
    from deepretrieval.actors.grammar_mask import import_xgrammar

    xgrammar = import_xgrammar()
    import xgrammar.testing as xgr_testing

    grammar = xgrammar.Grammar.from_regex(answer_regex(QUERY, max_reasoning_chars=40))
    for text, ok in [('short</think><answer>{"query": "a \\"b\\" <c"}</answer>', False),
                     ('short</think><answer>{"query": "a \\"b\\" c"}</answer>', True),
                     ('short</think><answer>{"query": " a"}</answer>', False),
                     ('short</think><answer>{"query": "..."}</answer>', False),
                     ('short</think><answer>{"query": "... 5"}</answer>', False),   # the prompt's placeholder leads no query
                     ('short</think><answer>{"query": "&& 5"}</answer>', False),
                     ('short</think><answer>{"query": "(a OR b) AND c"}</answer>', True),
                     ('short</think><answer>{"query": "\\"heart attack\\" aspirin"}</answer>', True),
                     ('short</think><answer>{"query": "α-synuclein 5"}</answer>', True),
                     ('short</think><answer>{"query": "5 ..."}</answer>', True)]:
        assert xgr_testing._is_grammar_accept_string(grammar, text) == ok, text


def test_a_query_bound_closes_every_decoding():
    """`max_rewrite_chars`: a looping query must stop (raw characters only: no escapes); the bounded body stays inside the exact body, and xgrammar agrees."""
    pytest.importorskip("xgrammar", reason="xgrammar (a vLLM dependency) is not installed")
    from deepretrieval.actors.grammar_mask import import_xgrammar

    xgrammar = import_xgrammar()
    import xgrammar.testing as xgr_testing

    regex = answer_regex(QUERY, max_reasoning_chars=20, max_rewrite_chars=12)
    grammar = xgrammar.Grammar.from_regex(regex)
    exact = re.compile(json_string_body_regex())
    for query, ok in [("a" * 12, True), ("a" * 13, False), ("(heart) x", True), ('a \\"b\\"', False), ("(((((((((x", False), ("thyroid, thyroid, thyroid", False)]:
        text = f'short</think><answer>{{"query": "{query}"}}</answer>'
        assert bool(re.fullmatch(regex, text)) == ok == xgr_testing._is_grammar_accept_string(grammar, text), text
        assert not ok or exact.fullmatch(query)
    for bad in ({"max_rewrite_chars": 0, "max_reasoning_chars": 5}, {"max_rewrite_chars": 5}):
        with pytest.raises(ValueError):
            answer_regex(QUERY, **bad)


def test_prose_reasoning_keeps_brackets_and_quotes_out_of_the_reasoning_only():
    pytest.importorskip("xgrammar", reason="xgrammar (a vLLM dependency) is not installed")
    from deepretrieval.actors.grammar_mask import import_xgrammar

    xgrammar = import_xgrammar()
    import xgrammar.testing as xgr_testing

    regex = answer_regex(QUERY, max_reasoning_chars=40, prose_reasoning=True)
    grammar = xgrammar.Grammar.from_regex(regex)
    answer = '</think>\n<answer>{"query": "a [b] {c}"}</answer>'   # the answer value may hold any of them
    cases = [("Prose, with: commas (and brackets).", True), ("", True)]
    cases += [(f"Reasoning {c} here", False) for c in PROSE_EXCLUDED + "<"]
    for reasoning, ok in cases:
        text = reasoning + answer
        assert bool(re.fullmatch(regex, text)) == ok == xgr_testing._is_grammar_accept_string(grammar, text), text
        assert parse_answer(text, QUERY).ok  # a sublanguage: the parser accepts both
    with pytest.raises(ValueError, match="max_reasoning_chars"):
        answer_regex(QUERY, prose_reasoning=True)


def test_xgrammar_reads_the_regex_the_same_way():
    pytest.importorskip("xgrammar", reason="xgrammar (a vLLM dependency) is not installed")
    from deepretrieval.actors.grammar_mask import import_xgrammar

    xgrammar = import_xgrammar()  # keeps a JVM in this process safe (see its docstring)
    import xgrammar.testing as xgr_testing

    grammar = xgrammar.Grammar.from_regex(answer_regex(QUERY))
    rng = random.Random(7)
    samples = [_random_completion(rng, "prefill") for _ in range(60)]
    samples += ['</think><answer>{"query": "\\u0020x"}</answer>', '</think><answer>{"query": "\\u0020"}</answer>', 'a<th<x</think><answer>{"query":"<a"}</answer>']
    for text in samples:
        assert xgr_testing._is_grammar_accept_string(grammar, text) == parse_answer(text, QUERY).ok, text


@pytest.mark.parametrize("think", ["prefill", "generate", "none"])
@pytest.mark.parametrize("value", ["statins muscle pain", 'quote " and \\ backslash', "naïve ünïcode", "  padded  "])
def test_render_answer_is_read_back_by_the_parser_and_matches_the_grammar(think, value):
    from deepretrieval.common.answer_format import render_answer

    fmt = AnswerFormat(key="query", think=think)
    text = render_answer(fmt, value, reasoning="short reasoning")
    parsed = parse_answer(text, fmt)
    assert parsed.ok and parsed.value == value, parsed
    assert re.fullmatch(answer_regex(fmt), text)
