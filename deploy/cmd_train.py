"""`deepretrieval train --config FILE`: the whole system on one machine (or a Ray cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.deploy.cli_args import add_common_args, add_trace_args, apply_trace_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a query-writing policy with RL (actors, rewarders, learner on Ray)")
    add_run_config_args(p)
    p.set_defaults(func=run)


def add_run_config_args(p: argparse.ArgumentParser) -> None:
    """--config, --set, --mode, --run, --trace-file and the common options (read by `load_train_config`)."""
    p.add_argument("--config", type=Path, required=True, help="run config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set max_steps=50 --set learner.optim.lr=2e-5")
    p.add_argument("--mode", choices=["async", "sync"], default=None, help="override the config's mode")
    p.add_argument("--run", default=None, help="override the run name")
    add_trace_args(p, default_help="the config's trace_file, else runs/<run>/traces.jsonl")
    add_common_args(p)


def load_train_config(args: argparse.Namespace):
    """The validated TrainConfig from --config, --set, --mode, --run, --data-root, --home, --trace-file."""
    from deepretrieval.common.config import load_config
    from deepretrieval.common.train_config import TrainConfig

    overrides = list(args.overrides)
    if args.mode:
        overrides.append(f"mode={args.mode}")
    if args.run:
        overrides.append(f"run={args.run}")
    if getattr(args, "data_root", None):
        overrides.append(f"paths.data_root={args.data_root}")
    if getattr(args, "home", None):
        home = Path(args.home)
        overrides += [f"paths.models_dir={home / 'models'}", f"paths.index_dir={home / 'indexes'}", f"paths.runs_dir={home / 'runs'}"]
    return apply_trace_file(load_config(TrainConfig, args.config, overrides), args)


def run(args: argparse.Namespace) -> int:
    cfg = load_train_config(args)  # a bad value fails here, before any process starts
    from deepretrieval.deploy.launcher import launch

    result = launch(cfg)
    stages = ", ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in result.stages_s.items())
    print(f"run {cfg.run}: {result.learner.get('steps')} steps in {result.seconds:.0f}s ({stages}) -> {result.run_dir}"
          + (" (interrupted; checkpoint saved)" if result.interrupted else "")
          + (f" (stopped by the time budget before max_steps={cfg.max_steps})" if result.stopped_by_budget else ""))
    if result.learning:
        from deepretrieval.deploy.run_eval import learning_lines

        print("\n".join(learning_lines(result.learning)))
    return 130 if result.interrupted else 0
