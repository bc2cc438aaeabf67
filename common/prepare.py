"""Training and evaluation prompt files: one JSONL record per request (`deepretrieval data prepare`).

Record: {uid, task, dataset, split, qid, request, messages, prefill, target}. `target` is one of
`common.targets` (graded ids for pubmed/ctgov/sparse/dense and qa answer passages from BEIR qrels;
gold SQL for sql). The fields besides `qid` are those of the `prompt/1` wire schema.
uids are a stable hash of task, data set and query id, so reruns give the same ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepretrieval.common.datasets import BeirDataset, resolve_dataset
from deepretrieval.common.errors import DatasetError
from deepretrieval.common.targets import AnswersTarget, IdsTarget, SqlTarget
from deepretrieval.common.tasks import TaskSpec, build_messages
from deepretrieval.common.text2sql import Text2SqlDataset


def request_uid(task: str, dataset: str, qid: str) -> str:
    """A stable 16-hex-digit id of one request (sha256 of task, data set and query id)."""
    return hashlib.sha256(f"{task}\x1f{dataset}\x1f{qid}".encode()).hexdigest()[:16]


def default_out_dir(home: Path, task: str, dataset: str) -> Path:
    """`<home>/data/<task>-<dataset>`."""
    return Path(home) / "data" / f"{task}-{dataset}"


@dataclass(frozen=True)
class SplitFile:
    """One written prompt file."""

    split: str
    path: Path
    records: int


ResultsFor = Callable[[Mapping[str, str]], dict[str, list[str]]]
"""id -> request in, id -> the request's top search results as shown out (`ResultFeedbackSource.for_requests`)."""


def _record(task: TaskSpec, dataset: str, split: str, qid: str, request: str, target: dict[str, Any], schema: str | None,
            results: list[str] | None = None) -> dict[str, Any]:
    return {
        "uid": request_uid(task.name, dataset, qid),
        "task": task.name,
        "dataset": dataset,
        "split": split,
        "qid": qid,
        "request": request,
        "messages": build_messages(task, request, schema=schema, results=results),
        "prefill": task.answer.prefill,
        "target": target,
    }


def _beir_records(task: TaskSpec, ds: BeirDataset, split: str, results_for: ResultsFor | None) -> Iterator[dict[str, Any]]:
    queries, qrels = ds.split_queries(split)
    shown: dict[str, list[str]] | None = None
    if task.feedback is not None:
        if results_for is None:
            raise DatasetError(f"task {task.name!r} shows each request's search results in its prompt (`feedback`); "
                               "preparing its prompts needs its backend's index")
        shown = results_for(queries)
    for qid, text in queries.items():
        if task.target_kind == "ids":
            target = IdsTarget(ids=qrels[qid]).model_dump()
        else:
            # BEIR sets give answers as passages: the relevant documents are the answer passages.
            target = AnswersTarget(passage_ids=sorted(d for d, g in qrels[qid].items() if g > 0)).model_dump()
        yield _record(task, ds.name, split, qid, text, target, schema=None, results=None if shown is None else shown[qid])


def _sql_records(task: TaskSpec, ds: Text2SqlDataset, split: str, schema: str) -> Iterator[dict[str, Any]]:
    for q in ds.split_questions(split):
        yield _record(task, ds.name, split, q.qid, q.question, SqlTarget(sql=q.sql).model_dump(), schema=schema)


def open_dataset(task: TaskSpec, dataset: str | Path, data_root: Path) -> BeirDataset | Text2SqlDataset:
    """Open a data set in the layout the task needs.

    Raises:
        DatasetError: not found, or the wrong layout for the task (BEIR for search tasks,
            questions.jsonl + *.sqlite for sql).
    """
    if task.target_kind == "sql":
        return Text2SqlDataset.open(dataset, data_root)
    root = resolve_dataset(dataset, data_root)
    if Text2SqlDataset.is_text2sql(root):
        raise DatasetError(f"{root.name} is a text-to-SQL data set; task {task.name!r} needs a BEIR-layout set (use --task sql)")
    return BeirDataset.open(root, data_root)


def iter_split_records(task: TaskSpec, ds: BeirDataset | Text2SqlDataset, split: str,
                       results_for: ResultsFor | None = None) -> Iterator[dict[str, Any]]:
    """The records of one split, in the data set's query order.

    Args:
        task: the task spec (prompt, answer format, target kind).
        ds: the data set, from `open_dataset`.
        split: a qrels split (BEIR) or question split (text-to-SQL).
        results_for: the requests' top search results, for a task with `feedback`
            (`rewarders.result_feedback.ResultFeedbackSource.for_requests`).

    Raises:
        DatasetError: no such split.
    """
    if isinstance(ds, Text2SqlDataset):
        return _sql_records(task, ds, split, ds.schema())
    return _beir_records(task, ds, split, results_for)


def write_jsonl(records: Iterator[dict[str, Any]], path: Path) -> int:
    """Write records as UTF-8 JSONL atomically (temp file + rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def prepare(task: TaskSpec, dataset: str | Path, data_root: Path, out_dir: Path, splits: list[str] | None = None,
            results_for: ResultsFor | None = None) -> list[SplitFile]:
    """Write `<out_dir>/<split>.jsonl` for each split.

    Args:
        task: the task spec.
        dataset: data set name or folder.
        data_root: the data root.
        out_dir: output folder (see `default_out_dir`).
        splits: splits to write; None = every split the data set has.
        results_for: see `iter_split_records` (required for a task with `feedback`).

    Returns:
        One SplitFile per split, in the order given.

    Raises:
        DatasetError: wrong layout for the task, unknown split, a split with no requests, or a task
            with `feedback` and no `results_for`.
    """
    ds = open_dataset(task, dataset, data_root)
    have = ds.splits()
    chosen = splits or have
    if not chosen:
        raise DatasetError(f"data set {ds.name} has no splits (no qrels files / question splits)")
    unknown = [s for s in chosen if s not in have]
    if unknown:
        raise DatasetError(f"data set {ds.name} has no split {unknown[0]!r} (have: {', '.join(have)})")
    written = []
    for split in chosen:
        path = Path(out_dir) / f"{split}.jsonl"
        n = write_jsonl(iter_split_records(task, ds, split, results_for), path)
        if n == 0:
            path.unlink()
            raise DatasetError(f"split {split!r} of {ds.name} has no request with a relevant document")
        written.append(SplitFile(split, path, n))
    return written
