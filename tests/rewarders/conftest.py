"""Fixtures for the API emulator and client tests: a real Lucene index and real HTTP servers.

One multifield SciFact index and one `LuceneEngine` (one JVM) serve the whole session; emulator
servers are cheap on top of it: session-wide ones without a rate limit for semantics tests, and
per-test ones (`start_emulator`) for quota and fault tests. Servers run in background threads
with their own event loops; tests drive them with `asyncio.run` and real aiohttp clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepretrieval.common.config import EmulatorConfig, EmulatorFaults, PathsConfig
from deepretrieval.rewarders.emulators.runner import BackgroundEmulator, OpenedIndex, open_index


@pytest.fixture(scope="session")
def emu_paths(data_root: Path, index_root: Path) -> PathsConfig:
    return PathsConfig(data_root=data_root, index_dir=index_root)


@pytest.fixture(scope="session")
def emu_index(emu_paths: PathsConfig) -> Iterator[OpenedIndex]:
    """The SciFact multifield index, opened once (starts the JVM)."""
    opened = open_index(EmulatorConfig(api="pubmed", dataset="scifact"), emu_paths)
    yield opened
    opened.engine.close()


def _start(cfg: EmulatorConfig, opened: OpenedIndex, tracer: Any = None) -> BackgroundEmulator:
    emulator = BackgroundEmulator(cfg, opened, tracer)
    emulator.start()
    return emulator


@pytest.fixture(scope="session")
def pubmed_url(emu_index: OpenedIndex) -> Iterator[str]:
    """Base URL (…/entrez/eutils) of a PubMed emulator without rate limit."""
    emulator = _start(EmulatorConfig(api="pubmed", dataset="scifact", port=0, rate_limit=False), emu_index)
    yield emulator.base_url
    emulator.stop()


@pytest.fixture(scope="session")
def ctgov_url(emu_index: OpenedIndex) -> Iterator[str]:
    """Base URL (…/api/v2) of a ClinicalTrials.gov emulator without rate limit."""
    emulator = _start(EmulatorConfig(api="ctgov", dataset="scifact", port=0, rate_limit=False), emu_index)
    yield emulator.base_url
    emulator.stop()


StartEmulator = Callable[..., str]


@pytest.fixture
def start_emulator(emu_index: OpenedIndex) -> Iterator[StartEmulator]:
    """Start emulators with custom quota/faults for one test: `start_emulator("pubmed", rate_limit_rps=1, faults={...})`;
    `tracer=` makes it write one server span per request."""
    started: list[BackgroundEmulator] = []

    def start(api: str, faults: dict[str, Any] | None = None, tracer: Any = None, **overrides: Any) -> str:
        cfg = EmulatorConfig(api=api, dataset="scifact", port=0, faults=EmulatorFaults(**(faults or {})), **overrides)
        emulator = _start(cfg, emu_index, tracer)
        started.append(emulator)
        return emulator.base_url

    yield start
    for emulator in started:
        emulator.stop()
