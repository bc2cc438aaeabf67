"""`deepretrieval plot RUN_DIR` on a crashed run's metrics.jsonl: every numeric key gets a panel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from deepretrieval.common.errors import ConfigError
from deepretrieval.deploy.cli import main
from deepretrieval.learner.plots import numeric_series, plot_file_name, read_metrics

STEPS = 30


def _write_crashed_run(run_dir: Path) -> None:
    """30 learner steps, eval every 10, a NaN loss at step 7, a key that starts late, a cut last line."""
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(STEPS):
        record: dict[str, object] = {
            "step": step, "time_s": 2.0 * step, "reward_mean": 0.2 + 0.01 * step, "format_error_share": max(0.0, 0.5 - 0.02 * step),
            "staleness_mean": 1.5, "loss": math.nan if step == 7 else 1.0 / (step + 1), "entropy": 2.0 - 0.03 * step,
            "clip_frac": 0.1, "run": "demo", "skipped": False,
        }
        if step >= 5:
            record["api_rps"] = 9.5
            record["cache_hit_rate"] = step / STEPS
        if step % 10 == 0:
            record["eval/ndcg@10"] = 0.3 + 0.01 * step
        lines.append(json.dumps(record))
    # json.dumps writes NaN as the bare token NaN, which json.loads reads back.
    text = "\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2]
    (run_dir / "metrics.jsonl").write_text(text)


def test_reading_skips_the_truncated_line_and_keeps_numeric_keys_only(tmp_path: Path):
    _write_crashed_run(tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == STEPS
    series = {s.name: s for s in numeric_series(records)}
    assert set(series) == {"time_s", "reward_mean", "format_error_share", "staleness_mean", "loss", "entropy", "clip_frac",
                           "api_rps", "cache_hit_rate", "eval/ndcg@10"}
    assert series["eval/ndcg@10"].steps == [0.0, 10.0, 20.0]
    assert series["api_rps"].steps[0] == 5.0
    assert math.isnan(series["loss"].values[7]) and len(series["loss"].values) == STEPS
    assert plot_file_name("eval/ndcg@10") == "eval_ndcg_10.png"


def test_plot_command_writes_an_overview_and_one_png_per_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run_dir = tmp_path / "run"
    _write_crashed_run(run_dir)
    assert main(["plot", str(run_dir)]) == 0
    pngs = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert pngs == sorted(["overview.png", "time_s.png", "reward_mean.png", "format_error_share.png", "staleness_mean.png",
                           "loss.png", "entropy.png", "clip_frac.png", "api_rps.png", "cache_hit_rate.png", "eval_ndcg_10.png"])
    for name in pngs:
        data = (run_dir / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    assert "11 plots written" in capsys.readouterr().out


def test_a_missing_metrics_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from deepretrieval.learner.plots import plot_metrics

    with pytest.raises(ConfigError, match="no metrics file"):
        plot_metrics(tmp_path)
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics file" in capsys.readouterr().err
