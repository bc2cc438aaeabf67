"""Micro-batching: concurrent single searches go to a local engine as one multi-threaded batch.

Lucene's `batch_search` with 2 threads answers ~2x more queries/s than one-at-a-time search; the
rewarder scores many samples concurrently, so searches that arrive within a short window are
collected and sent together. Results are identical to single searches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from deepretrieval.rewarders.base import SearchBackend, SearchResult

Run = dict[str, dict[str, float]]


class MicroBatcher:
    """A SearchBackend that batches `search` calls into `batch_search` calls of the wrapped backend.

    Args:
        backend: a backend with `batch_search(queries: dict[str, str], k) -> run` (ranked, best first).
        window_s: how long the first search of a batch waits for company.
        max_batch: flush at once when this many searches wait.
        executor: where the blocking batch runs; None = asyncio's default pool.
    """

    def __init__(self, backend: SearchBackend, window_s: float = 0.002, max_batch: int = 256, executor: Executor | None = None):
        batch_search: Callable[[dict[str, str], int], Run] | None = getattr(backend, "batch_search", None)
        if batch_search is None:
            raise TypeError(f"{type(backend).__name__} has no batch_search; it cannot be micro-batched")
        self._backend = backend
        self._batch_search = batch_search
        self._window_s = window_s
        self._max_batch = max_batch
        self._executor = executor
        self._pending: dict[int, list[tuple[str, asyncio.Future[SearchResult]]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.batches = 0

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def version(self) -> str:
        return self._backend.version

    async def search(self, query: str, k: int) -> SearchResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SearchResult] = loop.create_future()
        waiting = self._pending.setdefault(k, [])
        waiting.append((query, fut))
        if len(waiting) >= self._max_batch:
            self._flush(k)
        elif k not in self._timers:
            self._timers[k] = loop.call_later(self._window_s, self._flush, k)
        return await fut

    def _flush(self, k: int) -> None:
        timer = self._timers.pop(k, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(k, [])
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch, k))

    async def _run(self, batch: list[tuple[str, asyncio.Future[SearchResult]]], k: int) -> None:
        queries = {str(i): q for i, (q, _) in enumerate(batch)}
        loop = asyncio.get_running_loop()
        self.batches += 1
        try:
            run = await loop.run_in_executor(self._executor, self._batch_search, queries, k)
        except Exception as e:  # every waiter gets the engine's error
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for i, (_, fut) in enumerate(batch):
            hits = run.get(str(i), {})
            if not fut.done():
                fut.set_result(SearchResult(ids=list(hits), scores=list(hits.values())))

    async def close(self) -> None:
        await self._backend.close()
