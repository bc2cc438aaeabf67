"""`deepretrieval plot RUN_DIR`: PNGs of a run's learner metrics (RUN_DIR/metrics.jsonl)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a run's metrics.jsonl into RUN_DIR/plots/")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder holding metrics.jsonl")
    p.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default RUN_DIR/plots)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from deepretrieval.learner.plots import plot_metrics

    written = plot_metrics(args.run_dir, args.out)
    print(f"{len(written)} plots written to {written[0].parent} (overview: {written[0].name})")
    return 0
