"""SQLite backend against the real GeoQuery database: gold SQL, rejected writes, timeout, row cap."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest

from deepretrieval.common.errors import BackendUnavailable, QuerySyntaxError
from deepretrieval.common.sql_config import SqlConfig
from deepretrieval.common.text2sql import Text2SqlDataset
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.sql_backend import SqlBackend, has_order_by, results_match


@pytest.fixture
def geoquery(data_root: Path) -> Text2SqlDataset:
    return Text2SqlDataset.open("geoquery", data_root)


@pytest.fixture
def backend(geoquery: Text2SqlDataset):
    b = SqlBackend(geoquery.db_path, SqlConfig(timeout_s=0.5, max_rows=50))
    yield b
    asyncio.run(b.close())


def run_all(backend: SqlBackend, statements: list[str]):
    async def go():
        return await asyncio.gather(*(backend.execute(s) for s in statements))

    return asyncio.run(go())


def test_satisfies_the_search_backend_protocol(backend: SqlBackend):
    assert isinstance(backend, SearchBackend)
    assert backend.name == "sql"
    # First 16 hex digits of the sha256 the data README gives for geography.sqlite.
    assert backend.version == "62b1f3655b710302"


def test_gold_sql_of_a_sample_matches_itself(geoquery: Text2SqlDataset):
    questions = random.Random(0).sample(geoquery.questions(), 40)
    backend = SqlBackend(geoquery.db_path, SqlConfig())
    try:
        runs = run_all(backend, [q.sql for q in questions])
    finally:
        asyncio.run(backend.close())
    for q, run in zip(questions, runs, strict=True):
        assert run.status == "ok", (q.qid, run.message)  # double-quoted literals ("texas") work
        assert results_match(run, run), q.qid
    assert any(run.rows for run in runs)


def test_a_wrong_query_does_not_match(backend: SqlBackend):
    gold, same, wrong = run_all(
        backend,
        [
            'SELECT CITYalias0.CITY_NAME FROM CITY AS CITYalias0 WHERE CITYalias0.STATE_NAME = "arizona" ;',
            "select city_name from city where state_name = 'arizona'",
            "SELECT city_name FROM city WHERE state_name = 'texas'",
        ],
    )
    assert gold.status == same.status == wrong.status == "ok"
    assert results_match(same, gold)
    assert not results_match(wrong, gold)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM state",
        "UPDATE state SET population = 0",
        "INSERT INTO state (state_name) VALUES ('atlantis')",
        "DROP TABLE state",
        "CREATE TABLE t (x INTEGER)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA query_only = OFF",
        "PRAGMA table_info(city)",
        "BEGIN",
        "VACUUM",
        "SELECT 1; DELETE FROM state",
        "SELECT * FROM state; SELECT 1",
        "SELEC state_name FROM state",
        "SELECT 'unterminated",
        "",
        "  -- only a comment",
        "SELECT 'a\x00b'",
    ],
)
def test_writes_and_unparsable_sql_are_invalid(backend: SqlBackend, sql: str):
    (run,) = run_all(backend, [sql])
    assert run.status == "invalid", run.message
    assert run.rows == ()


def test_the_database_is_unchanged_after_attempted_writes(backend: SqlBackend):
    before, _, after = run_all(backend, ["SELECT count(*) FROM state"]) + run_all(backend, ["DELETE FROM state"]) + run_all(backend, ["SELECT count(*) FROM state"])
    assert before.rows == after.rows == ((51,),)


def test_sql_that_parses_but_fails_is_an_error_not_invalid(backend: SqlBackend):
    (run,) = run_all(backend, ["SELECT no_such_column FROM state"])
    assert run.status == "error" and "no such column" in run.message


def test_pathological_query_times_out(backend: SqlBackend):
    (run,) = run_all(backend, ["WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"])
    assert run.status == "timeout"
    assert 0.5 <= run.elapsed_s < 3.0


def test_row_cap_truncates_and_never_matches(backend: SqlBackend):
    (run,) = run_all(backend, ["SELECT city_name FROM city"])  # 386 rows, cap 50
    assert run.status == "ok" and run.truncated and len(run.rows) == 50
    assert not results_match(run, run)


def test_search_view_serialises_rows_and_raises_on_invalid(backend: SqlBackend):
    async def go():
        result = await backend.search("SELECT state_name, population FROM state ORDER BY population DESC LIMIT 3", 2)
        with pytest.raises(QuerySyntaxError):
            await backend.search("DROP TABLE state", 10)
        return result

    result = asyncio.run(go())
    assert result.ids == ['["california", 23670000]', '["new york", 17558000]']
    assert result.total == 3 and result.meta["status"] == "ok"


def test_order_by_detection_ignores_string_literals():
    assert has_order_by("SELECT x FROM t ORDER  BY x DESC LIMIT 1")
    assert not has_order_by("SELECT x FROM t WHERE name = 'order by'")
    assert not has_order_by('SELECT x FROM t WHERE name = "order by"')


def test_a_broken_database_is_unavailable_not_invalid(tmp_path: Path):
    bad = tmp_path / "broken.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    backend = SqlBackend(bad, SqlConfig())
    try:
        with pytest.raises(BackendUnavailable):
            run_all(backend, ["SELECT 1"])
    finally:
        asyncio.run(backend.close())


def test_a_copy_of_the_database_has_the_same_version(geoquery: Text2SqlDataset, tmp_path: Path):
    copy = tmp_path / "copy.sqlite"
    shutil.copy(geoquery.db_path, copy)
    assert SqlBackend(copy, SqlConfig()).version == SqlBackend(geoquery.db_path, SqlConfig()).version
