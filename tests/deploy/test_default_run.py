"""The full default run (slow suite): warm-up, asynchronous GRPO and held-out evaluation, on CPU.

`pytest -m slow tests/deploy/test_default_run.py` trains `configs/default-cpu.yaml` into a fresh
home, then evaluates SciFact test (a collection the run never trained on) with the untrained,
warmed-up and RL policies, NFCorpus and SciFact with the RL policy as served (grammar-constrained), and
every test query of both with the RL policy, compared with the originals query by query (a bootstrap
interval and a randomization test: common/significance.py), and writes every table to `bench/results/learning-default-cpu.json`.
The targets are issue 8's: warm-up format-ok >= 0.9; PubMed-style recall after RL >= 2x the raw
request's; NFCorpus nDCG@10 after RL above the original queries'; SciFact not below them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deepretrieval.common.config import load_config
from deepretrieval.common.hardware import cpu_has_bf16, describe_cpu
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.deploy.cli import main
from deepretrieval.deploy.rollout_scoring import task_specs

ROOT = Path(__file__).resolve().parents[2]
#: Most characters of a served query (`eval --max-rewrite-chars`): a policy that loops inside its query
#: still closes the answer (run S: 2 of 100 SciFact answers looped to the token cap without a bound).
SERVED_REWRITE_CHARS = 256


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_default_run_learns_and_beats_the_original_queries(tmp_path, data_root, index_root, models_dir, policy_dir):
    home = tmp_path / "home"
    overrides = ["--set", f"paths.data_root={data_root}", "--set", f"paths.index_dir={index_root}",
                 "--set", f"paths.models_dir={models_dir}", "--set", f"paths.runs_dir={home / 'runs'}"]
    config = ROOT / "configs" / "default-cpu.yaml"
    # SciFact is searched as the policy learnt to search NFCorpus: the same query composition and prompt (its own top results)
    cfg = load_config(TrainConfig, config)
    spec = task_specs(cfg)["sparse"]
    compose, feedback = spec.query, spec.feedback
    compose_args = ["--query-mode", compose.mode] + (["--original-repeats", str(compose.original_repeats)] if compose.mode == "expand" else []) \
        + (["--new-terms-only"] if compose.new_terms_only else []) \
        + (["--feedback-docs", str(feedback.docs), "--feedback-chars", str(feedback.max_chars)] if feedback else [])
    t0 = time.monotonic()
    assert main(["train", "--config", str(config), *overrides]) == 0
    train_s = time.monotonic() - t0
    run = home / "runs" / "default-cpu"
    learning = json.loads((run / "learning.json").read_text())
    warm = json.loads((run / "warmup" / "warmup.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    final = summary["learner"]["policy_version"]
    rl_policy = run / "weights" / f"v{final:06d}"
    scifact = tmp_path / "scifact.json"
    assert main(["eval", "--dataset", "scifact", "--max-queries", "100", "--data-root", str(data_root), "--home", str(index_root.parent),
                 "--rewriter", f"untrained={policy_dir}", "--rewriter", f"warmup={run / 'warmup' / 'policy'}",
                 "--rewriter", f"rl={rl_policy}", "--json", str(scifact),
                 "--rewrites-out", str(run / "scifact-rewrites.jsonl"), *compose_args]) == 0
    sci = json.loads(scifact.read_text())["metrics"]
    # The RL policy as the endpoint serves it: decoded under the answer grammar, reasoning capped as in
    # the warm-up, the query bounded, so no answer breaks the format (reported, not a target).
    served: dict[str, dict[str, float]] = {}
    for dataset in ("nfcorpus", "scifact"):
        served_json = tmp_path / f"served-{dataset}.json"
        assert main(["eval", "--dataset", dataset, "--max-queries", "100", "--data-root", str(data_root), "--home", str(index_root.parent),
                     "--rewriter", f"rl={rl_policy}", "--constrained",
                     "--max-reasoning-chars", str(cfg.warmup.max_reasoning_chars), "--max-rewrite-chars", str(SERVED_REWRITE_CHARS),
                     "--json", str(served_json), *compose_args]) == 0
        report = json.loads(served_json.read_text())
        served[dataset] = {"original": report["metrics"]["original"]["ndcg@10"], "rl_served": report["metrics"]["rl"]["ndcg@10"],
                           "broken_share": report["format_broken_share"]}
    # Every test query of both collections, the RL policy as trained (greedy, unconstrained), query by query
    # against the originals: is a difference of a few thousandths on 100 queries a gain, a loss or neither?
    full_test: dict[str, dict] = {}
    for dataset in ("nfcorpus", "scifact"):
        full_json = tmp_path / f"full-{dataset}.json"
        assert main(["eval", "--dataset", dataset, "--data-root", str(data_root), "--home", str(index_root.parent),
                     "--rewriter", f"rl={rl_policy}", "--rm3", "--json", str(full_json), *compose_args]) == 0
        report = json.loads(full_json.read_text())
        full_test[dataset] = {"queries": report["num_queries"], "broken_share": report["format_broken_share"],
                              **{row: report["metrics"][row]["ndcg@10"] for row in ("original", "rl", "rl+fallback", "original+rm3")},
                              "paired_vs_original": {row: report["paired_vs_original"][row]["ndcg@10"] for row in ("rl", "rl+fallback", "original+rm3")}}
    tables = {"cpu": describe_cpu(), "train_seconds": train_s, "train_stages_s": summary["stages_s"], "budgeted_s": summary["budgeted_s"],
              "rl_steps": summary["learner"]["steps"], "stopped_by_budget": summary["stopped_by_budget"],
              "scifact_query_composition": compose.model_dump(), "scifact_feedback": feedback.model_dump() if feedback else None, "warmup": warm, "trained_tasks": learning,
              "scifact_bm25_transfer": {row: sci[row]["ndcg@10"] for row in ("original", "untrained", "warmup", "rl")},
              "served_ndcg@10": served, "full_test_ndcg@10": full_test}
    out = ROOT / "bench" / "results" / f"learning-default-cpu{'-bf16' if cpu_has_bf16() else ''}.json"  # one file per machine kind
    out.write_text(json.dumps(tables, indent=2, default=str))

    assert warm["format_ok_after"] >= 0.9
    pubmed, nf = learning["pubmed"]["rows"], learning["sparse"]["rows"]
    assert pubmed["rl"] >= 2 * pubmed["original"]
    assert nf["rl"] > nf["original"]
    assert tables["scifact_bm25_transfer"]["rl"] >= tables["scifact_bm25_transfer"]["original"]
    # The budget is the issue's: warm-up + RL + final evaluation (with setup) within 60 minutes; the
    # evaluations of the untrained and the warmed-up policy only show the table's first rows. The
    # config's time_budget stops RL early where a slower machine needs it to.
    assert summary["budgeted_s"] <= 3600
