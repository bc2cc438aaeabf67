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
