"""Paired comparison of per-query metrics (common/significance.py), on cases small enough to work out by hand."""

import pytest

from deepretrieval.common.significance import compare_paired, compare_sets


def test_three_queries_exactly():
    """Deltas +0.2, +0.1, 0. Randomization flips the two moved queries: the 4 sign patterns give means of
    +-0.15 and +-0.05; |mean| >= the observed 0.15 in 2 of 4: p = 0.5. Bootstrap: a resample of three
    zeros (or of three 0.2s) has probability 1/27 = 3.7% > 2.5%, so the 95% interval is [0, 0.2]."""
    c = compare_paired({"a": 0.1, "b": 0.5, "c": 0.2}, {"a": 0.3, "b": 0.6, "c": 0.2})
    assert (c.queries, c.better, c.worse, c.equal) == (3, 2, 0, 1)
    assert c.mean_delta == pytest.approx(0.1)
    assert c.p_value == pytest.approx(0.5)
    assert (c.ci95_low, c.ci95_high) == (pytest.approx(0.0), pytest.approx(0.2))


def test_identical_rankings_are_level_with_certainty_of_nothing():
    same = {str(i): i / 10 for i in range(10)}
    c = compare_paired(same, dict(same))
    assert (c.mean_delta, c.ci95_low, c.ci95_high, c.p_value, c.equal) == (0.0, 0.0, 0.0, 1.0, 10)


def test_a_consistent_gain_is_significant_and_a_one_query_gain_is_not():
    base = {str(i): 0.3 + (i % 7) / 20 for i in range(60)}
    steady = compare_paired(base, {q: v + 0.05 + (0.01 if int(q) % 2 else -0.01) for q, v in base.items()})
    assert steady.p_value < 0.001 and steady.ci95_low > 0 and steady.better == 60
    lucky = compare_paired(base, {q: v + (0.6 if q == "0" else 0.0) for q, v in base.items()})
    assert lucky.mean_delta == pytest.approx(0.01)
    # One query moved: flipping its sign is the only other outcome, so p = 1 exactly, and the interval reaches 0.
    assert lucky.p_value == 1.0 and lucky.ci95_low == 0.0 and lucky.better == 1
    # ... however many queries did not move (the flips of unmoved queries once added float noise: p = 0.994)
    wide = {str(i): 0.25 + (i % 13) / 17 for i in range(100)}
    assert compare_paired(wide, wide | {"7": wide["7"] - 0.63}).p_value == 1.0


def test_seeded_so_a_report_reproduces_and_only_shared_queries_count():
    base = {str(i): (i * 37 % 11) / 11 for i in range(40)}
    other = {q: (v + (0.2 if int(q) % 3 else -0.15)) for q, v in base.items()} | {"extra": 1.0}
    first, again = compare_paired(base, other), compare_paired(base, other)
    assert first == again and first.queries == 40
    with pytest.raises(ValueError, match="share no query id"):
        compare_paired({"a": 1.0}, {"b": 1.0})


def test_every_set_against_the_baseline_per_metric():
    per_query = {q: {"original": {"m": 0.5, "n": 0.1}, "rw": {"m": 0.5 + d, "n": 0.1}, "rw+fallback": {"m": 0.5, "n": 0.1}}
                 for q, d in (("a", 0.1), ("b", -0.1), ("c", 0.0))}
    out = compare_sets(per_query, "original", ("m", "n"))
    assert set(out) == {"rw", "rw+fallback"} and set(out["rw"]) == {"m", "n"}
    assert (out["rw"]["m"].better, out["rw"]["m"].worse, out["rw"]["m"].equal) == (1, 1, 1)
    assert out["rw"]["n"].equal == 3 and out["rw+fallback"]["m"].p_value == 1.0
