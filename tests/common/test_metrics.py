import math

import pytest

from deepretrieval.common.metrics import evaluate


def test_hand_computed_trec_eval_values():
    # q1: relevant d1 (grade 2), d3 (grade 1); ranking d2, d1, d3.
    #   DCG@10 = 2/log2(3) + 1/log2(4) = 1.26186 + 0.5; IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093
    #   recall@10 = 2/2; reciprocal rank = 1/2
    # q2: relevant d9 not retrieved at all -> every metric 0
    qrels = {"q1": {"d1": 2, "d3": 1, "d4": 0}, "q2": {"d9": 1}}
    run = {"q1": {"d2": 3.0, "d1": 2.0, "d3": 1.0}, "q2": {"d5": 1.0}}
    mean, pq = evaluate(qrels, run)
    ndcg = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert pq["q1"]["ndcg@10"] == pytest.approx(ndcg, abs=1e-4)
    assert pq["q1"]["recall@10"] == 1.0 and pq["q1"]["mrr@10"] == 0.5
    assert pq["q2"] == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "recall@1000": 0.0, "mrr@10": 0.0}
    assert mean["mrr@10"] == pytest.approx(0.25)


def test_mrr_at_10_ignores_hits_below_rank_10():
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"d{i:02d}": 100.0 - i for i in range(11)} | {"rel": 0.5}}  # rel is 12th
    _, pq = evaluate(qrels, run)
    assert pq["q"]["mrr@10"] == 0.0
    assert pq["q"]["recall@100"] == 1.0


def test_query_absent_from_run_scores_zero():
    mean, pq = evaluate({"q1": {"d": 1}, "q2": {"d": 1}}, {"q1": {"d": 1.0}})
    assert pq["q2"]["ndcg@10"] == 0.0 and mean["ndcg@10"] == 0.5
