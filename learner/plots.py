"""Plot a run's learner metrics: one small panel per numeric key of `metrics.jsonl`, x = step.

`metrics.jsonl` holds one JSON object per learner step (`step`, `reward_mean`, `loss`,
`eval/ndcg@10` on eval steps only, ...). Reading is forgiving, because a crashed run is exactly
when the plots are wanted: an undecodable line (a truncated last line) is skipped with a warning,
keys may come and go, and NaN/inf values are gaps in the line.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.common.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
"""Periodic held-out evaluations (deploy/periodic_eval.py writes it)."""
PLOTS_DIR = "plots"
OVERVIEW_FILE = "overview.png"
_PANEL_COLUMNS = 4


@dataclass(frozen=True)
class Series:
    """One metric over the run.

    Args:
        name: the metric key, e.g. "eval/ndcg@10".
        steps: x values, ascending in file order, shape [n].
        values: y values (NaN where the record held NaN/inf), shape [n].
    """

    name: str
    steps: list[float]
    values: list[float]


def read_metrics(path: Path) -> list[dict[str, object]]:
    """The records of a metrics.jsonl file, skipping lines that are not a JSON object.

    Args:
        path: the metrics.jsonl file.

    Returns:
        One dict per readable line, in file order.

    Raises:
        ConfigError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no metrics file at {path}; pass the run folder that holds {METRICS_FILE}")
    records = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                log.warning("%s:%d is not valid JSON (%s); skipped (a run that crashed mid-write?)", path, lineno, e)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("%s:%d is a JSON %s, not an object; skipped", path, lineno, type(record).__name__)
    return records


def _number(value: object) -> float | None:
    """`value` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else math.nan


def numeric_series(records: list[dict[str, object]]) -> list[Series]:
    """Every numeric key of the records as a series against `step` (the record index without one).

    Args:
        records: metric records in step order.

    Returns:
        One Series per key that is numeric in at least one record, in first-seen key order;
        "step" itself is the x axis, not a series.
    """
    points: dict[str, tuple[list[float], list[float]]] = {}
    for index, record in enumerate(records):
        step = _number(record.get("step"))
        x = float(index) if step is None or math.isnan(step) else step
        for key, value in record.items():
            y = _number(value)
            if key == "step" or y is None:
                continue
            xs, ys = points.setdefault(key, ([], []))
            xs.append(x)
            ys.append(y)
    return [Series(name, xs, ys) for name, (xs, ys) in points.items()]


def plot_file_name(metric: str) -> str:
    """A file name for a metric's PNG: "eval/ndcg@10" -> "eval_ndcg_10.png"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_") + ".png"


def _draw(ax: Axes, series: Series) -> None:
    finite = sum(not math.isnan(v) for v in series.values)
    # Sparse metrics (eval steps) get markers: a line through 3 points hides where they are.
    marker = "o" if finite <= 20 else None
    ax.plot(series.steps, series.values, marker=marker, markersize=3, linewidth=1.0)
    ax.set_title(series.name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if finite == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes, fontsize=8)


def plot_metrics(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write an overview PNG (every metric, one panel each) and one PNG per metric.

    Args:
        run_dir: the run folder holding metrics.jsonl.
        out_dir: where the PNGs go; None = run_dir/plots.

    Returns:
        The PNGs written, overview first.

    Raises:
        ConfigError: run_dir has no metrics.jsonl, or it holds no numeric metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    series = numeric_series(read_metrics(run_dir / METRICS_FILE))
    if (run_dir / EVALS_FILE).is_file():  # periodic held-out evaluations, on the same step axis
        series += numeric_series(read_metrics(run_dir / EVALS_FILE))
    if not series:
        raise ConfigError(f"{run_dir / METRICS_FILE} holds no numeric metric to plot")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / PLOTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    columns = min(_PANEL_COLUMNS, len(series))
    rows = math.ceil(len(series) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, s in zip(axes.flat, series):
        _draw(ax, s)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.suptitle(run_dir.name, fontsize=10)
    fig.tight_layout()
    overview = out_dir / OVERVIEW_FILE
    fig.savefig(overview, dpi=100)
    plt.close(fig)

    written = [overview]
    for s in series:
        fig, ax = plt.subplots(figsize=(5, 3))
        _draw(ax, s)
        fig.tight_layout()
        name = plot_file_name(s.name)
        # Keys that sanitise alike ("a/b", "a_b") or to the overview's name get distinct files.
        while out_dir / name in written:
            name = name.removesuffix(".png") + "-1.png"
        path = out_dir / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
