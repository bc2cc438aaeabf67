"""Text-to-SQL data sets (GeoQuery layout): questions with gold SQL plus one SQLite database.

Layout (../shared/data/README.md, geoquery section):
    questions.jsonl   {"_id", "question", "sql", "split", ...}
    <name>.sqlite     the database the gold SQL runs on (exactly one *.sqlite file)
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from deepretrieval.common.datasets import resolve_dataset
from deepretrieval.common.errors import DatasetError


@dataclass(frozen=True)
class SqlQuestion:
    """One question with its gold SQL."""

    qid: str
    question: str
    sql: str
    split: str


@dataclass(frozen=True)
class Text2SqlDataset:
    """A text-to-SQL data set folder."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def questions_path(self) -> Path:
        return self.root / "questions.jsonl"

    @classmethod
    def is_text2sql(cls, root: Path) -> bool:
        """Whether a folder looks like this layout (questions.jsonl and a *.sqlite file)."""
        return (root / "questions.jsonl").is_file() and any(root.glob("*.sqlite"))

    @classmethod
    def open(cls, name_or_path: str | Path, data_root: Path) -> Text2SqlDataset:
        """Resolve the folder and check its layout.

        Raises:
            DatasetError: not found, or not questions.jsonl + one *.sqlite.
        """
        root = resolve_dataset(name_or_path, data_root)
        if not cls.is_text2sql(root):
            raise DatasetError(f"{root} is not a text-to-SQL data set: expected questions.jsonl and one *.sqlite file (GeoQuery layout)")
        ds = cls(root)
        ds.db_path  # noqa: B018 - checks there is exactly one database
        return ds

    @property
    def db_path(self) -> Path:
        """The one SQLite database of the set."""
        dbs = sorted(self.root.glob("*.sqlite"))
        if len(dbs) != 1:
            raise DatasetError(f"{self.root}: expected exactly one *.sqlite file, found {[p.name for p in dbs]}")
        return dbs[0]

    def questions(self) -> list[SqlQuestion]:
        """All questions in file order; a malformed line is a DatasetError naming the line."""
        out: list[SqlQuestion] = []
        with self.questions_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    out.append(SqlQuestion(str(obj["_id"]), obj["question"], obj["sql"], obj["split"]))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DatasetError(f"{self.questions_path}:{lineno}: not a question record ({e})") from e
        return out

    def splits(self) -> list[str]:
        """The question splits present."""
        return sorted({q.split for q in self.questions()})

    def split_questions(self, split: str) -> list[SqlQuestion]:
        """Questions of one split.

        Raises:
            DatasetError: no question has that split.
        """
        out = [q for q in self.questions() if q.split == split]
        if not out:
            raise DatasetError(f"{self.root} has no questions in split {split!r} (have: {', '.join(self.splits())})")
        return out

    def schema(self) -> str:
        """The CREATE TABLE statements of the database, for the prompt."""
        uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
        try:
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL ORDER BY name").fetchall()
        except sqlite3.Error as e:
            raise DatasetError(f"{self.db_path}: cannot read the schema ({e})") from e
        return ";\n".join(r[0] for r in rows) + ";"
