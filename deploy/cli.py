"""The `deepretrieval` command line: one entry point, one module per subcommand.

Each command module (`deploy/cmd_*.py`) exposes `register(subparsers)` which adds its parser and
sets `func` to a callable taking the parsed namespace and returning an exit code. Heavy imports
(torch, pyserini, vLLM) happen inside those callables, so `--help` and config errors return at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from deepretrieval.common.errors import DeepRetrievalError
from deepretrieval.common.signals import terminate_as_interrupt

# Explicit registry: command modules, in the order `--help` lists them. Nothing registers itself.
COMMAND_MODULES: tuple[str, ...] = (
    "deepretrieval.deploy.cmd_model",
    "deepretrieval.deploy.cmd_data",
    "deepretrieval.deploy.cmd_index",
    "deepretrieval.deploy.cmd_eval",
    "deepretrieval.deploy.cmd_emulate",
    "deepretrieval.deploy.cmd_warmup",
    "deepretrieval.deploy.cmd_train",
    "deepretrieval.deploy.cmd_serve",
    "deepretrieval.deploy.cmd_bench",
    "deepretrieval.deploy.cmd_plot",
    "deepretrieval.deploy.cmd_trace",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepretrieval", description="Train LMs with RL to write search queries, rewarded by the search engine's outcome.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_level", "INFO"))
    try:
        with terminate_as_interrupt():  # `kill PID` unwinds like Ctrl-C: services stop, nothing is orphaned
            return int(args.func(args) or 0)
    except DeepRetrievalError as e:
        print(f"deepretrieval {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepretrieval {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
