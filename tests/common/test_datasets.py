from pathlib import Path

import pytest

from deepretrieval.common.datasets import BeirDataset, resolve_dataset
from deepretrieval.common.errors import DatasetError


def test_resolve_by_name_and_by_path(data_root: Path):
    assert resolve_dataset("scifact", data_root) == (data_root / "scifact").resolve()
    assert resolve_dataset(str(data_root / "nfcorpus"), Path("/nonexistent")) == (data_root / "nfcorpus").resolve()


def test_unknown_name_lists_known_sets(data_root: Path):
    with pytest.raises(DatasetError, match="known: cranfield, geoquery, nfcorpus, scifact"):
        resolve_dataset("msmarco", data_root)


def test_folder_without_corpus_is_not_beir(tmp_path: Path):
    (tmp_path / "queries.jsonl").write_text("")
    with pytest.raises(DatasetError, match="corpus.jsonl is missing"):
        BeirDataset.open(tmp_path, tmp_path)


def test_scifact_counts(data_root: Path):
    ds = BeirDataset.open("scifact", data_root)
    assert ds.splits() == ["test", "train"]
    queries, qrels = ds.split_queries("test")
    assert len(queries) == 300 and sum(len(d) for d in qrels.values()) == 339
    assert ds.corpus_size() == 5183


def test_nfcorpus_graded_qrels(data_root: Path):
    qrels = BeirDataset.open("nfcorpus", data_root).qrels("test")
    grades = {g for docs in qrels.values() for g in docs.values()}
    assert grades == {1, 2}


def test_malformed_lines_name_file_and_line(tmp_path: Path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\nnot json\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    ds = BeirDataset.open(tmp_path, tmp_path)
    with pytest.raises(DatasetError, match="corpus.jsonl:2"):
        list(ds.iter_corpus())
    with pytest.raises(DatasetError, match="test.tsv:2: score 'high'"):
        ds.qrels("test")
    with pytest.raises(DatasetError, match="no qrels for split 'dev'"):
        ds.qrels("dev")
