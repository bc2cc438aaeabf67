"""BEIR-layout data sets: resolve a name or path, read corpus, queries and qrels.

Layout (../shared/data/README.md):
    corpus.jsonl   {"_id", "title", "text"}
    queries.jsonl  {"_id", "text"}
    qrels/<split>.tsv  header "query-id\tcorpus-id\tscore"
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deepretrieval.common.errors import DatasetError

Qrels = dict[str, dict[str, int]]
"""query id -> {doc id -> graded relevance}."""


@dataclass(frozen=True)
class Document:
    """One corpus entry."""

    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Title and text in one field: the BEIR "flat" setting."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


def resolve_dataset(name_or_path: str | Path, data_root: Path) -> Path:
    """Turn `--dataset NAME|PATH` into a folder.

    Args:
        name_or_path: a data set name under `data_root`, or a path to a folder.
        data_root: the data root (`$DEEPRETRIEVAL_DATA` or ../shared/data).

    Returns:
        The folder holding the data set.

    Raises:
        DatasetError: neither a folder nor a known name.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p.resolve()
    candidate = Path(data_root) / str(name_or_path)
    if candidate.is_dir():
        return candidate.resolve()
    known = sorted(d.name for d in Path(data_root).iterdir() if d.is_dir()) if Path(data_root).is_dir() else []
    raise DatasetError(
        f"data set {str(name_or_path)!r} is neither a folder nor a name under the data root {data_root} "
        f"(known: {', '.join(known) or 'none'}); pass a path or set DEEPRETRIEVAL_DATA / --data-root"
    )


@dataclass(frozen=True)
class BeirDataset:
    """A data set folder in BEIR layout."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def open(cls, name_or_path: str | Path, data_root: Path) -> "BeirDataset":
        """Resolve and check the folder has corpus.jsonl and queries.jsonl."""
        root = resolve_dataset(name_or_path, data_root)
        ds = cls(root)
        for f in (ds.corpus_path, ds.queries_path):
            if not f.is_file():
                raise DatasetError(f"{root} is not in BEIR layout: {f.name} is missing")
        return ds

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        return self.root / "queries.jsonl"

    def qrels_path(self, split: str) -> Path:
        return self.root / "qrels" / f"{split}.tsv"

    def splits(self) -> list[str]:
        """The splits that have a qrels file."""
        qd = self.root / "qrels"
        return sorted(p.stem for p in qd.glob("*.tsv")) if qd.is_dir() else []

    def fingerprint(self) -> str:
        """A cheap content fingerprint of the corpus (size + mtime + head/tail bytes).

        Used to tell whether an index is up to date and as the index version in cache keys.
        """
        st = self.corpus_path.stat()
        h = hashlib.sha256(f"{st.st_size}".encode())
        with self.corpus_path.open("rb") as f:
            h.update(f.read(1 << 16))
            if st.st_size > 1 << 16:
                f.seek(max(0, st.st_size - (1 << 16)))
                h.update(f.read())
        return h.hexdigest()[:16]

    def iter_corpus(self) -> Iterator[Document]:
        """Stream the corpus; a malformed line is a DatasetError naming the line."""
        with self.corpus_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    yield Document(str(obj["_id"]), obj.get("title") or "", obj.get("text") or "")
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DatasetError(f"{self.corpus_path}:{lineno}: not a corpus record ({e})") from e

    def corpus_size(self) -> int:
        with self.corpus_path.open("rb") as f:
            return sum(1 for line in f if line.strip())

    def queries(self) -> dict[str, str]:
        """All queries, id -> text."""
        out: dict[str, str] = {}
        with self.queries_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    out[str(obj["_id"])] = obj["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DatasetError(f"{self.queries_path}:{lineno}: not a query record ({e})") from e
        return out

    def qrels(self, split: str) -> Qrels:
        """Relevance judgements of a split (all rows, including score 0)."""
        path = self.qrels_path(split)
        if not path.is_file():
            raise DatasetError(f"{self.root} has no qrels for split {split!r} (have: {', '.join(self.splits()) or 'none'})")
        out: Qrels = {}
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            for lineno, row in enumerate(reader, 1):
                if not row or (lineno == 1 and row[0] == "query-id"):
                    continue
                if len(row) < 3:
                    raise DatasetError(f"{path}:{lineno}: expected query-id, corpus-id, score; got {row!r}")
                try:
                    out.setdefault(row[0], {})[row[1]] = int(row[2])
                except ValueError as e:
                    raise DatasetError(f"{path}:{lineno}: score {row[2]!r} is not an integer") from e
        return out

    def split_queries(self, split: str) -> tuple[dict[str, str], Qrels]:
        """Queries of a split that have at least one relevant (score > 0) document, and their qrels."""
        qrels = self.qrels(split)
        queries = self.queries()
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise DatasetError(f"{self.qrels_path(split)}: {len(missing)} query ids not in queries.jsonl (e.g. {missing[0]!r})")
        keep = {q: queries[q] for q, docs in qrels.items() if any(s > 0 for s in docs.values())}
        return keep, {q: qrels[q] for q in keep}
