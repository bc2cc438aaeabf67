"""`deepretrieval eval`: original vs rewritten queries on a BEIR split, trec_eval metrics side by side."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.common.config import validate_config
from deepretrieval.common.errors import ConfigError, DatasetError
from deepretrieval.common.query_composition import QueryComposition
from deepretrieval.deploy.cli_args import add_common_args, paths_from_args

if TYPE_CHECKING:
    from deepretrieval.common.tasks import TaskSpec

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate original (and rewritten) queries: nDCG@10, Recall@10/100/1000, MRR@10")
    p.add_argument("--dataset", required=True, help="data set name under the data root, or a path to a BEIR-layout folder")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--retriever", choices=["bm25", "dense"], default="bm25", help="retriever (default: bm25)")
    p.add_argument("--queries", type=Path, default=None, help='JSONL of rewritten queries {"_id", "query"}')
    p.add_argument("--depth", type=int, default=1000, help="hits retrieved per query (default 1000)")
    p.add_argument("--k1", type=float, default=None, help="bm25 k1 (default 0.9)")
    p.add_argument("--b", type=float, default=None, help="bm25 b (default 0.4)")
    p.add_argument("--rewriter", action="append", default=[], metavar="[LABEL=]DIR",
                   help="a policy checkpoint folder: rewrite every query with it (greedy) and compare; repeat for several "
                        "policies in one table (rows LABEL and LABEL+fallback; one unlabelled rewriter gives 'rewritten')")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate the first N query ids of the split (sorted)")
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="generation engine for --rewriter (default vllm)")
    p.add_argument("--task", default=None, help="task whose prompt/answer format the rewriter uses (default: sparse for bm25, dense for dense)")
    p.add_argument("--temperature", type=float, default=None, help="rewriter temperature (default: the task's eval temperature, 0 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="rewriter generation cap (default: the task's)")
    p.add_argument("--constrained", action="store_true",
                   help="decode each rewrite under the task's answer grammar, as the serving endpoint does (no answer breaks "
                        "the format; the table then measures the queries as served)")
    p.add_argument("--max-reasoning-chars", type=int, default=None,
                   help="--constrained: most reasoning characters before </think> (default: the token cap, as serving)")
    p.add_argument("--max-rewrite-chars", type=int, default=None,
                   help="--constrained: most characters of the query, so a looping policy still closes its answer (default: unbounded)")
    p.add_argument("--query-mode", choices=["rewrite", "expand"], default=None,
                   help="how a rewrite becomes the search query: alone (rewrite) or appended to the request (expand); "
                        "use the mode the policy was trained with (default: the task's, rewrite)")
    p.add_argument("--original-repeats", type=int, default=None,
                   help="expand: times the request is repeated before the rewrite (default 2)")
    p.add_argument("--new-terms-only", action="store_true",
                   help="expand: append only the rewrite's words the request lacks, each once (use as the policy was trained)")
    p.add_argument("--feedback-docs", type=int, default=None,
                   help="show each request's top N search results (titles) in the prompt, as a policy trained with the "
                        "task's `feedback` expects (default: none)")
    p.add_argument("--feedback-chars", type=int, default=None, help="--feedback-docs: characters shown per result (default 100)")
    p.add_argument("--rm3", action="store_true",
                   help="bm25: add the row 'original+rm3', the original queries expanded by RM3 pseudo-relevance feedback "
                        "(Anserini's defaults: 10 terms from the top 10 documents, original weight 0.5): a reference that learns nothing")
    p.add_argument("--rewrites-out", type=Path, default=None, help="write every rewrite (query, reasoning, format error) as JSONL here")
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the report as JSON here")
    add_common_args(p)
    p.set_defaults(func=run)


def read_rewritten(path: Path) -> dict[str, str]:
    """Read `{"_id", "query"}` lines; a malformed line is a DatasetError naming it."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"--queries file {path} cannot be read: {e}") from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            qid, query = str(obj["_id"]), obj["query"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DatasetError(f'{path}:{lineno}: expected {{"_id": ..., "query": ...}}, got {line[:80]!r}') from e
        if not isinstance(query, str):
            raise DatasetError(f"{path}:{lineno}: query must be a string, got {type(query).__name__}")
        out[qid] = query
    return out


def parse_rewriters(values: list[str]) -> list[tuple[str, Path]]:
    """`--rewriter` values as (label, folder): `LABEL=DIR`, or `DIR` ('rewritten' when alone, else the folder name)."""
    out: list[tuple[str, Path]] = []
    for v in values:
        label, sep, path = v.partition("=")
        if sep and label and "/" not in label:
            out.append((label, Path(path)))
        else:
            out.append(("rewritten" if len(values) == 1 else Path(v).name, Path(v)))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels) or "original" in labels:
        raise DatasetError(f"--rewriter labels must be unique and not 'original', got {labels}; use LABEL=DIR")
    return out


def composition_from_args(args: argparse.Namespace) -> QueryComposition | None:
    """The query composition `--query-mode` / `--original-repeats` / `--new-terms-only` ask for; None = the task's own."""
    for flag, given in (("--original-repeats", args.original_repeats is not None), ("--new-terms-only", args.new_terms_only)):
        if given and args.query_mode != "expand":
            raise ConfigError(f"{flag} needs --query-mode expand")
    if args.query_mode is None:
        return None
    fields = {"mode": args.query_mode}
    if args.original_repeats is not None:
        fields["original_repeats"] = args.original_repeats
    if args.new_terms_only:
        fields["new_terms_only"] = True
    return validate_config(QueryComposition, fields, source="--query-mode/--original-repeats/--new-terms-only")


def task_from_args(args: argparse.Namespace) -> TaskSpec:
    """The rewriter's task spec: `--task` (default: by retriever) with the `--feedback-*` it asks for."""
    from deepretrieval.common.tasks import get_task

    name = args.task or ("dense" if args.retriever == "dense" else "sparse")
    if args.feedback_chars is not None and args.feedback_docs is None:
        raise ConfigError("--feedback-chars needs --feedback-docs")
    if args.feedback_docs is None:
        return get_task(name)
    feedback = {"docs": args.feedback_docs, **({"max_chars": args.feedback_chars} if args.feedback_chars is not None else {})}
    return get_task(name, {"feedback": feedback})


def constraint_from_args(args: argparse.Namespace, task: TaskSpec) -> str | None:
    """The grammar `--constrained` / `--max-reasoning-chars` / `--max-rewrite-chars` ask for; None = free decoding."""
    for flag, value, least in (("--max-reasoning-chars", args.max_reasoning_chars, 0), ("--max-rewrite-chars", args.max_rewrite_chars, 1)):
        if value is not None and not args.constrained:
            raise ConfigError(f"{flag} needs --constrained")
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if not args.constrained:
        return None
    from deepretrieval.actors.rewrite import serving_constraint

    return serving_constraint(task, max_reasoning_chars=args.max_reasoning_chars, max_new_tokens=args.max_new_tokens,
                              max_rewrite_chars=args.max_rewrite_chars)


def run(args: argparse.Namespace) -> int:
    from deepretrieval.common.config import BM25Config, RM3Config
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.common.metrics import METRICS
    from deepretrieval.common.significance import compare_sets
    from deepretrieval.rewarders.retrieval import EvalReport, evaluate_query_sets, open_retriever

    if args.rm3 and args.retriever != "bm25":
        raise ConfigError("--rm3 is BM25 pseudo-relevance feedback; it needs --retriever bm25")
    paths = paths_from_args(args)
    ds = BeirDataset.open(args.dataset, paths.data_root)
    queries, qrels = ds.split_queries(args.split)
    if args.max_queries is not None:
        keep = sorted(queries)[: args.max_queries]
        queries, qrels = {q: queries[q] for q in keep}, {q: qrels[q] for q in keep if q in qrels}
    query_sets = {"original": queries}
    extra: dict[str, object] = {}
    if args.queries is not None:
        rewritten = read_rewritten(args.queries)
        missing = [q for q in queries if q not in rewritten]
        if len(missing) == len(queries):
            raise DatasetError(f"{args.queries} has none of the {len(queries)} query ids of {ds.name}/{args.split}")
        if missing:
            log.warning("%d of %d queries have no rewrite in %s; they score 0", len(missing), len(queries), args.queries)
        query_sets["rewritten"] = rewritten
        extra["rewritten_missing"] = len(missing)
    bm25 = BM25Config(**{k: v for k, v in (("k1", args.k1), ("b", args.b)) if v is not None})
    retriever = open_retriever(ds, paths.index_dir, args.retriever, bm25=bm25)
    rewriters = parse_rewriters(args.rewriter)
    if args.feedback_docs is not None and not rewriters:
        raise ConfigError("--feedback-docs shapes the rewriter's prompt; it needs --rewriter")
    if rewriters:
        from deepretrieval.common.model_fetch import resolve_model
        from deepretrieval.deploy.evaluation import rewrite_with_policy
        from deepretrieval.rewarders.result_feedback import ResultFeedbackSource

        task = task_from_args(args)
        composition = composition_from_args(args)
        constraint = constraint_from_args(args, task)
        shown = ResultFeedbackSource(retriever, ds, task.feedback).for_requests(queries) if task.feedback else None
        for label, path in rewriters:
            model_dir = Path(resolve_model(str(path), paths.models_dir))
            out = args.rewrites_out.with_name(f"{args.rewrites_out.stem}-{label}{args.rewrites_out.suffix}") if args.rewrites_out and len(rewriters) > 1 else args.rewrites_out
            rewritten, fallback, stats = rewrite_with_policy(model_dir, task, queries, engine=args.engine, temperature=args.temperature,
                                                             max_new_tokens=args.max_new_tokens, rewrites_out=out,
                                                             composition=composition, constraint=constraint, results=shown)
            query_sets[label] = rewritten
            query_sets[f"{label}+fallback"] = fallback
            if len(rewriters) == 1:
                extra.update(stats)
            else:
                extra.setdefault("rewriters", {})[label] = stats  # type: ignore[union-attr]
    means, per_q, seconds = evaluate_query_sets(retriever, qrels, query_sets, depth=args.depth)
    if args.rm3:
        rm3 = open_retriever(ds, paths.index_dir, "bm25", bm25=bm25.model_copy(update={"rm3": RM3Config()}))
        rm3_means, rm3_per_q, rm3_seconds = evaluate_query_sets(rm3, qrels, {"original+rm3": queries}, depth=args.depth)
        means.update(rm3_means)
        for qid, rows in rm3_per_q.items():
            per_q[qid].update(rows)
        seconds.update(rm3_seconds)
    extra["search_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    report = EvalReport(ds.name, args.split, args.retriever, len(queries), means, per_q, extra,
                        paired=compare_sets(per_q, "original", METRICS))
    print(report.table())
    broken = {"rewritten": extra["format_broken_share"]} if "format_broken_share" in extra else {
        label: st["format_broken_share"] for label, st in extra.get("rewriters", {}).items()}  # type: ignore[union-attr]
    for label, share in broken.items():
        print(f"{label}: {share:.1%} of outputs broke the answer format "
              f"(scored as empty queries in '{label}'; the original query stands in for them in '{label}+fallback')")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report.to_json(), indent=1))
        print(f"wrote {args.json_out}")
    return 0
