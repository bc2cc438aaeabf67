"""Is a rewriter's difference from the original queries real? A paired comparison of per-query metrics.

A mean nDCG@10 a few thousandths above or below the original queries' says little on 100-300
queries: most rewrites leave most rankings as they were, and a handful of queries move the mean.
So every evaluation that compares query sets also reports, per metric, over the same queries:

- the mean per-query difference and its 95% percentile-bootstrap interval;
- the two-sided p-value of a paired randomization (sign-flip) test, the test IR evaluation
  recommends for comparing systems on one query set (Smucker, Allan and Carterette, CIKM 2007);
- how many queries the rewriter ranked better, worse, and exactly as well.

Both resampling procedures are scipy's (`scipy.stats.bootstrap`, `scipy.stats.permutation_test`),
seeded, so a report reproduces to the digit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

#: Resamples for the bootstrap interval and the randomization test: the p-value's own error is
#: about sqrt(p(1-p)/n), under 0.005 at n = 10,000.
RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedComparison:
    """One metric, one query set against a baseline set, over the queries both were scored on."""

    queries: int
    mean_delta: float
    ci95_low: float
    ci95_high: float
    p_value: float
    better: int
    worse: int
    equal: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.mean_delta:+.4f} [{self.ci95_low:+.4f}, {self.ci95_high:+.4f}] p={self.p_value:.3f}; "
                f"better {self.better}, worse {self.worse}, equal {self.equal} of {self.queries}")


def compare_paired(baseline: Mapping[str, float], other: Mapping[str, float], *, resamples: int = RESAMPLES,
                   seed: int = 0) -> PairedComparison:
    """Compare `other` with `baseline`, both query id -> metric value, over the ids they share.

    Raises:
        ValueError: when they share no query id.
    """
    from scipy.stats import bootstrap, permutation_test

    ids = sorted(baseline.keys() & other.keys())
    if not ids:
        raise ValueError("the two query sets share no query id: nothing to compare")
    base = np.array([baseline[q] for q in ids], dtype=np.float64)
    new = np.array([other[q] for q in ids], dtype=np.float64)
    delta = new - base
    better, worse = int((delta > 0).sum()), int((delta < 0).sum())
    counts = {"queries": len(ids), "mean_delta": float(delta.mean()), "better": better, "worse": worse,
              "equal": len(ids) - better - worse}
    if better + worse == 0:  # identical rankings everywhere: no spread to resample
        return PairedComparison(ci95_low=0.0, ci95_high=0.0, p_value=1.0, **counts)
    ci = bootstrap((delta,), np.mean, n_resamples=resamples, confidence_level=0.95, method="percentile",
                   rng=np.random.default_rng(seed)).confidence_interval
    # Flipping the sign of an unchanged query changes nothing, so the test flips the moved ones only:
    # exact (every sign pattern) while 2**moved <= resamples, and no float noise from the unmoved.
    moved = delta[delta != 0]
    p_value = 1.0  # one moved query: its two signs are equally extreme (scipy wants two observations)
    if len(moved) > 1:
        p_value = float(permutation_test((moved,), lambda d, axis: np.mean(d, axis=axis), permutation_type="samples", vectorized=True,
                                         n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed)).pvalue)
    return PairedComparison(ci95_low=float(ci.low), ci95_high=float(ci.high), p_value=p_value, **counts)


def compare_sets(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str, metrics: tuple[str, ...], *,
                 resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, PairedComparison]]:
    """Every query set of an evaluation against `baseline`, per metric.

    Args:
        per_query: query id -> set name -> metric -> value (as `evaluate_query_sets` returns it).

    Returns:
        set name -> metric -> comparison, for every set but the baseline.
    """
    names = sorted({name for sets in per_query.values() for name in sets} - {baseline})
    base = {m: {q: sets[baseline][m] for q, sets in per_query.items() if baseline in sets} for m in metrics}
    out: dict[str, dict[str, PairedComparison]] = {}
    for name in names:
        out[name] = {}
        for m in metrics:
            other = {q: sets[name][m] for q, sets in per_query.items() if name in sets}
            out[name][m] = compare_paired(base[m], other, resamples=resamples, seed=seed)
    return out


def paired_to_json(paired: Mapping[str, Mapping[str, PairedComparison]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """set -> metric -> comparison (as `compare_sets` returns it), as JSON."""
    return {name: {m: c.to_json() for m, c in by_m.items()} for name, by_m in paired.items()}
