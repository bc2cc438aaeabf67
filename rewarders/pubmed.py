"""PubMed search backend: one E-utilities `esearch` per query (the real service or our emulator).

The request is a POST (long queries fit, and the API key stays out of URLs) of
`db=pubmed, term, retmax=k, retstart=0, sort=relevance, retmode=json`, plus
`datetype/mindate/maxdate` when a date bound is given (TASKS.md §3). Exactly one request per
call; the rewarder owns retries and the shared rate limiter.

Outcomes: HTTP 429 -> RateLimited (Retry-After honoured when sent); 5xx, timeouts, connection
errors, unparseable or truncated bodies, and service-side ERRORs that are not the query's fault
-> BackendUnavailable; an ERROR caused by the term (empty term) -> QuerySyntaxError.
PubMed's own warnings (terms not found, unknown field tags, repaired syntax) are not errors: they
come back in `SearchResult.meta`.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from deepretrieval.common.config import ApiClientConfig
from deepretrieval.common.errors import BackendUnavailable, QuerySyntaxError, RateLimited
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.http_api import (INDEX_VERSION_HEADER, ServerVersion, decode_json, raise_for_transport_status,
                                              redact, send)

log = logging.getLogger(__name__)

RETMAX_MAX = 10_000
"""PubMed returns at most 10,000 ids per esearch."""
DEFAULT_MIN_DATE = "1970/01/01"
# ERROR texts that blame the term itself (the policy's fault, not the service's).
_QUERY_ERRORS = ("empty term",)


class PubMedClient:
    """SearchBackend over E-utilities esearch.

    Args:
        config: base URL (e.g. https://eutils.ncbi.nlm.nih.gov/entrez/eutils or an emulator's),
            API key source, timeout, and the version label used when the server names none.
        session: the process's shared aiohttp session (not closed here).
    """

    def __init__(self, config: ApiClientConfig, session: aiohttp.ClientSession):
        self._config = config
        self._session = session
        self._base = config.base_url.rstrip("/")
        self._key = config.resolved_api_key()
        self._version = ServerVersion("pubmed", self._base, config.version_label)

    @property
    def name(self) -> str:
        return "pubmed"

    @property
    def version(self) -> str:
        """Base URL plus the index version the server reported (X-Index-Version, einfo), else the label."""
        return self._version.value

    async def probe(self) -> str:
        """Ask `einfo` for pubmed's build/last update (one request) and return the new `version`.

        Raises:
            RateLimited, BackendUnavailable: as `search`.
        """
        url = f"{self._base}/einfo.fcgi"
        form = {"db": "pubmed", "retmode": "json"} | ({"api_key": self._key} if self._key else {})
        answer = await send(self._session, "POST", url, api="pubmed", timeout_s=self._config.timeout_s, data=form, secret=self._key)
        self._version.note(answer)
        raise_for_transport_status(answer, api="pubmed", url=url, secret=self._key)
        data = decode_json(answer, api="pubmed", url=url, secret=self._key)
        info = (data.get("einforesult") or {}).get("dbinfo") or [{}]
        if not answer.headers.get(INDEX_VERSION_HEADER) and isinstance(info, list) and info and info[0].get("lastupdate"):
            self._version.set(str(info[0]["lastupdate"]))
        return self.version

    async def search(self, query: str, k: int, *, max_date: str | None = None, min_date: str | None = None, date_type: str = "pdat") -> SearchResult:
        """Run one esearch and return up to `k` PMIDs, best first.

        Args:
            query: the PubMed term, sent as written.
            k: how many ids (capped at 10,000, PubMed's maximum).
            max_date: upper date bound (YYYY/MM/DD, YYYY/MM or YYYY); enables the date filter.
            min_date: lower bound; defaults to 1970/01/01 when only `max_date` is given.
            date_type: which date the bounds apply to (pdat = publication date).

        Returns:
            ids, total (`count`), http_status, and meta {querytranslation, errorlist, warninglist}.

        Raises:
            QuerySyntaxError: PubMed refused the term itself.
            RateLimited: HTTP 429 (or a rate-limit error body).
            BackendUnavailable: any other failure to answer.
        """
        url = f"{self._base}/esearch.fcgi"
        form = {"db": "pubmed", "term": query, "retmax": str(max(0, min(k, RETMAX_MAX))), "retstart": "0",
                "sort": "relevance", "retmode": "json"}
        if max_date or min_date:
            form |= {"datetype": date_type, "mindate": min_date or DEFAULT_MIN_DATE, "maxdate": max_date or "3000"}
        if self._key:
            form["api_key"] = self._key
        answer = await send(self._session, "POST", url, api="pubmed", timeout_s=self._config.timeout_s, data=form, secret=self._key)
        self._version.note(answer)
        raise_for_transport_status(answer, api="pubmed", url=url, secret=self._key)
        if answer.status != 200:
            raise BackendUnavailable(f"pubmed: HTTP {answer.status} from {url}; check base_url ({self._base})", http_status=answer.status)
        data = decode_json(answer, api="pubmed", url=url, secret=self._key)
        return self._result(data, answer.status, url)

    def _result(self, data: dict[str, Any], status: int, url: str) -> SearchResult:
        if "esearchresult" not in data:
            message = redact(str(data.get("error") or data)[:200], self._key)
            if "rate limit" in message.lower():
                raise RateLimited(f"pubmed: {message}", http_status=status)
            raise BackendUnavailable(f"pubmed: answer from {url} has no esearchresult: {message}", http_status=status)
        res = data["esearchresult"]
        if not isinstance(res, dict):
            raise BackendUnavailable(f"pubmed: esearchresult from {url} is not an object", http_status=status)
        if "ERROR" in res:
            error = redact(str(res["ERROR"]), self._key)
            if any(marker in error.lower() for marker in _QUERY_ERRORS):
                raise QuerySyntaxError(f"pubmed refused the term: {error}", http_status=status)
            raise BackendUnavailable(f"pubmed: service error from {url}: {error}", http_status=status)
        try:
            ids = [str(i) for i in res["idlist"]]
            total = int(res["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise BackendUnavailable(f"pubmed: esearchresult from {url} lacks a valid idlist/count ({type(e).__name__}: {e})",
                                     http_status=status) from e
        meta: dict[str, object] = {"querytranslation": res.get("querytranslation", "")}
        for section in ("errorlist", "warninglist"):
            if res.get(section):
                meta[section] = res[section]
        return SearchResult(ids=ids, total=total, http_status=status, meta=meta)

    async def close(self) -> None:
        """Nothing to release: the session belongs to the caller."""
