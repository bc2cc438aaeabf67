"""Rewrite selection and sampling settings (pure; the engine path runs in tests/deploy/test_serve.py)."""

from __future__ import annotations

import pytest

from deepretrieval.actors.rewrite import first_valid, parse_rewrite, sampling_for
from deepretrieval.common.tasks import QUERY_NO_TERMS, get_task

SPARSE = get_task("sparse")
VALID = 'look for statin myopathy</think>\n<answer>{"query": "statin myopathy"}</answer>'
CUT = "look for statin myo"


def test_parse_rewrite_keeps_the_query_or_says_why_not():
    ok, cut = parse_rewrite(VALID, SPARSE), parse_rewrite(CUT, SPARSE)
    assert (ok.query, ok.reasoning, ok.error, ok.message) == ("statin myopathy", "look for statin myopathy", None, "")
    assert cut.query is None and cut.error == "truncated" and "</answer>" in cut.message


def test_a_query_with_nothing_to_search_is_no_rewrite():
    dots = parse_rewrite(VALID.replace("\"statin myopathy\"", "\"...\""), SPARSE)
    assert (dots.query, dots.error, dots.reasoning) == (None, QUERY_NO_TERMS, "look for statin myopathy")
    assert "nothing to search" in dots.message
    assert parse_rewrite(VALID.replace("\"statin myopathy\"", "\"... B12\""), SPARSE).query == "... B12"
    sql = get_task("sql")  # statements are the SQL backend's to judge
    assert parse_rewrite('</think><answer>{"sql": "..."}</answer>', sql).query == "..."


def test_first_valid_skips_broken_completions():
    broken, ok = parse_rewrite(CUT, SPARSE), parse_rewrite(VALID, SPARSE)
    assert first_valid([broken, ok, parse_rewrite(VALID.replace("statin myopathy", "x"), SPARSE)]) is ok
    assert first_valid([broken, parse_rewrite("", SPARSE)]) is broken  # none valid: the first, with its reason
    with pytest.raises(ValueError):
        first_valid([])


def test_sampling_for_keeps_greedy_for_one_sample_and_samples_groups():
    one = sampling_for(SPARSE)
    assert (one.n, one.temperature, one.max_new_tokens, one.stop) == (1, 0.0, SPARSE.max_new_tokens, ["</answer>"])
    group = sampling_for(SPARSE, n=3, temperature=0.0, max_new_tokens=32)
    assert (group.n, group.temperature, group.max_new_tokens) == (3, SPARSE.temperature, 32)  # greedy samples would be identical
    assert sampling_for(SPARSE, n=2, temperature=0.9).temperature == 0.9
