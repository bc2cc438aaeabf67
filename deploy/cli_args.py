"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.common.config import PathsConfig


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every leaf subcommand takes."""
    parser.add_argument("--data-root", type=Path, default=None, help="data root (default: $DEEPRETRIEVAL_DATA or ../shared/data)")
    parser.add_argument("--home", type=Path, default=None, help="folder for models/, indexes/, runs/ (default: $DEEPRETRIEVAL_HOME or .)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")


def paths_from_args(args: argparse.Namespace) -> PathsConfig:
    """PathsConfig with `--data-root` / `--home` applied over the env/defaults."""
    paths = PathsConfig()
    if getattr(args, "home", None) is not None:
        home = Path(args.home)
        paths = PathsConfig(models_dir=home / "models", index_dir=home / "indexes", runs_dir=home / "runs")
    if getattr(args, "data_root", None) is not None:
        paths.data_root = Path(args.data_root)
    return paths
