"""Step metrics of the learner: what one step read, per task's backend included."""

from __future__ import annotations

import math

from deepretrieval.learner.batcher import Batch
from deepretrieval.learner.loop import _batch_metrics


def test_step_metrics_split_reward_and_groups_by_backend(make_scored):
    pubmed = [make_scored("p1", i, r, backend="pubmed") for i, r in enumerate([1.0, 0.0, 0.0, 1.0])]
    bm25 = [make_scored("b1", i, r, backend="bm25") for i, r in enumerate([0.5, 0.25, 0.25, 0.0])]
    tied = [make_scored("b2", i, 0.1, backend="bm25") for i in range(4)]
    invalid = [make_scored("b3", i, -2.0, status="invalid", backend="bm25") for i in range(4)]
    batch = Batch(scored=pubmed + bm25, entry_ids=[], group_ids=["p1", "b1"], dropped=tied + invalid)

    m = _batch_metrics(batch, lags=[0] * 8)

    assert m["reward_mean/pubmed"] == 0.5
    assert math.isclose(m["reward_mean/bm25"], (0.5 + 0.25 + 0.25 + 0.0 + 4 * 0.1 - 8.0) / 12)
    assert (m["groups_trained/pubmed"], m["groups_trained/bm25"]) == (1.0, 1.0)
    assert (m["groups_dropped_tied/pubmed"], m["groups_dropped_tied/bm25"]) == (0.0, 2.0)
    assert m["groups_dropped_tied"] == 2.0
    assert m["format_error_share"] == 4 / 16
    assert math.isclose(m["reward_mean"], (2.0 + 1.0 + 0.4 - 8.0) / 16)
