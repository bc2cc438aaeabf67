"""Emulated ClinicalTrials.gov API v2: `GET /api/v2/studies` (and `/api/v2/version`) from a Lucene index.

Parameters: `query.term` (Essie syntax, `ctgov_query.py`), `query.cond`, `query.intr`,
`query.outc` (searched in title + text), `query.titles` (title field); several `query.*` are
ANDed; none returns every study. `pageSize` (default 10, 1..1000), `pageToken` (opaque; the
following request must repeat the other parameters), `countTotal` (true|false), `fields`
(comma- or pipe-separated piece names or paths: NCTId, BriefTitle, OfficialTitle, BriefSummary,
IdentificationModule, DescriptionModule, protocolSection, hasResults, or dotted paths such as
`protocolSection.identificationModule.nctId`), `format=json`, `markupFormat`, `sort=@relevance`.
Results are ranked by BM25. Other documented parameters (filters, geo, CSV, other sorts) answer
400 "not supported by this emulator"; undocumented ones answer 400 "`x` is unknown parameter"
as the live service does. Document ids stand for NCT ids; the BEIR title is both briefTitle and
officialTitle, the BEIR text is descriptionModule.briefSummary.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import threading
from concurrent.futures import Executor
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from deepretrieval.common.datasets import BeirDataset, Document
from deepretrieval.rewarders.emulators.ctgov_query import EssieSyntaxError, parse_essie
from deepretrieval.rewarders.emulators.lucene_search import LuceneEngine, SearchBackendError
from deepretrieval.rewarders.emulators.query_ast import CONTENTS, TITLE, MatchAll, Node, make_and, prune
from deepretrieval.rewarders.emulators.server_rate_limit import RateDecision

PAGE_SIZE_DEFAULT = 10
PAGE_SIZE_MAX = 1000
API_VERSION = "2.0.3-emulated"
# query parameter -> (Lucene field, search-area name used in error messages)
_QUERIES = {"query.term": (CONTENTS, "Other terms"), "query.cond": (CONTENTS, "Condition/disease"),
            "query.intr": (CONTENTS, "Intervention/treatment"), "query.outc": (CONTENTS, "Outcome measure"),
            "query.titles": (TITLE, "Title / Acronym")}
_PAGING = {"pageSize", "pageToken", "countTotal"}
_ACCEPTED = set(_QUERIES) | _PAGING | {"fields", "format", "markupFormat", "sort"}
_UNSUPPORTED = {"query.locn", "query.spons", "query.lead", "query.id", "query.patient", "filter.overallStatus",
                "filter.geo", "filter.ids", "filter.advanced", "filter.synonyms", "postFilter.overallStatus",
                "postFilter.geo", "postFilter.ids", "postFilter.advanced", "postFilter.synonyms", "aggFilters", "geoDecay"}
_PIECES = {"nctid": ("protocolSection", "identificationModule", "nctId"),
           "brieftitle": ("protocolSection", "identificationModule", "briefTitle"),
           "officialtitle": ("protocolSection", "identificationModule", "officialTitle"),
           "briefsummary": ("protocolSection", "descriptionModule", "briefSummary"),
           "identificationmodule": ("protocolSection", "identificationModule"),
           "descriptionmodule": ("protocolSection", "descriptionModule"),
           "protocolsection": ("protocolSection",), "hasresults": ("hasResults",)}
_PATHS = {".".join(p): p for p in _PIECES.values()}


class BadRequest(ValueError):
    """A parameter the service would refuse; the message is the 400 body."""


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


def too_many_requests(decision: RateDecision, key: str) -> web.Response:
    """429 with a plain-text body (the service documents no body; the status is what matters)."""
    return _text(429, f"Too many requests from {key}: {decision.count} in the current window, limit {decision.limit}. Retry later.")


def server_error(status: int) -> web.Response:
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    return _text(status, reason)


async def rate_key(request: web.Request) -> tuple[str, bool]:
    """ClinicalTrials.gov has no API keys: the limit is per client address."""
    return request.remote or "unknown", False


def parse_fields(raw: str | None) -> list[tuple[str, ...]] | None:
    """Study paths selected by `fields`; None = the whole study.

    Raises:
        BadRequest: a name that is neither a known piece nor a known path.
    """
    if raw is None or not raw.strip():
        return None
    out = []
    for name in (n.strip() for n in raw.replace("|", ",").split(",")):
        if not name:
            continue
        path = _PIECES.get(name.lower()) or _PATHS.get(name)
        if path is None:
            raise BadRequest(f"`fields` contains unknown field or path: {name} (this emulator knows: NCTId, BriefTitle, OfficialTitle, BriefSummary, IdentificationModule, DescriptionModule, protocolSection, hasResults)")
        out.append(path)
    return out or None


def study_record(doc: Document) -> dict[str, Any]:
    """A whole study as the API shapes it, from a BEIR document."""
    return {"protocolSection": {"identificationModule": {"nctId": doc.doc_id, "briefTitle": doc.title, "officialTitle": doc.title},
                                "descriptionModule": {"briefSummary": doc.text}},
            "hasResults": False}


def project(record: dict[str, Any], paths: list[tuple[str, ...]] | None) -> dict[str, Any]:
    """Keep only `paths` of `record` (all of it when None)."""
    if paths is None:
        return record
    out: dict[str, Any] = {}
    for path in paths:
        src: Any = record
        for key in path:
            src = src[key]
        dst = out
        for key in path[:-1]:
            dst = dst.setdefault(key, {})
        dst[path[-1]] = copy.deepcopy(src)
    return out


def _query_fingerprint(params: MultiDictProxy[str]) -> str:
    items = sorted((k, v) for k, v in params.items() if k not in _PAGING)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


def encode_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, fingerprint]).encode()).decode().rstrip("=")


def decode_token(token: str, fingerprint: str) -> int:
    """The offset a `pageToken` stands for.

    Raises:
        BadRequest: not one of ours, or issued for other query parameters.
    """
    try:
        offset, fp = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(offset)
    except (ValueError, TypeError):
        raise BadRequest(f"`pageToken` is invalid: {token}") from None
    if fp != fingerprint or offset < 0:
        raise BadRequest("`pageToken` does not belong to this query: repeat the first page's parameters (except pageSize, pageToken, countTotal)")
    return offset


class CtgovHandlers:
    """The API v2 endpoints over one index.

    Args:
        engine: the Lucene engine of the served corpus.
        executor: where the blocking searches run.
        dataset: the corpus, read (once, lazily) when studies need more than their id.
    """

    def __init__(self, engine: LuceneEngine, executor: Executor, dataset: BeirDataset):
        self.engine = engine
        self.executor = executor
        self.dataset = dataset
        self._docs: dict[str, Document] | None = None
        self._docs_lock = threading.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v2/studies", self.studies), web.get("/api/v2/version", self.version)]

    async def version(self, request: web.Request) -> web.Response:
        """API version and data timestamp (here: the index version)."""
        body = {"apiVersion": API_VERSION, "dataTimestamp": self.engine.index.version}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def studies(self, request: web.Request) -> web.Response:
        """One page of studies matching the query parameters."""
        params = request.query
        try:
            tree, page_size, offset, count_total, paths, fingerprint = self._read(params)
        except (BadRequest, EssieSyntaxError) as e:
            return _text(400, str(e))
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.executor, self._page, tree, offset, page_size, count_total, paths, fingerprint)
        except SearchBackendError as e:
            return _text(500, f"Search failed: {e}")
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    def _read(self, params: MultiDictProxy[str]) -> tuple[Node | None, int, int, bool, list[tuple[str, ...]] | None, str]:
        for name in params:
            if name in _UNSUPPORTED:
                raise BadRequest(f"`{name}` is not supported by this emulator")
            if name not in _ACCEPTED:
                raise BadRequest(f"`{name}` is unknown parameter")
        fmt = params.get("format", "json")
        if fmt != "json":
            raise BadRequest(f"`format` {fmt} is not supported by this emulator (json only)")
        sort = params.get("sort", "@relevance")
        if sort not in ("@relevance", "@relevance:desc"):
            raise BadRequest(f"`sort` {sort} is not supported by this emulator (@relevance only)")
        raw_size = params.get("pageSize", str(PAGE_SIZE_DEFAULT))
        if not raw_size.strip().isdigit() or not 1 <= int(raw_size) <= PAGE_SIZE_MAX:
            raise BadRequest(f"`pageSize` must be an integer between 1 and {PAGE_SIZE_MAX}, got {raw_size}")
        count_raw = params.get("countTotal", "false").lower()
        if count_raw not in ("true", "false"):
            raise BadRequest(f"`countTotal` must be true or false, got {params.get('countTotal')}")
        tree: Node | None = None
        for name, (field, where) in _QUERIES.items():
            for expr in params.getall(name, []):
                node = parse_essie(expr, field=field, where=where)
                if node is not None:
                    tree = node if tree is None else make_and(tree, node)
        fingerprint = _query_fingerprint(params)
        token = params.get("pageToken")
        offset = decode_token(token, fingerprint) if token else 0
        return tree if tree is not None else MatchAll(), int(raw_size), offset, count_raw == "true", parse_fields(params.get("fields")), fingerprint

    def _page(self, tree: Node, offset: int, page_size: int, count_total: bool, paths: list[tuple[str, ...]] | None, fingerprint: str) -> dict[str, Any]:
        """Blocking: search and shape one page."""
        pruned, _ = prune(tree, self.engine.term_status, drop_not_found=False)
        hits = self.engine.search(pruned, offset, page_size)
        only_ids = paths == [_PIECES["nctid"]]
        studies = [project(study_record(Document(i, "", "")) if only_ids else study_record(self._doc(i)), paths) for i in hits.ids]
        body: dict[str, Any] = {}
        if count_total:
            body["totalCount"] = hits.total
        body["studies"] = studies
        if offset + len(hits.ids) < hits.total:
            body["nextPageToken"] = encode_token(offset + len(hits.ids), fingerprint)
        return body

    def _doc(self, doc_id: str) -> Document:
        if self._docs is None:
            with self._docs_lock:
                if self._docs is None:
                    self._docs = {d.doc_id: d for d in self.dataset.iter_corpus()}
        return self._docs.get(doc_id) or Document(doc_id, "", "")
