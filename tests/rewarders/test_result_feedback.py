"""The request's own top results in its prompt (`TaskSpec.feedback`): real BM25 over a SciFact subset."""

from __future__ import annotations

import json

import pytest

from deepretrieval.common.config import BM25Config
from deepretrieval.common.datasets import BeirDataset, Document
from deepretrieval.common.errors import DatasetError
from deepretrieval.common.prepare import prepare
from deepretrieval.common.tasks import get_task
from deepretrieval.rewarders.bm25 import BM25Backend
from deepretrieval.rewarders.lucene_index import ensure_lucene_index
from deepretrieval.rewarders.result_feedback import ELLIPSIS, ResultFeedbackSource, open_feedback, shown_text


def test_a_result_shows_its_title_cut_at_a_word():
    assert shown_text(Document("d", "Statin  use\nand cancer.", "body"), 100) == "Statin use and cancer."
    assert shown_text(Document("d", "Statin use and risk of breast cancer", "body"), 20) == "Statin use and risk" + ELLIPSIS
    assert shown_text(Document("d", "", "A document without a title, only text."), 12) == "A document" + ELLIPSIS
    assert shown_text(Document("d", "Supercalifragilistic", ""), 10) == "Supercalif" + ELLIPSIS


@pytest.fixture(scope="module")
def source_and_backend(tiny_beir, data_root, index_root):
    ds = BeirDataset.open(tiny_beir, data_root)
    backend = BM25Backend(ensure_lucene_index(ds, index_root, progress=False), BM25Config())
    spec = get_task("sparse", {"feedback": {"docs": 3, "max_chars": 40}})
    return ResultFeedbackSource(backend, ds, spec.feedback), backend, ds


def test_results_are_the_requests_top_hits_in_rank_order(source_and_backend):
    source, backend, ds = source_and_backend
    queries, _ = ds.split_queries("test")
    some = dict(sorted(queries.items())[:5])
    shown = source.for_requests(some)
    titles = {d.doc_id: d.title for d in ds.iter_corpus()}
    for qid, request in some.items():
        hits = backend.search_sync(request, 3).ids
        assert len(shown[qid]) == len(hits) == 3
        for line, doc_id in zip(shown[qid], hits):
            assert line == shown_text(Document(doc_id, titles[doc_id], ""), 40) and len(line) <= 41
    assert source.for_requests({"none": "zzzqqqxxyy"}) == {"none": []}


async def test_one_request_as_the_endpoint_asks(source_and_backend):
    source, backend, ds = source_and_backend
    queries, _ = ds.split_queries("test")
    request = sorted(queries.items())[0][1]
    assert await source.for_request(request) == source.for_requests({"q": request})["q"]


def test_prompt_files_list_each_requests_results(tmp_path, tiny_beir, data_root, index_root):
    spec = get_task("sparse", {"feedback": {"docs": 2}})
    ds = BeirDataset.open(tiny_beir, data_root)
    source = open_feedback(spec, ds, index_root, "bm25")
    assert source is not None and open_feedback(get_task("sparse"), ds, index_root, "bm25") is None
    [written] = prepare(spec, tiny_beir, data_root, tmp_path, ["test"], source.for_requests)
    records = [json.loads(line) for line in written.path.read_text().splitlines()]
    shown = source.for_requests({r["qid"]: r["request"] for r in records})
    for r in records:
        user = r["messages"][1]["content"]
        assert "Top search results for it:\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(shown[r["qid"]], 1)) in user
    with pytest.raises(DatasetError, match="needs its backend's index"):
        prepare(spec, tiny_beir, data_root, tmp_path / "again", ["test"])
