"""`deepretrieval serve --model DIR`: the query-rewriting endpoint (Ray Serve) on this machine.

`POST /v1/rewrite` with `{"query": "..."}` answers the policy's rewrite; `GET /healthz` the served
policy. Runs until Ctrl-C. On a cluster, point a RayService at
`deepretrieval.deploy.serve_app:build_app` instead (same config, as the application's `args`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.deploy.cli_args import add_common_args, add_trace_args, apply_trace_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a policy as a query-rewriting HTTP endpoint (Ray Serve): POST /v1/rewrite, GET /healthz")
    p.add_argument("--model", default=None, help="policy: a Hugging Face folder (e.g. runs/R/weights/v000020) or the default model's name (default: the config's)")
    p.add_argument("--task", default=None, help="task of requests that name none (default: the config's, sparse)")
    p.add_argument("--config", type=Path, default=None, help="serve config YAML (ServeConfig: engine, batching, replicas, backend, limits)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set max_new_tokens=128 --set replicas.num_replicas=2")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    add_trace_args(p, default_help="the config's trace_file, else none")
    add_common_args(p)
    p.set_defaults(func=run)


def load_serve_config(args: argparse.Namespace):
    """The validated ServeConfig from --config, --set, --model, --task, --data-root, --home, with absolute paths."""
    from deepretrieval.common.config import load_config
    from deepretrieval.common.model_fetch import resolve_model
    from deepretrieval.common.serve_config import ServeConfig
    from deepretrieval.deploy.cli_args import paths_from_args

    overrides = list(args.overrides) + [f"{key}={value}" for key, value in (("model", args.model), ("task", args.task)) if value]
    cfg = apply_trace_file(load_config(ServeConfig, args.config, overrides), args)
    paths = cfg.paths
    if getattr(args, "data_root", None) or getattr(args, "home", None):
        paths = paths_from_args(args)
    # Replicas are other processes, possibly started elsewhere: hand them absolute paths.
    paths = paths.model_copy(update={k: Path(v).absolute() for k, v in paths.model_dump().items()})
    model = resolve_model(cfg.model, paths.models_dir)
    return cfg.model_copy(update={"paths": paths, "model": str(Path(model).absolute()) if Path(model).exists() else model})


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from deepretrieval.deploy.serve_local import local_serve

    cfg = load_serve_config(args)  # a bad value fails here, before Ray starts
    stop = threading.Event()
    with local_serve({"/": cfg}, host=args.host, port=args.port) as url:
        # Ctrl-C, and SIGTERM from a process manager, shut Serve and Ray down instead of orphaning
        # Ray's agents; set after ray.init, which installs a SIGTERM handler of its own.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(f"serving {cfg.model} at {url}/v1/rewrite (health: {url}/healthz); Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping", flush=True)
    return 0
