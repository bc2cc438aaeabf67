"""Protocols of the rewarder side: the search backends rewards come from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SearchResult:
    """A ranked answer of a search backend.

    Args:
        ids: document ids (PMIDs, NCT ids, BEIR doc ids, or SQL result rows serialised), best first.
        scores: one score per id (higher is better); empty where the backend has none.
        total: how many documents matched in all (the API's `count`), when known.
        http_status: the last HTTP status seen, for HTTP backends.
        retries: how many times the request was retried before this answer.
        meta: backend-specific extras (e.g. the query translation, warnings).
    """

    ids: list[str]
    scores: list[float] = field(default_factory=list)
    total: int | None = None
    http_status: int | None = None
    retries: int = 0
    meta: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class SearchBackend(Protocol):
    """A search engine or retriever a query can be run against.

    `name` and `version` together identify the index answered from, so cached results are
    never served across index rebuilds.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    async def search(self, query: str, k: int) -> SearchResult:
        """Run `query` and return at most `k` ranked ids.

        Raises:
            QuerySyntaxError: the query is not valid in the engine's language (the policy's fault).
            BackendUnavailable: the engine could not answer (not the policy's fault).
        """
        ...

    async def close(self) -> None:
        """Release connections, JVM searchers, file handles."""
        ...
