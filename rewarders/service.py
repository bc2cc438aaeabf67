"""Wire one rewarder process from config: backends, limiter, cache, transport, tracing.

`RewarderService` owns every resource of the process (Redis clients, the aiohttp session, JVM
searchers) and closes them in `close()`. `run_rewarder_process` is the entry point of a rewarder
OS process (the launcher's Ray actor and the tests' subprocesses call it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import aiohttp
from pydantic import Field

from deepretrieval.common.backend_config import BackendSpec
from deepretrieval.common.config import PathsConfig, StrictModel
from deepretrieval.common.config_pipeline import RewardCacheConfig, TransportConfig
from deepretrieval.common.errors import ConfigError
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.run_config import RetryConfig, RewarderConfig, TaskRunConfig
from deepretrieval.common.streams import RedisStreamTransport, redis_client
from deepretrieval.common.tasks import get_task
from deepretrieval.common.telemetry import get_tracer, setup_tracing, shutdown_tracing
from deepretrieval.rewarders.backend_factory import API_BACKENDS, open_backend
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.rate_limiter import RateLimiter
from deepretrieval.rewarders.resilient_search import ResilientSearch
from deepretrieval.rewarders.reward_cache import RewardCache
from deepretrieval.rewarders.rewarder import Rewarder, RewarderStats, TaskRuntime

log = logging.getLogger(__name__)


class RewarderServiceConfig(StrictModel):
    """Everything one rewarder process needs."""

    run: str = Field(description="Run name: prefix of the run's Redis streams and keys.")
    prompt_files: list[Path] = Field(min_length=1, description="Prepared prompt JSONL files (`deepretrieval data prepare`) whose uids rollouts refer to.")
    tasks: list[TaskRunConfig] = Field(min_length=1, description="Tasks of the run and their backends.")
    transport: TransportConfig = Field(default_factory=TransportConfig, description="Redis Streams transport (url must be set here).")
    cache: RewardCacheConfig = Field(default_factory=RewardCacheConfig, description="Search result cache.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries before `unavailable`.")
    rewarder: RewarderConfig = Field(default_factory=RewarderConfig, description="Concurrency and reads.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Data root and index folder.")
    trace_file: Path | None = Field(None, description="Write finished spans here as JSON lines.")
    consumer: str | None = Field(None, description="Consumer name in the stream group; None = host-pid.")


class RewarderService:
    """The resources of one rewarder process, built from its config."""

    def __init__(self, config: RewarderServiceConfig, tracer=None):
        if config.transport.url is None:
            raise ConfigError("transport.url must be set for a rewarder process (the launcher passes its Redis URL)")
        self.config = config
        self._tracer = tracer or get_tracer()
        self._redis = redis_client(config.transport.url)
        self.transport = RedisStreamTransport(self._redis, config.transport)
        self.cache = RewardCache(self._redis, config.cache) if config.cache.enabled else None
        self._session: aiohttp.ClientSession | None = None
        self._backends: list[SearchBackend] = []
        self.prompts = PromptBook.from_files(config.prompt_files)

    async def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def build_backend(self, spec: BackendSpec) -> tuple[SearchBackend, RateLimiter | None, str | None]:
        """A backend for `spec`, with its limiter and quota key (None for local engines)."""
        session = await self._session_() if spec.type in API_BACKENDS else None
        return await open_backend(spec, self.config.paths, redis=self._redis, session=session)

    async def task_runtimes(self) -> dict[str, TaskRuntime]:
        """Task name -> runtime, each backend wrapped in the resilient search (limits, retries, cache)."""
        tracer = self._tracer
        out: dict[str, TaskRuntime] = {}
        for t in self.config.tasks:
            spec = get_task(t.task, t.overrides)
            backend, limiter, key = await self.build_backend(t.backend)
            self._backends.append(backend)
            resilient = ResilientSearch(backend, self.config.retry, limiter=limiter, limiter_key=key,
                                        cache=self.cache if t.backend.type != "sql" else None, cache_kind=t.backend.type, tracer=tracer)
            # The sql task scores by executing both the predicted and the gold SQL itself.
            runtime_backend = backend if t.backend.type == "sql" else resilient
            k = t.k or spec.k_train or 0
            passages = None
            if spec.reward.type == "answer_rank" and hasattr(backend, "doc_text"):
                passages = _LazyPassages(backend)
            out[spec.name] = TaskRuntime(spec, runtime_backend, k, passages)
        return out

    async def rewarder(self) -> Rewarder:
        return Rewarder(self.transport, self.config.run, self.prompts, await self.task_runtimes(), self.config.rewarder,
                        consumer=self.config.consumer, tracer=self._tracer)

    async def close(self) -> None:
        for b in self._backends:
            await b.close()
        if self._session is not None:
            await self._session.close()
        await self.transport.close()
        await self._redis.aclose()


class _LazyPassages(dict):
    """doc id -> text, read from the index's stored documents on first use (qa answer checks)."""

    def __init__(self, backend: object):
        super().__init__()
        self._backend = backend

    def __missing__(self, doc_id: str) -> str:
        text = self._backend.doc_text(doc_id) or ""  # type: ignore[attr-defined]
        self[doc_id] = text
        return text

    def get(self, doc_id: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self[doc_id]


async def serve_rewarder(config: RewarderServiceConfig, stop: asyncio.Event, max_samples: int | None = None, tracer=None) -> RewarderStats:
    """Run one rewarder until `stop` is set; closes every resource it opened."""
    service = RewarderService(config, tracer)
    try:
        rewarder = await service.rewarder()
        return await rewarder.run(stop, max_samples=max_samples)
    finally:
        await service.close()


def run_rewarder_process(config_json: str) -> None:
    """Entry point of a rewarder OS process: SIGTERM/SIGINT stop it after in-flight work is acked."""
    config = RewarderServiceConfig.model_validate_json(config_json)
    provider = setup_tracing("deepretrieval-rewarder", config.trace_file)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stats = await serve_rewarder(config, stop)
        log.info("rewarder %s stopped: %s", config.consumer, stats)

    try:
        asyncio.run(main())
    finally:
        shutdown_tracing(provider)
