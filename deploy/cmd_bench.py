"""`deepretrieval bench ...`: benchmarks that write JSON results (ratios measured in one run)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from deepretrieval.deploy.cli_args import add_common_args, paths_from_args


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> int:
    from deepretrieval.common.hardware import describe_cpu

    result = {"bench": args.bench_command, "date": time.strftime("%Y-%m-%d"), "cpu": describe_cpu(), **result}
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return 0


def _leaf(sub: argparse._SubParsersAction, name: str, help_: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the result JSON here")
    add_common_args(p)
    p.set_defaults(func=func)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (JSON results)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)

    r = _leaf(bsub, "rewarder", "queries/s through the rewarder (cache off) vs raw pyserini batch_search", run_rewarder)
    r.add_argument("--backend", choices=["bm25"], default="bm25", help="backend (bm25)")
    r.add_argument("--dataset", default="scifact", help="data set (default scifact)")
    r.add_argument("--samples", type=int, default=3000, help="rollouts scored (default 3000)")
    r.add_argument("--k", type=int, default=50, help="hits per query (default 50)")
    r.add_argument("--concurrency", type=int, default=256, help="rewarder concurrency (default 256)")

    rl = _leaf(bsub, "ratelimit", "N rewarder processes sharing one API quota (PubMed emulator)", run_ratelimit)
    rl.add_argument("--rewarders", type=int, default=4, help="rewarder processes (default 4)")
    rl.add_argument("--quota", type=float, default=10.0, help="requests/s the emulator allows the key (default 10)")
    rl.add_argument("--duration", type=float, default=30.0, help="measured seconds after warm-up (default 30)")
    rl.add_argument("--headroom", type=float, default=0.97, help="fraction of the quota the limiter paces at (default 0.97)")
    rl.add_argument("--dataset", default="scifact")

    c = _leaf(bsub, "cache", "API calls with a reward cache vs distinct queries", run_cache)
    c.add_argument("--duplicate-fraction", type=float, default=0.5, help="share of requests repeating an earlier query")
    c.add_argument("--requests", type=int, default=1000)
    c.add_argument("--dataset", default="scifact")

    lg = _leaf(bsub, "logprob-gap", "engine log-probs vs the learner's recomputation (mean/max |Δ|), and engine tok/s", run_logprob_gap)
    lg.add_argument("--model", default="smollm2-135m-instruct", help="policy checkpoint (default: the converted SmolLM2)")
    lg.add_argument("--prompts", type=int, default=4)
    lg.add_argument("--samples", type=int, default=4)
    lg.add_argument("--max-new-tokens", type=int, default=48)
    lg.add_argument("--temperature", type=float, default=1.0)

    ll = _leaf(bsub, "linear-layout", "vLLM CPU weights prepacked (oneDNN) vs plain: reload and repack vs memcpy, tokens/s", run_linear_layout)
    ll.add_argument("--model", default="smollm2-135m-instruct", help="policy checkpoint (default: the converted SmolLM2)")
    ll.add_argument("--dtype", default="bfloat16", help="engine dtype (bfloat16 needs bf16 hardware to be fast)")
    ll.add_argument("--cores", default="0-1", help="cores the engine binds to (VLLM_CPU_OMP_THREADS_BIND)")

    a = _leaf(bsub, "async", "the same steps through --mode sync and --mode async, with API latency", run_async)
    a.add_argument("--reward-latency-ms", type=float, default=200.0, help="latency the PubMed emulator adds per call")
    a.add_argument("--steps", type=int, default=8, help="learner steps per mode")
    a.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    a.add_argument("--pin", action="store_true", help="bind the engine to core 0 and the learner to core 1 (both modes)")

    ch = _leaf(bsub, "chaos", "kill -9 random workers during short runs; compare produced and trained uids", run_chaos)
    ch.add_argument("--trials", type=int, default=5)
    ch.add_argument("--steps", type=int, default=10, help="learner steps per trial")
    ch.add_argument("--kills", type=int, default=1, help="processes killed per trial")
    ch.add_argument("--engine", choices=["vllm", "hf"], default="hf", help="actor engine (hf restarts in seconds)")

    e = _leaf(bsub, "emulator", "requests/s an API emulator serves over loopback", run_emulator)
    e.add_argument("--api", choices=["pubmed", "ctgov"], default="pubmed")
    e.add_argument("--dataset", default="scifact")
    e.add_argument("--concurrency", type=int, default=16)
    e.add_argument("--duration", type=float, default=10.0, help="seconds")

    sv = _leaf(bsub, "serve", "requests/s and latency of the rewriting endpoint (Ray Serve) over loopback HTTP", run_serve)
    sv.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    sv.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    sv.add_argument("--url", default=None, help="base URL of a running endpoint (default: start one locally)")
    sv.add_argument("--model", default=None, help="policy to serve (default: the config's, smollm2-135m-instruct)")
    sv.add_argument("--config", type=Path, default=None, help="serve config YAML (see configs/serve/)")
    sv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a serve config value")
    sv.add_argument("--task", default=None, help="task of the requests (default: the endpoint's default task)")
    sv.add_argument("--dataset", default="scifact", help="data set whose queries are sent (default scifact)")

    w = _leaf(bsub, "weightsync", "publish a policy version + actor reload vs a memcpy of its bytes", run_weightsync)
    w.add_argument("--model", default="smollm2-135m-instruct", help="policy: the default model's name or a HF folder (default smollm2-135m-instruct)")
    w.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="actor engine that reloads (default vllm)")
    w.add_argument("--repeats", type=int, default=3, help="versions published and loaded; the fastest is reported (default 3)")
    w.add_argument("--root", type=Path, default=None, help="folder the weight store is made in (default /dev/shm, tmpfs)")


def run_rewarder(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_rewarder import run

    return _emit(args, run(args.dataset, paths_from_args(args), samples=args.samples, k=args.k, concurrency=args.concurrency))


def run_emulator(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_emulator import run

    paths = paths_from_args(args)
    return _emit(args, run(args.dataset, paths.data_root, paths.index_dir, args.api, args.concurrency, args.duration))


def run_ratelimit(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_ratelimit import run

    return _emit(args, run(paths_from_args(args), dataset=args.dataset, rewarders=args.rewarders, quota=args.quota,
                           duration=args.duration, headroom=args.headroom))


def run_cache(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_cache import run

    return _emit(args, run(paths_from_args(args), dataset=args.dataset, requests=args.requests, duplicate_fraction=args.duplicate_fraction))


def run_linear_layout(args: argparse.Namespace) -> int:
    from deepretrieval.common.model_fetch import resolve_model
    from deepretrieval.deploy.bench_linear_layout import run

    model_dir = Path(resolve_model(args.model, paths_from_args(args).models_dir))
    return _emit(args, run(model_dir, dtype=args.dtype, cores=args.cores))


def run_logprob_gap(args: argparse.Namespace) -> int:
    from deepretrieval.common.model_fetch import resolve_model
    from deepretrieval.deploy.bench_logprob_gap import run

    paths = paths_from_args(args)
    model_dir = Path(resolve_model(args.model, paths.models_dir))
    return _emit(args, run(model_dir, n_prompts=args.prompts, n_samples=args.samples, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, data_root=paths.data_root))


def run_async(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_async import run

    return _emit(args, run(paths_from_args(args), reward_latency_ms=args.reward_latency_ms, steps=args.steps, engine=args.engine, pin=args.pin))


def run_weightsync(args: argparse.Namespace) -> int:
    from deepretrieval.common.model_fetch import resolve_model
    from deepretrieval.deploy.bench_weightsync import run

    model_dir = Path(resolve_model(args.model, paths_from_args(args).models_dir))
    return _emit(args, run(model_dir, engine=args.engine, repeats=args.repeats, root=args.root))


def run_chaos(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_chaos import run

    return _emit(args, run(paths_from_args(args), trials=args.trials, steps=args.steps, kills=args.kills, engine=args.engine))


def run_serve(args: argparse.Namespace) -> int:
    from deepretrieval.deploy.bench_serve import run
    from deepretrieval.deploy.cmd_serve import load_serve_config

    cfg = load_serve_config(args)  # --task is the endpoint's default task and is named in every request
    return _emit(args, run(cfg, args.dataset, concurrency=args.concurrency, duration_s=args.duration, url=args.url, task=args.task))
