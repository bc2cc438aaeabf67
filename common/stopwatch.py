"""Wall seconds by named stage, for the reports of long commands (`train`, `warmup`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulates the wall time of named stages; a stage timed twice adds up (a loop's rounds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the `with` body under `name`; the time counts even when the body raises."""
        mark = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - mark)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` under `name` (time measured elsewhere, e.g. inside a callback)."""
        if seconds < 0:
            raise ValueError(f"stage {name!r}: negative seconds {seconds}")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
