"""Build Lucene indexes over BEIR corpora with Anserini (the jar pyserini ships).

"flat" is the BEIR setting of the Pyserini regressions: title and text in one `contents` field,
Anserini's default English analyzer (Porter stemming, stopwords), positions, doc vectors and raw
JSON stored. "multifield" adds an analyzed `title` field beside `contents` (the API emulators use
it for `[ti]` searches). Re-running with an up-to-date index is a no-op.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.errors import IndexMissingError
from deepretrieval.rewarders.index_store import build_lock, manifest_version, publish, write_manifest
from deepretrieval.rewarders.lucene_env import anserini_jar, java_bin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LuceneIndex:
    """A built Lucene index.

    Args:
        path: the Lucene index folder.
        version: corpus fingerprint + settings; the index version in cache keys.
        multifield: whether an analyzed `title` field exists beside `contents`.
    """

    path: Path
    version: str
    multifield: bool


def lucene_index_dir(ds: BeirDataset, index_root: Path, multifield: bool) -> Path:
    return Path(index_root) / ds.name / ("bm25-multifield" if multifield else "bm25-flat")


def _version(ds: BeirDataset, multifield: bool) -> str:
    return f"{ds.name}-{ds.fingerprint()}-{'mf' if multifield else 'flat'}-{anserini_jar().stem.split('-')[1]}"


def open_lucene_index(ds: BeirDataset, index_root: Path, *, multifield: bool = False) -> LuceneIndex:
    """The existing, up-to-date index of `ds`.

    Raises:
        IndexMissingError: not built yet, or built from another version of the corpus.
    """
    path = lucene_index_dir(ds, index_root, multifield)
    want = _version(ds, multifield)
    if manifest_version(path) == want:
        return LuceneIndex(path=path, version=want, multifield=multifield)
    kind = "bm25 (multifield)" if multifield else "bm25"
    raise IndexMissingError(
        f"no up-to-date {kind} index of {ds.name} under {index_root}; "
        f"run `deepretrieval index build --dataset {ds.root} --kind bm25`"
    )


def _write_collection(ds: BeirDataset, out_file: Path, multifield: bool, progress: bool) -> int:
    n = 0
    total = ds.corpus_size()
    with out_file.open("w", encoding="utf-8") as f:
        for doc in tqdm(ds.iter_corpus(), total=total, desc=f"{ds.name}: corpus", unit="doc", disable=not progress):
            rec = {"id": doc.doc_id, "contents": doc.contents}
            if multifield:
                rec["title"] = doc.title
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def build_lucene_index(ds: BeirDataset, index_root: Path, *, multifield: bool = False, threads: int = 2, progress: bool = True) -> LuceneIndex:
    """Build (or rebuild) the Lucene index of `ds` and write its manifest last, atomically.

    Args:
        ds: the data set.
        index_root: root folder of all indexes.
        multifield: add an analyzed `title` field.
        threads: Anserini indexing threads.
        progress: show progress bars.

    Returns:
        The built index.
    """
    final = lucene_index_dir(ds, index_root, multifield)
    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
        tmpdir = Path(tmp)
        coll = tmpdir / "collection"
        coll.mkdir()
        n_docs = _write_collection(ds, coll / "docs.jsonl", multifield, progress)
        staging = tmpdir / "index"
        cmd = [
            str(java_bin()), "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
            "-collection", "JsonCollection", "-input", str(coll), "-index", str(staging),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw",
        ]
        if multifield:
            cmd += ["-fields", "title"]
        with tqdm(total=n_docs, desc=f"{ds.name}: lucene", unit="doc", disable=not progress) as bar:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"Anserini indexing of {ds.name} failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")
            bar.update(n_docs)
        version = _version(ds, multifield)
        write_manifest(staging, {
            "version": version, "dataset": str(ds.root), "documents": n_docs, "multifield": multifield,
            "analyzer": "anserini-default-english", "build_seconds": round(time.perf_counter() - t0, 3),
        })
        publish(staging, final)
    log.info("built %s (%d docs) in %.1fs", final, n_docs, time.perf_counter() - t0)
    return LuceneIndex(path=final, version=version, multifield=multifield)


def ensure_lucene_index(ds: BeirDataset, index_root: Path, *, multifield: bool = False, progress: bool = True) -> LuceneIndex:
    """The up-to-date index of `ds`, building it only when it is missing or stale.

    Concurrent callers (test workers, several rewarders) are serialised by a file lock, so the
    index is built once.
    """
    with build_lock(lucene_index_dir(ds, index_root, multifield)):
        try:
            return open_lucene_index(ds, index_root, multifield=multifield)
        except IndexMissingError:
            return build_lucene_index(ds, index_root, multifield=multifield, progress=progress)
