"""`deepretrieval emulate pubmed|ctgov`: local HTTP servers that behave like the public search APIs.

    deepretrieval emulate pubmed --dataset scifact --port 8089
    # -> prints http://127.0.0.1:8089/entrez/eutils ; use it as the PubMed client's base_url
    deepretrieval emulate ctgov --dataset nfcorpus --port 8090 --error-5xx-rate 0.05

They answer from a Lucene index over a BEIR corpus whose document ids stand for PMIDs / NCT ids
(built on first use under <home>/indexes). Ctrl-C (or SIGTERM) stops them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepretrieval.common.config import EmulatorConfig, validate_config
from deepretrieval.deploy.cli_args import add_common_args, add_trace_args, command_tracing, paths_from_args

READY_PREFIX = "serving at "
"""Start of the line printed once listening; `emulators/process.py` reads the URL after it."""

_DESCRIPTIONS = {
    "pubmed": (
        "Emulate NCBI E-utilities esearch (GET/POST /entrez/eutils/esearch.fcgi, also /esearch.fcgi) "
        "over a BEIR corpus. PubMed term syntax: AND/OR/NOT processed left to right, parentheses, "
        "implicit AND between adjacent words, \"phrases\", truncation*, field tags [tiab] [ti] [ab] "
        "[tw] [all] [mh] (no MeSH here: searched in title+abstract). Unknown tags, terms absent from "
        "the corpus and repaired syntax are reported in errorlist/warninglist as PubMed does; an "
        "empty term is an ERROR. retmax <= 10000, retmode json|xml, ranked by BM25. Date "
        "parameters are accepted and ignored (BEIR documents have no dates). Rate limit per "
        "client address (3/s) or api_key (10/s): HTTP 429 with NCBI's JSON body."
    ),
    "ctgov": (
        "Emulate ClinicalTrials.gov API v2 (GET /api/v2/studies, /api/v2/version) over a BEIR "
        "corpus. query.term in Essie syntax (AND/OR/NOT, parentheses, \"phrases\", AREA[...]), "
        "pageSize <= 1000, pageToken/nextPageToken paging, countTotal, fields (NCTId, BriefTitle, "
        "OfficialTitle, BriefSummary, ...), ranked by BM25. Bad parameters and unparseable "
        "queries answer HTTP 400 with a plain-text reason. Rate limit per client address "
        "(50/min): HTTP 429."
    ),
}


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_emulator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="data set name under the data root, or a path to a BEIR-layout folder")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8089, help="listen port; 0 picks a free one (default 8089)")
    q = p.add_argument_group("rate limit (per API key, else per client address)")
    q.add_argument("--rate-limit-rps", type=_positive_float, default=None, help="requests/s allowed (without a key); default: documented (PubMed 3/s, ClinicalTrials.gov 50/min)")
    q.add_argument("--rate-limit-rps-with-key", type=_positive_float, default=None, help="PubMed: requests/s allowed with an api_key (default 10)")
    q.add_argument("--rate-limit-window-s", type=_positive_float, default=None, help="sliding-window length in s (default: PubMed 1, ClinicalTrials.gov 60)")
    q.add_argument("--no-rate-limit", action="store_true", help="disable the rate limit (throughput benchmarks)")
    f = p.add_argument_group("fault injection (seeded, deterministic for a given request order)")
    f.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency per request, ms")
    f.add_argument("--latency-jitter-ms", type=float, default=0.0, help="std-dev of a normal jitter on the latency, ms")
    f.add_argument("--error-5xx-rate", type=float, default=0.0, help="probability of an HTTP 500/502/503 answer")
    f.add_argument("--burst-429-rate", type=float, default=0.0, help="probability a request starts a burst of 429 answers")
    f.add_argument("--burst-429-len", type=int, default=5, help="requests per 429 burst (default 5)")
    f.add_argument("--retry-after-s", type=int, default=1, help="Retry-After header of injected 429s, whole seconds (default 1)")
    f.add_argument("--garbage-rate", type=float, default=0.0, help="probability a 200 answer has a truncated or non-JSON body")
    f.add_argument("--hang-rate", type=float, default=0.0, help="probability a request hangs --hang-s before answering")
    f.add_argument("--hang-s", type=float, default=30.0, help="how long a hanging request waits (default 30)")
    f.add_argument("--fault-seed", type=int, default=0, help="seed of the fault generator (default 0)")
    p.add_argument("--search-threads", type=int, default=4, help="threads running Lucene searches (default 4)")
    p.add_argument("--index-dir", type=Path, default=None, help="folder of the Lucene indexes (default: <home>/indexes)")
    add_trace_args(p, default_help="no file; one SERVER span per request, continuing the client's traceparent")
    add_common_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="serve a local emulator of the PubMed or ClinicalTrials.gov search API",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="api", metavar="API", required=True)
    for api, text in _DESCRIPTIONS.items():
        a = esub.add_parser(api, help=text.split(". ")[0], description=text)
        _add_emulator_args(a)
        a.set_defaults(func=run_emulate)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The validated EmulatorConfig of the parsed flags.

    Raises:
        ConfigError: a flag value is out of range (all problems at once).
    """
    data = {
        "api": args.api, "dataset": args.dataset, "host": args.host, "port": args.port,
        "rate_limit": not args.no_rate_limit, "rate_limit_rps": args.rate_limit_rps,
        "rate_limit_rps_with_key": args.rate_limit_rps_with_key, "rate_limit_window_s": args.rate_limit_window_s,
        "search_threads": args.search_threads,
        "faults": {
            "latency_ms": args.latency_ms, "latency_jitter_ms": args.latency_jitter_ms, "error_5xx_rate": args.error_5xx_rate,
            "burst_429_rate": args.burst_429_rate, "burst_429_len": args.burst_429_len, "retry_after_s": args.retry_after_s,
            "garbage_rate": args.garbage_rate, "hang_rate": args.hang_rate, "hang_s": args.hang_s, "seed": args.fault_seed,
        },
    }
    return validate_config(EmulatorConfig, data, source="command line")


def run_emulate(args: argparse.Namespace) -> int:
    """Serve until interrupted; prints the base URL once listening."""
    cfg = config_from_args(args)
    from deepretrieval.rewarders.emulators.runner import EmulatorServer, serve

    def on_ready(server: EmulatorServer) -> None:
        index = server.opened.engine
        print(f"{cfg.api} emulator: {server.opened.dataset.name}, {index.num_docs} documents, index {index.index.version}", flush=True)
        print(f"{READY_PREFIX}{server.base_url}  (Ctrl-C to stop)", flush=True)

    paths = paths_from_args(args)
    if args.index_dir is not None:
        paths.index_dir = args.index_dir
    with command_tracing(args, f"deepretrieval-emulator-{cfg.api}") as tracer:
        serve(cfg, paths, on_ready, tracer=tracer)
    print(f"{cfg.api} emulator stopped", file=sys.stderr)
    return 0
