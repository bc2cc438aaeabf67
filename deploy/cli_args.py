"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from deepretrieval.common.config import PathsConfig

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

ConfigT = TypeVar("ConfigT", bound=BaseModel)


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


def add_trace_args(parser: argparse.ArgumentParser, default_help: str = "no file") -> None:
    """`--trace-file PATH` for long-running commands (train, emulate, serve).

    Commands whose config has a `trace_file` field apply it with `apply_trace_file`; commands
    tracing only their own process wrap their work in `command_tracing`.

    Args:
        parser: the command's parser.
        default_help: what happens without the option, for `--help` (e.g. the config's trace_file).
    """
    parser.add_argument("--trace-file", type=Path, default=None, metavar="PATH",
                        help=f"append finished OpenTelemetry spans to PATH as JSON lines, for `deepretrieval trace summary` "
                             f"(default: {default_help}); OTLP export follows the standard OTEL_* environment variables")


def trace_file_from_args(args: argparse.Namespace) -> Path | None:
    """The absolute `--trace-file` (worker processes may run elsewhere than the CLI's cwd), or None."""
    path = getattr(args, "trace_file", None)
    return Path(path).absolute() if path is not None else None


def apply_trace_file(cfg: ConfigT, args: argparse.Namespace) -> ConfigT:
    """`cfg` with its `trace_file` field replaced by `--trace-file` when that was given (train, serve)."""
    trace_file = trace_file_from_args(args)
    return cfg if trace_file is None else cfg.model_copy(update={"trace_file": trace_file})


@contextmanager
def command_tracing(args: argparse.Namespace, service_name: str) -> Iterator[Tracer | None]:
    """Tracing for a command's own process, flushed when the block ends.

    Spans go to `--trace-file` and to an OTLP collector when the OTEL_* environment asks for one;
    with neither, nothing is set up and the block gets None (callers then create no spans at all).

    Args:
        args: the parsed command line (reads `trace_file`).
        service_name: the `service.name` of this process (OTEL_SERVICE_NAME wins when set).

    Yields:
        A tracer, or None when tracing is off.
    """
    from deepretrieval.common.telemetry import get_tracer, otlp_requested, setup_tracing, shutdown_tracing

    trace_file = trace_file_from_args(args)
    if trace_file is None and not otlp_requested():
        yield None
        return
    provider = setup_tracing(service_name, trace_file)
    try:
        yield get_tracer(provider)
    finally:
        shutdown_tracing(provider)
