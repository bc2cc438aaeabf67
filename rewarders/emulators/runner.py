"""Start and stop an emulator: in this event loop, in a background thread, or as the CLI's main.

    async with run_emulator(cfg, paths) as server:      # builds/opens the index, binds the port
        client = PubMedClient(ApiClientConfig(base_url=server.base_url), session)

`EmulatorServer` is the lower-level piece (start()/stop() on an already opened `LuceneEngine`, so
tests and benchmarks can share one engine between servers); `BackgroundEmulator` runs one in its
own thread and loop for synchronous callers; `serve()` is the blocking main of
`deepretrieval emulate`. For several processes, run the CLI (`process.py` starts it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from opentelemetry import trace

from deepretrieval.common.config import EmulatorConfig, PathsConfig
from deepretrieval.common.datasets import BeirDataset
from deepretrieval.rewarders.emulators import ctgov, pubmed
from deepretrieval.rewarders.emulators.faults import FaultInjector
from deepretrieval.rewarders.emulators.lucene_search import LuceneEngine
from deepretrieval.rewarders.emulators.middleware import STATS_PATH, ApiHooks, RateLimits, ServerStats, make_pipeline
from deepretrieval.rewarders.emulators.server_rate_limit import SlidingWindowLimiter, per_window
from deepretrieval.rewarders.lucene_index import ensure_lucene_index

log = logging.getLogger(__name__)

# Documented quotas: NCBI 3 requests/s per address without a key, 10 with one;
# ClinicalTrials.gov about 50 requests/minute per address.
PUBMED_RPS, PUBMED_RPS_WITH_KEY, PUBMED_WINDOW_S = 3.0, 10.0, 1.0
CTGOV_RPS, CTGOV_WINDOW_S = 50.0 / 60.0, 60.0
_SHUTDOWN_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class OpenedIndex:
    """A data set and the engine over its (multifield) Lucene index."""

    dataset: BeirDataset
    engine: LuceneEngine


def open_index(cfg: EmulatorConfig, paths: PathsConfig) -> OpenedIndex:
    """Resolve the data set, build its multifield index if needed, open it (blocking, starts the JVM).

    Raises:
        DatasetError: the data set is not found or not in BEIR layout.
    """
    ds = BeirDataset.open(cfg.dataset, paths.data_root)
    index = ensure_lucene_index(ds, paths.index_dir, multifield=True, progress=False)
    return OpenedIndex(ds, LuceneEngine(index))


def rate_limits(cfg: EmulatorConfig) -> RateLimits:
    """The quota per window of `cfg`'s API, with the documented values as defaults."""
    if cfg.api == "pubmed":
        window = cfg.rate_limit_window_s or PUBMED_WINDOW_S
        limit = per_window(cfg.rate_limit_rps or PUBMED_RPS, window)
        with_key = per_window(cfg.rate_limit_rps_with_key or PUBMED_RPS_WITH_KEY, window)
    else:
        window = cfg.rate_limit_window_s or CTGOV_WINDOW_S
        limit = with_key = per_window(cfg.rate_limit_rps or CTGOV_RPS, window)
    # Without a limiter the numbers still fill the body of injected 429 answers.
    return RateLimits(SlidingWindowLimiter(window) if cfg.rate_limit else None, limit, with_key)


class EmulatorServer:
    """One emulated API on one address, answering from an opened index.

    Args:
        cfg: which API, where to listen, quota and faults.
        opened: the data set and its engine (not closed by `stop`: the caller owns it).
        tracer: one SERVER span per request when given (`--trace-file`, OTEL_* exporters).
    """

    def __init__(self, cfg: EmulatorConfig, opened: OpenedIndex, tracer: trace.Tracer | None = None):
        self.cfg = cfg
        self.opened = opened
        self._tracer = tracer
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.port: int | None = None
        self.stats = ServerStats(started_at=time.time())

    @property
    def base_url(self) -> str:
        """What a client's `base_url` should be: `.../entrez/eutils` or `.../api/v2`."""
        if self.port is None:
            raise RuntimeError("emulator not started")
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        prefix = "/entrez/eutils" if self.cfg.api == "pubmed" else "/api/v2"
        return f"http://{host}:{self.port}{prefix}"

    def build_app(self, executor: ThreadPoolExecutor) -> web.Application:
        """The aiohttp application: the API's routes behind the shared pipeline."""
        cfg, engine = self.cfg, self.opened.engine
        if cfg.api == "pubmed":
            handlers: pubmed.PubMedHandlers | ctgov.CtgovHandlers = pubmed.PubMedHandlers(engine, executor, self.opened.dataset.name)
            hooks = ApiHooks(pubmed.rate_key, pubmed.too_many_requests, pubmed.server_error, rate_headers=True)
        else:
            handlers = ctgov.CtgovHandlers(engine, executor, self.opened.dataset)
            hooks = ApiHooks(ctgov.rate_key, ctgov.too_many_requests, ctgov.server_error, rate_headers=False)
        pipeline = make_pipeline(hooks, rate_limits(cfg), FaultInjector(cfg.faults), index_version=engine.index.version,
                                 hang_s=cfg.faults.hang_s, retry_after_s=cfg.faults.retry_after_s, stats=self.stats,
                                 tracer=self._tracer)
        app = web.Application(middlewares=[pipeline])
        app.add_routes(handlers.routes())

        async def stats(_: web.Request) -> web.Response:
            return web.json_response(self.stats.to_json())

        app.add_routes([web.get(STATS_PATH, stats)])
        return app

    async def start(self) -> str:
        """Bind and serve; returns the base URL."""
        self._executor = ThreadPoolExecutor(self.cfg.search_threads, thread_name_prefix=f"emulate-{self.cfg.api}")
        self._runner = web.AppRunner(self.build_app(self._executor), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.cfg.host, self.cfg.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()
        log.info("%s emulator over %s (index %s) at %s", self.cfg.api, self.opened.dataset.name, self.opened.engine.index.version, self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Stop listening, cancel requests still in flight (hangs), release the threads."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


@asynccontextmanager
async def run_emulator(cfg: EmulatorConfig, paths: PathsConfig, *, opened: OpenedIndex | None = None,
                       tracer: trace.Tracer | None = None) -> AsyncIterator[EmulatorServer]:
    """Serve `cfg` in this event loop for the duration of the block.

    Args:
        cfg: the emulator settings (`port=0` picks a free port).
        paths: where the data set and indexes are.
        opened: an already opened index to share; None opens (and closes) one here.
        tracer: one SERVER span per request when given.

    Yields:
        The started server; `server.base_url` is the client's base URL.
    """
    own = opened is None
    if opened is None:
        opened = await asyncio.get_running_loop().run_in_executor(None, open_index, cfg, paths)
    server = EmulatorServer(cfg, opened, tracer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        if own:
            opened.engine.close()


class BackgroundEmulator:
    """An `EmulatorServer` running in its own thread and event loop, for synchronous callers.

    Args:
        cfg: the emulator settings.
        opened: the opened index (shared, not closed here).
        tracer: one SERVER span per request when given.
    """

    def __init__(self, cfg: EmulatorConfig, opened: OpenedIndex, tracer: trace.Tracer | None = None):
        self.server = EmulatorServer(cfg, opened, tracer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"emulator-{cfg.api}", daemon=True)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the thread and the server; returns the base URL once it listens."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout_s)

    async def _shutdown(self) -> None:
        await self.server.stop()
        # Requests still hanging (fault injection) outlive the runner's grace period: end them here.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server, cancel what is still in flight, then stop the loop and thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        self._loop.close()


def serve(cfg: EmulatorConfig, paths: PathsConfig, on_ready: Callable[[EmulatorServer], None],
          tracer: trace.Tracer | None = None) -> None:
    """Blocking main of `deepretrieval emulate`: serve until SIGINT or SIGTERM.

    Args:
        cfg: the emulator settings.
        paths: data root and index folder.
        on_ready: called once the server listens (the CLI prints the base URL).
        tracer: one SERVER span per request when given.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, open_index, cfg, paths)
        # After the JVM has started: it installs its own SIGINT/SIGTERM handlers, which would
        # exit the process without letting the server close.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with run_emulator(cfg, paths, opened=opened, tracer=tracer) as server:
                on_ready(server)
                await stop.wait()
        finally:
            opened.engine.close()
        log.info("%s emulator stopped", cfg.api)

    asyncio.run(main())
