"""ClinicalTrials.gov search backend: API v2 `/studies`, following `nextPageToken` until k ids.

Each page is one GET of `query.term=<query>&pageSize=min(k,1000)&fields=NCTId&format=json`
(the first also asks `countTotal=true`); the id is `protocolSection.identificationModule.nctId`.
One request per page and no retries (the rewarder owns retries and the shared rate limiter): a
failed page fails the whole call.

Outcomes: HTTP 429 -> RateLimited; 5xx, timeouts, connection errors, unparseable bodies, paging
that does not end -> BackendUnavailable; HTTP 400 "Error parsing query ..." -> QuerySyntaxError
(other 400s are a client/config problem -> BackendUnavailable).
"""

from __future__ import annotations

import math

import aiohttp

from deepretrieval.common.config import ApiClientConfig
from deepretrieval.common.errors import BackendUnavailable, QuerySyntaxError
from deepretrieval.rewarders.base import SearchResult
from deepretrieval.rewarders.http_api import (INDEX_VERSION_HEADER, ServerVersion, decode_json, raise_for_transport_status,
                                              send, snippet)

PAGE_SIZE_MAX = 1000
_EXTRA_PAGES = 5
"""Pages beyond ceil(k / pageSize) tolerated (the API may return empty pages) before giving up."""


class CtgovClient:
    """SearchBackend over ClinicalTrials.gov API v2.

    Args:
        config: base URL (https://clinicaltrials.gov/api/v2 or an emulator's), timeout, and the
            version label used when the server names none. ClinicalTrials.gov has no API keys.
        session: the process's shared aiohttp session (not closed here).
    """

    def __init__(self, config: ApiClientConfig, session: aiohttp.ClientSession):
        self._config = config
        self._session = session
        self._base = config.base_url.rstrip("/")
        self._version = ServerVersion("ctgov", self._base, config.version_label)

    @property
    def name(self) -> str:
        return "ctgov"

    @property
    def version(self) -> str:
        """Base URL plus the data version the server reported (X-Index-Version, /version), else the label."""
        return self._version.value

    async def probe(self) -> str:
        """Ask `/version` for the data timestamp (one request) and return the new `version`.

        Raises:
            RateLimited, BackendUnavailable: as `search`.
        """
        url = f"{self._base}/version"
        answer = await send(self._session, "GET", url, api="ctgov", timeout_s=self._config.timeout_s)
        self._version.note(answer)
        raise_for_transport_status(answer, api="ctgov", url=url, secret=None)
        data = decode_json(answer, api="ctgov", url=url, secret=None)
        if not answer.headers.get(INDEX_VERSION_HEADER) and data.get("dataTimestamp"):
            self._version.set(str(data["dataTimestamp"]))
        return self.version

    async def search(self, query: str, k: int) -> SearchResult:
        """Return up to `k` NCT ids for an Essie expression, best first.

        Args:
            query: the `query.term` expression, sent as written.
            k: how many ids; pages of min(k, 1000) are fetched until k ids or the last page.

        Returns:
            ids, total (`totalCount`), http_status of the last page, meta {pages}.

        Raises:
            QuerySyntaxError: the service could not parse the expression.
            RateLimited: HTTP 429 on any page.
            BackendUnavailable: any other failure to answer.
        """
        url = f"{self._base}/studies"
        if k <= 0:
            return SearchResult(ids=[])
        page_size = min(k, PAGE_SIZE_MAX)
        ids: list[str] = []
        total: int | None = None
        token: str | None = None
        status = 0
        max_pages = math.ceil(k / page_size) + _EXTRA_PAGES
        for page in range(1, max_pages + 1):
            params = {"query.term": query, "pageSize": str(page_size), "fields": "NCTId", "format": "json"}
            params |= {"pageToken": token} if token else {"countTotal": "true"}
            answer = await send(self._session, "GET", url, api="ctgov", timeout_s=self._config.timeout_s, params=params)
            self._version.note(answer)
            status = answer.status
            raise_for_transport_status(answer, api="ctgov", url=url, secret=None)
            if status == 400:
                text = answer.body.decode("utf-8", errors="replace")
                if text.startswith("Error parsing query"):
                    raise QuerySyntaxError(f"ctgov could not parse the query: {text[:300]}", http_status=status)
                raise BackendUnavailable(f"ctgov: HTTP 400 from {url}: {snippet(answer.body, None)}", http_status=status)
            if status != 200:
                raise BackendUnavailable(f"ctgov: HTTP {status} from {url}: {snippet(answer.body, None)}", http_status=status)
            data = decode_json(answer, api="ctgov", url=url, secret=None)
            try:
                ids.extend(str(s["protocolSection"]["identificationModule"]["nctId"]) for s in data["studies"])
                if total is None and "totalCount" in data:
                    total = int(data["totalCount"])
            except (KeyError, TypeError, ValueError) as e:
                raise BackendUnavailable(f"ctgov: page {page} from {url} is not a studies page ({type(e).__name__}: {e})",
                                         http_status=status) from e
            token = data.get("nextPageToken")
            if len(ids) >= k or not token:
                return SearchResult(ids=ids[:k], total=total, http_status=status, meta={"pages": page})
        raise BackendUnavailable(f"ctgov: paging for {k} ids did not end after {max_pages} pages of {page_size}")

    async def close(self) -> None:
        """Nothing to release: the session belongs to the caller."""
