"""SQLite execution backend of the sql task: read-only, one statement, timeout and row cap.

The policy's SQL is untrusted. Four layers keep it to reading: a `mode=ro` URI connection,
`PRAGMA query_only`, an authorizer that allows only SELECT/READ/FUNCTION/RECURSIVE actions (so
INSERT, UPDATE, DELETE, DROP, ATTACH, PRAGMA, transactions are refused while the statement is
prepared), and Python's one-statement-per-execute rule. A progress handler interrupts a statement
after `timeout_s`, rows are capped at `max_rows`, and strings/blobs at `max_value_bytes`.

Outcome of one statement (`SqlRun.status`):
- `ok`: it ran; `rows` holds the result (at most `max_rows`; `truncated` if there were more).
- `invalid`: not one read-only statement, or it does not parse — the policy's fault, scored as a
  format failure (TASKS.md §2).
- `error`: it parses but fails when prepared or run (no such column, misuse of aggregate, ...).
- `timeout`: interrupted after `timeout_s`.
A database that cannot be opened or read raises BackendUnavailable (not the policy's fault).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deepretrieval.common.errors import BackendUnavailable, DatasetError, QuerySyntaxError
from deepretrieval.common.sql_config import SqlConfig
from deepretrieval.rewarders.base import SearchResult

SqlStatus = Literal["ok", "invalid", "error", "timeout"]

_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
# SQLITE_ERROR covers both unparsable text and unknown names; these messages mark the former.
_SYNTAX_MESSAGES = ("syntax error", "incomplete input", "unrecognized token")
# Result codes (prefixes of extended names) that mean the database, not the statement, is at fault.
_UNAVAILABLE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_PROTOCOL")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


@dataclass(frozen=True)
class SqlRun:
    """What one statement did.

    Args:
        status: `ok`, `invalid` (policy's fault, format failure), `error` (failed at prepare/run
            time), `timeout`.
        rows: result rows (empty unless ok), at most the row cap.
        truncated: the result had more rows than the cap.
        ordered: the statement text has ORDER BY (a gold result is then compared in order).
        message: SQLite's message for non-ok statuses, "" otherwise.
        elapsed_s: wall time of the execution.
    """

    status: SqlStatus
    rows: tuple[tuple[object, ...], ...]
    truncated: bool
    ordered: bool
    message: str
    elapsed_s: float


def has_order_by(sql: str) -> bool:
    """Whether the SQL has ORDER BY outside string literals (Spider's evaluation rule, token-wise)."""
    return _ORDER_BY.search(_STRING_LITERAL.sub(" ", sql)) is not None


def results_match(predicted: SqlRun, gold: SqlRun) -> bool:
    """Execution match: equal result multisets, or equal lists when the gold SQL has ORDER BY.

    Args:
        predicted: the policy's run.
        gold: the gold SQL's run (must be ok and not truncated to match anything).

    Returns:
        True when both ran, neither hit the row cap, and the results are equal. Values compare
        as Python values (1 == 1.0); columns compare in order.
    """
    if predicted.status != "ok" or gold.status != "ok" or predicted.truncated or gold.truncated:
        return False
    if gold.ordered:
        return predicted.rows == gold.rows
    return Counter(predicted.rows) == Counter(gold.rows)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


class SqlBackend:
    """Runs SQL on one SQLite file; satisfies the `SearchBackend` Protocol.

    Args:
        db_path: the database file (opened read-only per statement).
        config: timeout, caps and worker threads.

    Raises:
        DatasetError: the file does not exist.
    """

    def __init__(self, db_path: Path, config: SqlConfig):
        self._db_path = Path(db_path).resolve()
        if not self._db_path.is_file():
            raise DatasetError(f"SQLite database {self._db_path} does not exist; pass the data set's *.sqlite file")
        self._config = config
        self._version = _file_sha256(self._db_path)[:16]
        self._uri = f"{self._db_path.as_uri()}?mode=ro"
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="sql-backend")

    @property
    def name(self) -> str:
        return "sql"

    @property
    def version(self) -> str:
        """First 16 hex digits of the database file's sha256."""
        return self._version

    async def execute(self, sql: str) -> SqlRun:
        """Run one statement off the event loop.

        Args:
            sql: the statement (the policy's or the gold).

        Returns:
            The SqlRun; rejected, failing and slow statements are statuses, not exceptions.

        Raises:
            BackendUnavailable: the database cannot be opened or read.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.execute_blocking, sql)

    async def search(self, query: str, k: int) -> SearchResult:
        """The Protocol view: rows serialised as JSON arrays, at most `k`, in result order.

        Raises:
            QuerySyntaxError: the statement is `invalid` (the policy's fault).
            BackendUnavailable: the database cannot be opened or read.
        """
        run = await self.execute(query)
        if run.status == "invalid":
            raise QuerySyntaxError(f"SQL rejected: {run.message}")
        ids = [json.dumps(list(row), default=lambda v: v.hex() if isinstance(v, bytes) else str(v)) for row in run.rows[:k]]
        meta: dict[str, object] = {"status": run.status, "truncated": run.truncated, "message": run.message, "elapsed_s": run.elapsed_s}
        return SearchResult(ids=ids, total=len(run.rows) if run.status == "ok" and not run.truncated else None, meta=meta)

    async def close(self) -> None:
        """Stop the worker threads (a running statement ends at its timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def execute_blocking(self, sql: str) -> SqlRun:
        """Run one statement on the calling thread (what `execute` runs in the executor)."""
        started = time.monotonic()
        ordered = has_order_by(sql) if isinstance(sql, str) else False

        def outcome(status: SqlStatus, message: str = "", rows: list[tuple[object, ...]] | None = None, truncated: bool = False) -> SqlRun:
            return SqlRun(status, tuple(rows or ()), truncated, ordered, message, time.monotonic() - started)

        if not isinstance(sql, str) or not sql.strip():
            return outcome("invalid", "empty statement")
        with closing(self._connect()) as conn:
            deadline = started + self._config.timeout_s
            timed_out = False

            def past_deadline() -> int:
                nonlocal timed_out
                timed_out = time.monotonic() > deadline
                return 1 if timed_out else 0

            conn.set_progress_handler(past_deadline, self._config.progress_every)
            try:
                cursor = conn.execute(sql)
                if cursor.description is None:
                    return outcome("invalid", "not a query (no result columns)")
                rows = cursor.fetchmany(self._config.max_rows + 1)
            except (sqlite3.ProgrammingError, sqlite3.Warning, ValueError, UnicodeError) as e:
                return outcome("invalid", str(e))
            except sqlite3.Error as e:
                if timed_out:
                    return outcome("timeout", f"interrupted after {self._config.timeout_s:g} s")
                return outcome(self._classify(e), str(e))
        truncated = len(rows) > self._config.max_rows
        return outcome("ok", rows=rows[: self._config.max_rows], truncated=truncated)

    def _classify(self, error: sqlite3.Error) -> SqlStatus:
        """`invalid` or `error` for a failed statement; BackendUnavailable for a broken database."""
        code = getattr(error, "sqlite_errorname", "")
        if code.startswith(_UNAVAILABLE_CODES):
            raise BackendUnavailable(f"SQLite database {self._db_path} cannot be read: {error} ({code})") from error
        if code.startswith(("SQLITE_AUTH", "SQLITE_READONLY")) or any(m in str(error) for m in _SYNTAX_MESSAGES):
            return "invalid"
        return "error"

    def _connect(self) -> sqlite3.Connection:
        """A fresh read-only connection with limits and the authorizer installed."""
        try:
            conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise BackendUnavailable(f"SQLite database {self._db_path} cannot be opened read-only: {e}") from e
        try:
            conn.execute("PRAGMA query_only = ON")
            # Load the schema before the authorizer: SQLite's own schema read asks it for sqlite_master.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as e:
            conn.close()
            raise BackendUnavailable(f"SQLite database {self._db_path} cannot be read: {e}") from e
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self._config.max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(_authorize)
        return conn
