"""Config of the SQLite execution backend (the sql task's search engine)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepretrieval.common.config import StrictModel


class SqlConfig(StrictModel):
    """Read-only SQLite execution with a statement timeout and result caps (TASKS.md §3)."""

    type: Literal["sql"] = "sql"
    timeout_s: float = Field(30.0, gt=0, description="Wall-clock limit of one statement, in seconds (TASKS.md §2: 30 s).")
    max_rows: int = Field(10_000, ge=1, description="Rows fetched at most; a longer result is marked truncated and never matches.")
    max_value_bytes: int = Field(1_000_000, ge=1_000, description="Largest string or blob a statement may build (SQLITE_LIMIT_LENGTH), in bytes.")
    progress_every: int = Field(1_000, ge=1, description="SQLite VM steps between timeout checks.")
    workers: int = Field(2, ge=1, le=64, description="Threads running statements (SQLite calls block; they run off the event loop).")
