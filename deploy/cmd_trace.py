"""`deepretrieval trace summary FILE [--json OUT]`: where a sample's time goes, from a run's spans.

    deepretrieval trace summary runs/<run>/traces.jsonl --json runs/<run>/trace-summary.json

Prints p50/p95/p99 of API latency and rate-limiter wait per backend, retries, cache-hit rate and
HTTP status counts per backend, queue wait, the share of sample latency spent waiting on the
search engine, and how many sample traces are complete. Definitions: `common/trace_summary.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepretrieval.common.trace_summary import BackendSummary, Distribution, TraceSummary, summarize_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="analyse the OpenTelemetry spans a run wrote (JSON lines)")
    tsub = p.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    s = tsub.add_parser("summary", help="latency, rate-limit, retry, cache and HTTP statistics of a trace file",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("file", type=Path, metavar="FILE", help="trace file (runs/<run>/traces.jsonl or a --trace-file path)")
    s.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT", help="also write the summary as JSON to OUT")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    s.set_defaults(func=run_summary)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pcts(d: Distribution) -> str:
    return f"{_seconds(d.p50)} / {_seconds(d.p95)} / {_seconds(d.p99)}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _backend_row(name: str, b: BackendSummary) -> list[str]:
    statuses = " ".join(f"{code}:{n}" for code, n in b.http_status.items()) or "-"
    return [name, str(b.searches), f"{b.cache_hit_rate:.1%}", f"{b.retries} ({b.searches_retried})", str(b.errors), statuses,
            _pcts(b.api_latency_s), _pcts(b.ratelimit_wait_s)]


def format_summary(s: TraceSummary) -> str:
    """The summary as the text `trace summary` prints."""
    t = s.traces
    skipped = f" ({s.bad_lines} malformed line(s) skipped)" if s.bad_lines else ""
    statuses = ", ".join(f"{k} {v}" for k, v in s.reward_status.items()) or "none"
    lines = [f"trace summary of {s.source or 'spans'}: {s.spans} spans{skipped}",
             "spans: " + ", ".join(f"{name} {n}" for name, n in s.spans_by_name.items()),
             f"samples: {t.samples} traces; generated {t.generated}, scored {t.scored} (status: {statuses}), searched {t.searched}, "
             f"trained {t.trained}; complete (generate+reward+search+train): {t.complete}",
             f"queue wait s (publish -> rewarder), p50/p95/p99: {_pcts(s.queue_wait_s)}  (n={s.queue_wait_s.n})", ""]
    if s.backends:
        header = ["backend", "searches", "cache hit", "retries (searches)", "errors", "HTTP status",
                  "API latency s p50/p95/p99", "rate-limit wait s p50/p95/p99"]
        lines += _table([header] + [_backend_row(name, b) for name, b in s.backends.items()])
    else:
        lines.append("no rl.search spans: no sample reached a search engine (e.g. every completion broke the answer format)")
    share = s.api_wait_share
    if share.traces:
        lines.append(f"\nshare of sample latency waiting on search (rl.search time / generate start -> last reward end), "
                     f"{share.traces} traces: {share.ratio_of_sums:.1%} of all sample time (ratio of sums), median {share.median:.1%}")
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines)


def run_summary(args: argparse.Namespace) -> int:
    summary = summarize_file(args.file)
    print(format_summary(summary))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        print(f"\nJSON written to {args.json_out}")
    return 0
