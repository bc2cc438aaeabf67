"""Kill -9 during a real run: a dead rewarder or actor is restarted and no sample is lost or trained twice.

The whole system runs (Ray, a private redis-server, Lucene BM25 rewarders, the transformers actor,
the learner); the chaos benchmark's own trial kills the workers, so the test checks the benchmark
and the recovery together.
"""

from __future__ import annotations

import pytest

from deepretrieval.common.config import PathsConfig
from deepretrieval.deploy import bench_chaos


def test_killing_a_rewarder_and_the_actor_loses_and_duplicates_nothing(tmp_path, data_root, index_root, models_dir, policy_dir):
    paths = PathsConfig(data_root=data_root, index_dir=index_root, models_dir=models_dir, runs_dir=tmp_path / "runs")
    # Two kills in one trial, from the workers that are not the learner (the benchmark's record
    # shows learner kills recovering; a killed rewarder used to fail the launcher itself).
    result = bench_chaos.run(paths, trials=1, steps=4, kills=2, engine="hf", victims=("rewarder-0", "actor-0"))
    trial = result["per_trial"][0]
    assert len(trial["killed"]) == 2, trial
    assert sum(trial["restarts"][v] for v in ("rewarder-0", "actor-0")) == 2, trial
    assert trial["trained"] == 4 * 2 * 2  # 4 steps x 2 groups x 2 samples
    assert result["lost"] == 0 and result["duplicated"] == 0, trial


def test_victims_must_be_workers_of_the_chaos_run(tmp_path):
    with pytest.raises(ValueError, match="victims"):
        bench_chaos.run(PathsConfig(runs_dir=tmp_path), trials=1, victims=("learner-1",))
