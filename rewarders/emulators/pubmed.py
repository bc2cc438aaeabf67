"""Emulated NCBI E-utilities: `esearch.fcgi` (and `einfo.fcgi`) answering from a Lucene index.

Served at `/esearch.fcgi` and `/entrez/eutils/esearch.fcgi`, GET or POST, so a base URL like
`http://127.0.0.1:PORT/entrez/eutils` works as the real one does. Parameters: `db` (only pubmed;
others get PubMed's "Invalid db name specified" ERROR), `term` (syntax: `pubmed_query.py`),
`field`, `retmax` (default 20, at most 10000), `retstart` (at most 9998, as PubMed), `retmode`
(`xml`, the real default, or `json`), `rettype=count`, `sort` (relevance, pub_date, author,
journal, title, most+recent are accepted and all rank by BM25; others are reported as ignored),
`api_key` (raises the rate limit; any non-empty key is accepted), `tool`/`email`/`usehistory`
(ignored). `datetype`/`mindate`/`maxdate`/`reldate` are accepted and ignored: BEIR documents
carry no dates. Document ids stand for PMIDs.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from deepretrieval.rewarders.emulators.lucene_search import LuceneEngine, SearchBackendError
from deepretrieval.rewarders.emulators.pubmed_query import EMPTY_TERM_ERROR, EmptyTermError, ParsedTerm, parse_term, render_translation
from deepretrieval.rewarders.emulators.query_ast import prune
from deepretrieval.rewarders.emulators.server_rate_limit import RateDecision

RETMAX_DEFAULT = 20
RETMAX_MAX = 10_000
RETSTART_MAX = 9998
_KNOWN_SORTS = {"relevance", "pub_date", "pub+date", "pub date", "author", "journal", "title", "most+recent", "most recent", "first+author", "last+author", "pubdate"}
_HEADER = {"type": "esearch", "version": "0.3"}
_JSON_TYPE = "application/json"
_XML_TYPE = "text/xml"
_EINFO_XML = {"dbname": "DbName", "menuname": "MenuName", "description": "Description", "dbbuild": "DbBuild", "count": "Count", "lastupdate": "LastUpdate"}
_XML_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" ?>\n'
    '<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
    '"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
)


async def request_params(request: web.Request) -> MultiDictProxy[str] | MultiDict[str]:
    """Query-string and form parameters together (E-utilities accept both)."""
    if request.method != "POST":
        return request.query
    form = await request.post()
    merged: MultiDict[str] = MultiDict(request.query)
    for key, value in form.items():
        if isinstance(value, str):
            merged[key] = value
    return merged


async def rate_key(request: web.Request) -> tuple[str, bool]:
    """NCBI limits per API key, else per client address."""
    params = await request_params(request)
    key = (params.get("api_key") or "").strip()
    return (key, True) if key else (request.remote or "unknown", False)


def too_many_requests(decision: RateDecision, key: str) -> web.Response:
    """NCBI's 429 body: the key (or address), the requests counted and the limit."""
    body = {"error": "API rate limit exceeded", "api-key": key, "count": str(decision.count), "limit": str(decision.limit)}
    return web.Response(status=429, body=json.dumps(body).encode(), content_type=_JSON_TYPE)


def server_error(status: int) -> web.Response:
    """An HTML error page, like NCBI's front end sends for 5xx."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    html = f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"
    return web.Response(status=status, text=html, content_type="text/html")


def _answer(result: dict[str, Any], retmode: str) -> web.Response:
    if retmode == "json":
        return web.Response(body=json.dumps({"header": _HEADER, "esearchresult": result}).encode(), content_type=_JSON_TYPE)
    return web.Response(text=_XML_HEAD + _to_xml(result), content_type=_XML_TYPE)


def _to_xml(r: dict[str, Any]) -> str:
    if "ERROR" in r:
        return f"<eSearchResult><ERROR>{escape(r['ERROR'])}</ERROR></eSearchResult>\n"
    parts = [f"<Count>{r['count']}</Count>"]
    if "retmax" in r:
        ids = "".join(f"<Id>{i}</Id>\n" for i in r["idlist"])
        parts += [f"<RetMax>{r['retmax']}</RetMax>", f"<RetStart>{r['retstart']}</RetStart>", f"<IdList>\n{ids}</IdList>",
                  "<TranslationSet/>", f"<QueryTranslation>{escape(r['querytranslation'])}</QueryTranslation>"]
    tags = {"phrasesnotfound": "PhraseNotFound", "fieldsnotfound": "FieldNotFound", "phrasesignored": "PhraseIgnored",
            "quotedphrasesnotfound": "QuotedPhraseNotFound", "outputmessages": "OutputMessage"}
    for section, xml_name in (("errorlist", "ErrorList"), ("warninglist", "WarningList")):
        if section in r:
            inner = "".join(f"<{tags[k]}>{escape(v)}</{tags[k]}>" for k, vs in r[section].items() for v in vs)
            parts.append(f"<{xml_name}>{inner}</{xml_name}>")
    return "<eSearchResult>" + "".join(parts) + "</eSearchResult>\n"


def _error(message: str, retmode: str) -> web.Response:
    return _answer({"ERROR": message}, retmode)


def _int_param(params: MultiDictProxy[str] | MultiDict[str], name: str, default: int) -> int | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return None


class PubMedHandlers:
    """The E-utilities endpoints over one index.

    Args:
        engine: the Lucene engine of the served corpus.
        executor: where the blocking searches run.
        dataset: the corpus name, shown by einfo.
    """

    def __init__(self, engine: LuceneEngine, executor: Executor, dataset: str):
        self.engine = engine
        self.executor = executor
        self.dataset = dataset

    def routes(self) -> list[web.RouteDef]:
        """esearch and einfo, with and without the /entrez/eutils prefix, GET and POST."""
        out = []
        for prefix in ("", "/entrez/eutils"):
            for method in ("GET", "POST"):
                out.append(web.route(method, f"{prefix}/esearch.fcgi", self.esearch))
                out.append(web.route(method, f"{prefix}/einfo.fcgi", self.einfo))
        return out

    async def esearch(self, request: web.Request) -> web.Response:
        """Search the corpus; answers 200 with results or with PubMed's ERROR object."""
        params = await request_params(request)
        retmode = "json" if (params.get("retmode") or "").strip().lower() == "json" else "xml"
        db = (params.get("db") or "pubmed").strip().lower()
        if db != "pubmed":
            return _error(f"Invalid db name specified: {db}", retmode)
        retstart = _int_param(params, "retstart", 0)
        retmax = _int_param(params, "retmax", RETMAX_DEFAULT)
        if retstart is None or retmax is None:
            bad = "retstart" if retstart is None else "retmax"
            return _error(f"Invalid {bad} value: {params.get(bad)}", retmode)
        retstart, retmax = max(0, retstart), min(max(0, retmax), RETMAX_MAX)
        if retstart > RETSTART_MAX:
            return _error(
                f"Search Backend failed: Exception:\n'retstart' cannot be larger than {RETSTART_MAX}. "
                "For PubMed, ESearch can only retrieve the first 9,999 records matching the query.", retmode)
        try:
            parsed = parse_term(params.get("term") or "", field_tag=params.get("field"))
        except EmptyTermError:
            return _error(EMPTY_TERM_ERROR, retmode)
        sort = (params.get("sort") or "").strip()
        if sort and sort.lower() not in _KNOWN_SORTS:
            parsed.messages.append(f"Unknown sort schema '{sort}' ignored")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, self._search, parsed, retstart, retmax)
        except SearchBackendError as e:
            return _error(f"Search Backend failed: {e}", retmode)
        if (params.get("rettype") or "").strip().lower() == "count":
            result = {"count": result["count"]}
        return _answer(result, retmode)

    def _search(self, parsed: ParsedTerm, retstart: int, retmax: int) -> dict[str, Any]:
        """Blocking: prune, search, and shape `esearchresult`."""
        tree, report = (None, None) if parsed.tree is None else prune(parsed.tree, self.engine.term_status, drop_not_found=True)
        hits = self.engine.search(tree, retstart, retmax)
        result: dict[str, Any] = {
            "count": str(hits.total), "retmax": str(len(hits.ids)), "retstart": str(retstart),
            "idlist": hits.ids, "translationset": [], "querytranslation": render_translation(tree),
        }
        not_found = report.not_found if report else []
        if not_found or parsed.fields_not_found:
            result["errorlist"] = {"phrasesnotfound": not_found, "fieldsnotfound": parsed.fields_not_found}
        messages = list(parsed.messages) + (["No items found."] if hits.total == 0 else [])
        ignored = report.ignored if report else []
        quoted = report.quoted_not_found if report else []
        if ignored or quoted or messages:
            result["warninglist"] = {"phrasesignored": ignored, "quotedphrasesnotfound": quoted, "outputmessages": messages}
        return result

    async def einfo(self, request: web.Request) -> web.Response:
        """Database list, or pubmed's record count and build (the index version) with db=pubmed."""
        params = await request_params(request)
        db = (params.get("db") or "").strip().lower()
        header = {"type": "einfo", "version": "0.3"}
        version = self.engine.index.version
        if not db:
            body: dict[str, Any] = {"header": header, "einforesult": {"dblist": ["pubmed"]}}
        elif db != "pubmed":
            body = {"header": header, "einforesult": {"ERROR": f"Invalid db name specified: {db}"}}
        else:
            body = {"header": header, "einforesult": {"dbinfo": [{
                "dbname": "pubmed", "menuname": "PubMed", "description": f"PubMed emulated over {self.dataset}",
                "dbbuild": version, "count": str(self.engine.num_docs), "lastupdate": version}]}}
        if (params.get("retmode") or "").strip().lower() == "json":
            return web.Response(body=json.dumps(body).encode(), content_type=_JSON_TYPE)
        info = body["einforesult"]
        if "dbinfo" in info:
            d = info["dbinfo"][0]
            inner = "".join(f"<{_EINFO_XML[k]}>{escape(v)}</{_EINFO_XML[k]}>" for k, v in d.items())
            xml = f"<eInfoResult><DbInfo>{inner}</DbInfo></eInfoResult>"
        elif "dblist" in info:
            xml = "<eInfoResult><DbList><DbName>pubmed</DbName></DbList></eInfoResult>"
        else:
            xml = f"<eInfoResult><ERROR>{escape(info['ERROR'])}</ERROR></eInfoResult>"
        return web.Response(text='<?xml version="1.0" encoding="UTF-8" ?>\n' + xml + "\n", content_type=_XML_TYPE)
