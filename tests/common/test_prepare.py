"""`deepretrieval data prepare` on the real SciFact and GeoQuery sets, written into a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepretrieval.common.answer_format import parse_answer
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.prepare import request_uid
from deepretrieval.common.targets import IdsTarget, SqlTarget
from deepretrieval.common.tasks import get_task
from deepretrieval.deploy.cli import main

WIRE_FIELDS = {"uid", "task", "dataset", "split", "request", "messages", "prefill", "target"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sparse_scifact_writes_every_split_under_home(data_root: Path, tmp_path: Path):
    rc = main(["data", "prepare", "--task", "sparse", "--dataset", "scifact", "--home", str(tmp_path), "--data-root", str(data_root)])
    assert rc == 0
    out = tmp_path / "data" / "sparse-scifact"
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl"]
    test = read_jsonl(out / "test.jsonl")
    queries, qrels = BeirDataset.open("scifact", data_root).split_queries("test")
    assert len(test) == len(queries) == 300
    first = test[0]
    assert WIRE_FIELDS <= set(first) and set(first) - WIRE_FIELDS == {"qid"}
    assert (first["task"], first["dataset"], first["split"], first["prefill"]) == ("sparse", "scifact", "test", "<think>")
    assert first["request"] == queries[first["qid"]]
    assert first["request"] in first["messages"][1]["content"]
    assert IdsTarget.model_validate(first["target"]).ids == qrels[first["qid"]]
    assert first["uid"] == request_uid("sparse", "scifact", first["qid"])
    assert len({r["uid"] for r in test}) == len(test)


def test_uids_are_deterministic_and_task_specific(data_root: Path, tmp_path: Path):
    args = ["data", "prepare", "--dataset", "scifact", "--split", "test", "--data-root", str(data_root)]
    assert main([*args, "--task", "sparse", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--task", "sparse", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--task", "dense", "--out", str(tmp_path / "c")]) == 0
    a, b, c = (read_jsonl(tmp_path / d / "test.jsonl") for d in "abc")
    assert a == b
    assert {r["uid"] for r in a}.isdisjoint(r["uid"] for r in c)


def test_sql_geoquery_with_schema_gold_sql_and_override(data_root: Path, tmp_path: Path):
    rc = main(["data", "prepare", "--task", "sql", "--dataset", "geoquery", "--split", "dev", "--split", "test",
               "--out", str(tmp_path), "--data-root", str(data_root), "--set", "answer.think=none"])  # fmt: skip
    assert rc == 0
    dev = read_jsonl(tmp_path / "dev.jsonl")
    assert len(dev) == 49 and len(read_jsonl(tmp_path / "test.jsonl")) == 279
    record = dev[0]
    assert record["prefill"] == ""
    user = record["messages"][1]["content"]
    assert 'CREATE TABLE "state"' in user and record["request"] in user and '{"sql": "..."}' in user
    gold = SqlTarget.model_validate(record["target"]).sql
    # The gold SQL, written in the prompt's shape, parses under the task's answer format.
    answer = "<answer>" + json.dumps({"sql": gold}) + "</answer>"
    assert parse_answer(answer, get_task("sql", {"answer": {"think": "none"}}).answer).value == gold


def test_layout_mismatches_and_unknown_splits_fail_cleanly(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["data", "prepare", "--out", str(tmp_path), "--data-root", str(data_root)]
    assert main([*base, "--task", "sql", "--dataset", "scifact"]) == 2
    assert "not a text-to-SQL data set" in capsys.readouterr().err
    assert main([*base, "--task", "qa", "--dataset", "geoquery"]) == 2
    assert "needs a BEIR-layout set" in capsys.readouterr().err
    assert main([*base, "--task", "sparse", "--dataset", "scifact", "--split", "dev"]) == 2
    assert "no split 'dev' (have: test, train)" in capsys.readouterr().err
    assert main([*base, "--task", "bm25", "--dataset", "scifact"]) == 2
    assert "valid tasks" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
