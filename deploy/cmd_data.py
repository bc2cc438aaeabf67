"""`deepretrieval data prepare`: write a task's training/eval prompt files as JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepretrieval.deploy.cli_args import add_common_args, paths_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare training and evaluation prompt files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = dsub.add_parser("prepare", help="one JSONL record per request: uid, messages, prefill, target")
    prep.add_argument("--task", required=True, help="task name: pubmed, ctgov, sparse, dense, qa, sql")
    prep.add_argument("--dataset", required=True, help="data set name under the data root, or a folder (BEIR layout; GeoQuery layout for sql)")
    prep.add_argument("--split", action="append", default=None, help="split to write (repeatable; default: every split the data set has)")
    prep.add_argument("--out", type=Path, default=None, help="output folder (default: <home>/data/<task>-<dataset>)")
    prep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="task override, e.g. answer.think=off (repeatable)")
    add_common_args(prep)
    prep.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from deepretrieval.common.config import apply_overrides, default_home
    from deepretrieval.common.datasets import resolve_dataset
    from deepretrieval.common.prepare import default_out_dir, prepare
    from deepretrieval.common.tasks import get_task

    paths = paths_from_args(args)
    task = get_task(args.task, apply_overrides({}, args.overrides))
    dataset_name = resolve_dataset(args.dataset, paths.data_root).name
    home = Path(args.home) if args.home is not None else default_home()
    out_dir = args.out if args.out is not None else default_out_dir(home, task.name, dataset_name)
    results_for = None
    if task.feedback is not None:  # the prompts list each request's own top results: search the collection itself
        from deepretrieval.common.datasets import BeirDataset
        from deepretrieval.rewarders.result_feedback import open_feedback

        source = open_feedback(task, BeirDataset.open(args.dataset, paths.data_root), paths.index_dir, task.backend)
        results_for = source.for_requests if source is not None else None
    for written in prepare(task, args.dataset, paths.data_root, out_dir, args.split, results_for):
        print(f"{task.name}/{dataset_name} {written.split}: {written.records} requests -> {written.path}")
    return 0
