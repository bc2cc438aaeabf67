"""`deepretrieval warmup --config FILE [--json OUT]`: the format warm-up (RFT) of a run, on its own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepretrieval.deploy.cmd_train import add_run_config_args, load_train_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warmup", help="format warm-up before RL: sample constrained, keep what beats the original query, fine-tune")
    add_run_config_args(p)
    p.add_argument("--json", type=Path, default=None, help="also write the report (format_ok_before/after, kept, sft_steps, seconds) here")
    p.add_argument("--from-candidates", type=Path, default=None, metavar="JSONL",
                   help="fine-tune on an earlier warm-up's scored completions (its runs/<run>/warmup/candidates.jsonl) under this "
                        "config's filter and SFT settings, sampling and searching nothing; give another --run to keep that warm-up's policy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_train_config(args)  # a bad value fails here, before any model loads
    from deepretrieval.deploy.launcher import prepare_run
    from deepretrieval.deploy.services import run_services
    from deepretrieval.deploy.warmup import run_warmup

    with run_services(cfg) as cfg:
        prepare_run(cfg)
        report = run_warmup(cfg, from_candidates=args.from_candidates)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"warm-up {cfg.run}: format ok {report['format_ok_before']:.2f} -> {report['format_ok_after']:.2f}, "
          f"kept {report['kept']}/{report['prompts']}, {report['sft_steps']} SFT steps, {report['seconds']:.0f}s -> {report['policy']}")
    return 0
