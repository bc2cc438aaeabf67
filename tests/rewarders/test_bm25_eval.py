"""BM25 through pyserini: index build, the BEIR SciFact acceptance figures, any BEIR folder, `eval`."""

import json
from pathlib import Path

import pytest

from deepretrieval.common.config import BM25Config
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.deploy.cli import main
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.bm25 import BM25Backend
from deepretrieval.rewarders.lucene_index import ensure_lucene_index, lucene_index_dir


def _eval(args: list[str], tmp_path: Path, data_root: Path, index_root: Path) -> dict:
    out = tmp_path / "eval.json"
    rc = main(["eval", *args, "--json", str(out), "--data-root", str(data_root), "--home", str(index_root.parent)])
    assert rc == 0
    return json.loads(out.read_text())


def test_scifact_matches_published_pyserini_flat(tmp_path, data_root, index_root):
    report = _eval(["--dataset", "scifact", "--split", "test", "--retriever", "bm25"], tmp_path, data_root, index_root)
    m = report["metrics"]["original"]
    assert report["num_queries"] == 300
    assert m["ndcg@10"] == pytest.approx(0.6789, abs=0.005)
    assert m["recall@100"] == pytest.approx(0.9253, abs=0.005)
    assert set(report["per_query"]) == set(BeirDataset.open("scifact", data_root).split_queries("test")[0])


def test_rebuild_is_a_noop_when_up_to_date(data_root, index_root):
    ds = BeirDataset.open("scifact", data_root)
    first = ensure_lucene_index(ds, index_root, progress=False)
    stamp = (lucene_index_dir(ds, index_root, False) / "deepretrieval-index.json").stat().st_mtime_ns
    again = ensure_lucene_index(ds, index_root, progress=False)
    assert again == first
    assert (lucene_index_dir(ds, index_root, False) / "deepretrieval-index.json").stat().st_mtime_ns == stamp


def test_any_beir_folder_by_path_with_rewritten_queries(tmp_path, tiny_beir, data_root, index_root):
    queries, _ = BeirDataset.open(tiny_beir, data_root).split_queries("test")
    rewritten = tmp_path / "rw.jsonl"
    # A rewrite that drops every query's text scores zero; one that keeps it scores as the original.
    lines = [{"_id": q, "query": (t if i % 2 else "zzzqqq unmatched")} for i, (q, t) in enumerate(queries.items())]
    rewritten.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = _eval(["--dataset", str(tiny_beir), "--queries", str(rewritten)], tmp_path, data_root, index_root)
    for q, i in zip(queries, range(len(queries))):
        per = report["per_query"][q]
        if i % 2:
            assert per["rewritten"] == per["original"]
        else:
            assert per["rewritten"]["ndcg@10"] == 0.0
    assert report["metrics"]["rewritten"]["ndcg@10"] < report["metrics"]["original"]["ndcg@10"]
    # Query by query against the originals: only the dropped queries that had found something got worse.
    paired = report["paired_vs_original"]["rewritten"]["ndcg@10"]
    lost = [q for i, q in enumerate(queries) if not i % 2 and report["per_query"][q]["original"]["ndcg@10"] > 0]
    assert (paired["better"], paired["worse"], paired["queries"]) == (0, len(lost), len(report["per_query"]))
    assert paired["mean_delta"] == pytest.approx(report["metrics"]["rewritten"]["ndcg@10"] - report["metrics"]["original"]["ndcg@10"])
    assert paired["ci95_high"] <= 0 <= paired["p_value"] <= 1


def test_rm3_row_is_the_original_queries_with_pseudo_relevance_feedback(tmp_path, data_root, index_root, capsys):
    """`--rm3`: a reference that learns nothing. On NFCorpus test it lifts the titles (0.3218 -> 0.346 nDCG@10 on all 323,
    measured 2026-12-08); on the first 60 it must move rankings, and it is compared query by query like any row."""
    report = _eval(["--dataset", "nfcorpus", "--max-queries", "60", "--rm3"], tmp_path, data_root, index_root)
    assert set(report["metrics"]) == {"original", "original+rm3"}
    paired = report["paired_vs_original"]["original+rm3"]["ndcg@10"]
    assert paired["better"] + paired["worse"] > 10
    assert report["metrics"]["original+rm3"]["recall@1000"] != report["metrics"]["original"]["recall@1000"]
    assert main(["eval", "--dataset", "nfcorpus", "--rm3", "--retriever", "dense", "--data-root", str(data_root),
                 "--home", str(index_root.parent)]) == 2
    assert "--rm3 is BM25 pseudo-relevance feedback" in capsys.readouterr().err


def test_malformed_rewrite_file_is_a_clear_error(tmp_path, tiny_beir, data_root, index_root, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "wrong key"}\n')
    rc = main(["eval", "--dataset", str(tiny_beir), "--queries", str(bad), "--data-root", str(data_root), "--home", str(index_root.parent)])
    assert rc == 2
    assert 'bad.jsonl:1: expected {"_id": ..., "query": ...}' in capsys.readouterr().err


async def test_backend_protocol_and_async_search(data_root, index_root):
    ds = BeirDataset.open("scifact", data_root)
    backend = BM25Backend(ensure_lucene_index(ds, index_root, progress=False), BM25Config())
    assert isinstance(backend, SearchBackend)
    res = await backend.search("0-dimensional biomaterials show inductive properties", 5)
    assert len(res.ids) == 5 and res.scores == sorted(res.scores, reverse=True)
    assert "k1=0.9" in backend.version
    assert backend.doc_text(res.ids[0]) and backend.doc_text("no-such-doc") is None
    await backend.close()


def test_several_rewriters_in_one_table_on_any_beir_folder(tmp_path, tiny_beir, data_root, index_root, policy_dir):
    """`--rewriter LABEL=DIR` twice: one table with original, each policy and its fallback row, per-policy format stats."""
    report = _eval(["--dataset", str(tiny_beir), "--max-queries", "3", "--engine", "hf", "--max-new-tokens", "8",
                    "--rewriter", f"untrained={policy_dir}", "--rewriter", f"again={policy_dir}"], tmp_path, data_root, index_root)
    assert set(report["metrics"]) == {"original", "untrained", "untrained+fallback", "again", "again+fallback"}
    assert report["num_queries"] == 3
    # 8 new tokens cannot close the answer format: every rewrite is empty and the fallback row is the original.
    assert set(report["rewriters"]) == {"untrained", "again"}
    assert all(st["format_broken_share"] == 1.0 for st in report["rewriters"].values())
    assert report["metrics"]["untrained"]["ndcg@10"] == 0.0
    assert report["metrics"]["again+fallback"] == report["metrics"]["original"]


def test_constrained_rewrites_are_decoded_as_served(tmp_path, tiny_beir, data_root, index_root, policy_dir):
    """`--constrained`: the untrained model, which never writes the format freely, answers every query well-formed under the serving grammar."""
    report = _eval(["--dataset", str(tiny_beir), "--max-queries", "3", "--engine", "hf", "--max-new-tokens", "96", "--constrained",
                    "--max-reasoning-chars", "0", "--max-rewrite-chars", "24", "--rewriter", str(policy_dir), "--rewrites-out", str(tmp_path / "rw.jsonl")],
                   tmp_path, data_root, index_root)
    assert report["constrained"] is True and report["format_broken_share"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "rw.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["error"] is None and r["query"][:1].isalnum() and len(r["query"]) <= 24 for r in rows), rows
    assert report["metrics"]["rewritten"]["ndcg@10"] == report["metrics"]["rewritten+fallback"]["ndcg@10"]


def test_eval_constrained_flags_are_checked_at_the_edge():
    import argparse

    from deepretrieval.common.errors import ConfigError
    from deepretrieval.common.tasks import get_task
    from deepretrieval.deploy.cmd_eval import constraint_from_args

    sparse = get_task("sparse")

    assert constraint_from_args(argparse.Namespace(constrained=False, max_reasoning_chars=None, max_new_tokens=None, max_rewrite_chars=None), sparse) is None
    with pytest.raises(ConfigError, match="needs --constrained"):
        constraint_from_args(argparse.Namespace(constrained=False, max_reasoning_chars=40, max_new_tokens=None, max_rewrite_chars=None), sparse)
    with pytest.raises(ConfigError, match="--max-rewrite-chars needs --constrained"):
        constraint_from_args(argparse.Namespace(constrained=False, max_reasoning_chars=None, max_new_tokens=None, max_rewrite_chars=9), sparse)
    with pytest.raises(ConfigError, match="at least 0"):
        constraint_from_args(argparse.Namespace(constrained=True, max_reasoning_chars=-1, max_new_tokens=None, max_rewrite_chars=None), sparse)
    with pytest.raises(ConfigError, match="--max-rewrite-chars must be at least 1"):
        constraint_from_args(argparse.Namespace(constrained=True, max_reasoning_chars=None, max_new_tokens=None, max_rewrite_chars=0), sparse)
    bounded = constraint_from_args(argparse.Namespace(constrained=True, max_reasoning_chars=40, max_new_tokens=None, max_rewrite_chars=30), sparse)
    assert "{0,40}" in bounded and "{0,29}" in bounded


def test_eval_feedback_flags_build_the_task_the_policy_was_trained_with():
    import argparse

    from deepretrieval.common.errors import ConfigError
    from deepretrieval.deploy.cmd_eval import task_from_args

    def args(**kw):
        return argparse.Namespace(**{"task": None, "retriever": "bm25", "feedback_docs": None, "feedback_chars": None, **kw})

    assert task_from_args(args()).feedback is None
    assert task_from_args(args(retriever="dense")).name == "dense"
    shown = task_from_args(args(feedback_docs=5, feedback_chars=60)).feedback
    assert (shown.docs, shown.max_chars) == (5, 60)
    with pytest.raises(ConfigError, match="--feedback-chars needs --feedback-docs"):
        task_from_args(args(feedback_chars=60))
    with pytest.raises(ConfigError, match="feedback"):
        task_from_args(args(feedback_docs=0))
    with pytest.raises(ConfigError, match="returns ids only"):
        task_from_args(args(task="pubmed", feedback_docs=3))


def test_rewriter_labels_must_be_unique(tmp_path, tiny_beir, data_root, index_root, policy_dir, capsys):
    rc = main(["eval", "--dataset", str(tiny_beir), "--rewriter", f"a={policy_dir}", "--rewriter", f"a={policy_dir}",
               "--data-root", str(data_root), "--home", str(index_root.parent)])
    assert rc == 2 and "labels must be unique" in capsys.readouterr().err


def test_eval_query_mode_flags_are_checked_at_the_edge():
    import argparse

    from deepretrieval.common.errors import ConfigError
    from deepretrieval.deploy.cmd_eval import composition_from_args

    def args(mode, repeats, new_terms_only=False):
        return argparse.Namespace(query_mode=mode, original_repeats=repeats, new_terms_only=new_terms_only)

    assert composition_from_args(args(None, None)) is None
    assert composition_from_args(args("expand", None)).original_repeats == 2
    assert composition_from_args(args("expand", 3)).compose("a", "b") == "a a a b"
    with pytest.raises(ConfigError, match="needs --query-mode expand"):
        composition_from_args(args(None, 2))
    with pytest.raises(ConfigError, match="needs --query-mode expand"):
        composition_from_args(args("rewrite", 2))
    with pytest.raises(ConfigError, match="original_repeats"):
        composition_from_args(args("expand", 0))
    assert composition_from_args(args("expand", 1, True)).compose("a b", "b c") == "a b c"
    with pytest.raises(ConfigError, match="--new-terms-only needs --query-mode expand"):
        composition_from_args(args(None, None, True))
