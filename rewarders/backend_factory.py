"""Open the search backend a `BackendSpec` names: the one factory the rewarders and the serving endpoint share.

Local engines (Lucene BM25, FAISS, SQLite) need only the paths; the HTTP APIs (PubMed,
ClinicalTrials.gov) also need the process's aiohttp session and the Redis their cluster-wide rate
limiter counts in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deepretrieval.common.backend_config import (
    BackendSpec,
    CtgovBackendSpec,
    DenseBackendSpec,
    LuceneBackendSpec,
    PubMedBackendSpec,
    SqlBackendSpec,
)
from deepretrieval.common.config import PathsConfig
from deepretrieval.common.datasets import BeirDataset, resolve_dataset
from deepretrieval.common.errors import ConfigError, DeepRetrievalError
from deepretrieval.rewarders.base import SearchBackend
from deepretrieval.rewarders.rate_limiter import RateLimiter

if TYPE_CHECKING:
    import aiohttp
    from redis import asyncio as aredis

log = logging.getLogger(__name__)

API_BACKENDS: frozenset[str] = frozenset({"pubmed", "ctgov"})
"""Backend types that are remote HTTP APIs (need a session and a Redis for the shared quota)."""


def quota_key(spec: PubMedBackendSpec | CtgovBackendSpec) -> str:
    """The key an API's quota is counted under."""
    key = spec.client.resolved_api_key()
    # The quota is per API key (or per client IP without one): processes sharing a key share a bucket.
    return f"{spec.type}:{spec.client.base_url}:{key or 'no-key'}"


async def open_backend(spec: BackendSpec, paths: PathsConfig, *, redis: aredis.Redis | None = None,
                       session: aiohttp.ClientSession | None = None) -> tuple[SearchBackend, RateLimiter | None, str | None]:
    """A backend for `spec`, with its rate limiter and quota key (both None for local engines).

    Args:
        spec: which backend.
        paths: data root (data sets, SQLite files) and index folder (built there when missing).
        redis: the Redis the API rate limiter counts in; required for pubmed/ctgov.
        session: the process's aiohttp session; required for pubmed/ctgov.

    Raises:
        ConfigError: an API backend without a session or Redis, or a sql data set without a database.
    """
    if isinstance(spec, LuceneBackendSpec):
        from deepretrieval.rewarders.batching import MicroBatcher
        from deepretrieval.rewarders.retrieval import open_retriever

        bm25 = open_retriever(BeirDataset.open(spec.dataset, paths.data_root), paths.index_dir, "bm25", bm25=spec.bm25)
        backend: SearchBackend = MicroBatcher(bm25, spec.batch_window_ms / 1000) if spec.batch_window_ms > 0 else bm25
        return backend, None, None
    if isinstance(spec, DenseBackendSpec):
        from deepretrieval.rewarders.retrieval import open_retriever

        return open_retriever(BeirDataset.open(spec.dataset, paths.data_root), paths.index_dir, "dense", dense=spec.dense), None, None
    if isinstance(spec, SqlBackendSpec):
        from deepretrieval.rewarders.sql_backend import SqlBackend

        db = spec.database or next(resolve_dataset(spec.dataset, paths.data_root).glob("*.sqlite"), None)
        if db is None:
            raise ConfigError(f"sql backend: no .sqlite file in data set {spec.dataset!r}; set backend.database")
        return SqlBackend(Path(db), spec.sql), None, None
    if session is None or redis is None:
        raise ConfigError(f"backend {spec.type!r} is an HTTP API: it needs an aiohttp session and a Redis for its shared rate limit "
                          f"(got session={'set' if session else None}, redis={'set' if redis else None})")
    if isinstance(spec, PubMedBackendSpec):
        from deepretrieval.rewarders.pubmed import PubMedClient

        client: SearchBackend = PubMedClient(spec.client, session)
    else:
        from deepretrieval.rewarders.ctgov import CtgovClient

        client = CtgovClient(spec.client, session)
    limiter = RateLimiter.from_config(redis, spec.rate_limit)
    key = quota_key(spec)
    try:
        await limiter.acquire(key)  # the probe counts against the shared quota too
        await client.probe()  # learn the index version before the first cache key is made
    except DeepRetrievalError as e:
        log.warning("%s: version probe failed (%s); using the configured version label", spec.type, e)
    return client, limiter, key
