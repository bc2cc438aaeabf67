"""PubMed and ClinicalTrials.gov clients against the emulators: results, errors, faults, timeouts."""

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from emulator_http import esearch, http

from deepretrieval.common.config import ApiClientConfig
from deepretrieval.common.errors import BackendUnavailable, QuerySyntaxError, RateLimited
from deepretrieval.rewarders.base import SearchBackend, SearchResult
from deepretrieval.rewarders.ctgov import CtgovClient
from deepretrieval.rewarders.pubmed import PubMedClient

Client = PubMedClient | CtgovClient


def call(make: Callable[[aiohttp.ClientSession], Client], action: Callable[[Client], Awaitable[Any]]) -> tuple[Any, Client]:
    """Run one client action in a fresh event loop with a fresh session; returns (result, client)."""

    async def main() -> tuple[Any, Client]:
        async with aiohttp.ClientSession() as session:
            client = make(session)
            return await action(client), client

    return asyncio.run(main())


def pubmed(base_url: str, **cfg: Any) -> Callable[[aiohttp.ClientSession], PubMedClient]:
    return lambda session: PubMedClient(ApiClientConfig(base_url=base_url, **cfg), session)


def ctgov(base_url: str, **cfg: Any) -> Callable[[aiohttp.ClientSession], CtgovClient]:
    return lambda session: CtgovClient(ApiClientConfig(base_url=base_url, **cfg), session)


def search(query: str, k: int) -> Callable[[Client], Awaitable[SearchResult]]:
    return lambda client: client.search(query, k)


def test_clients_satisfy_the_search_backend_protocol(pubmed_url, ctgov_url):
    (_, pm), (_, ct) = call(pubmed(pubmed_url), lambda c: asyncio.sleep(0)), call(ctgov(ctgov_url), lambda c: asyncio.sleep(0))
    assert isinstance(pm, SearchBackend) and isinstance(ct, SearchBackend)
    assert (pm.name, ct.name) == ("pubmed", "ctgov")


def test_pubmed_search_returns_the_esearch_ids_and_learns_the_index_version(pubmed_url, emu_index):
    result, client = call(pubmed(pubmed_url, version_label="unknown"), search("cancer OR heart", 50))
    raw = esearch(pubmed_url, "cancer OR heart", retmax="50", sort="relevance")
    assert result.ids == raw["idlist"] and result.total == int(raw["count"]) and result.http_status == 200
    assert result.meta["querytranslation"] == raw["querytranslation"]
    assert client.version == f"pubmed@{pubmed_url}#{emu_index.engine.index.version}"
    probed, _ = call(pubmed(pubmed_url, version_label="unknown"), lambda c: c.probe())
    assert probed == client.version


def test_pubmed_reports_warnings_in_meta_and_accepts_date_bounds(pubmed_url):
    result, _ = call(pubmed(pubmed_url), lambda c: c.search("zzqxv cancer", 5, max_date="2020/01/01"))
    assert len(result.ids) == 5 and result.meta["errorlist"]["phrasesnotfound"] == ["zzqxv"]


def test_pubmed_empty_term_is_a_query_syntax_error(pubmed_url):
    with pytest.raises(QuerySyntaxError, match="Empty term"):
        call(pubmed(pubmed_url), search("  ", 10))


def test_ctgov_search_follows_page_tokens_until_k(ctgov_url, emu_index):
    result, client = call(ctgov(ctgov_url), search("cell OR cells OR patients", 1500))
    assert result.meta["pages"] == 2 and len(result.ids) == 1500 == len(set(result.ids))
    assert result.total > 1500 and result.http_status == 200
    _, _, body = http("GET", f"{ctgov_url}/studies", params={"query.term": "cell OR cells OR patients", "pageSize": "1000", "fields": "NCTId"})
    assert result.ids[:1000] == [s["protocolSection"]["identificationModule"]["nctId"] for s in json.loads(body)["studies"]]
    small, _ = call(ctgov(ctgov_url), search("stem cells", 3000))
    assert len(small.ids) == small.total < 3000 and small.meta["pages"] == 1
    assert client.version.endswith(emu_index.engine.index.version)


def test_ctgov_unparseable_query_is_a_query_syntax_error(ctgov_url):
    with pytest.raises(QuerySyntaxError, match="Error parsing query"):
        call(ctgov(ctgov_url), search("cancer AND (cell", 10))


def test_server_rate_limit_is_rate_limited_with_retry_after_and_the_key_redacted(start_emulator):
    url = start_emulator("pubmed", rate_limit_rps=0.6, rate_limit_rps_with_key=0.6, rate_limit_window_s=5.0)
    key = "sekret-key-123"

    async def hammer(client: PubMedClient) -> RateLimited:
        for _ in range(3):
            await client.search("cancer", 1)
        with pytest.raises(RateLimited) as err:
            await client.search("cancer", 1)
        return err.value

    err, _ = call(pubmed(url, api_key=key), hammer)
    assert err.retry_after_s is not None and 1 <= err.retry_after_s <= 5
    assert key not in str(err) and "***" in str(err)


@pytest.mark.parametrize("api", ["pubmed", "ctgov"])
def test_injected_5xx_is_backend_unavailable(start_emulator, api):
    url = start_emulator(api, rate_limit=False, faults={"error_5xx_rate": 1.0})
    make = pubmed(url) if api == "pubmed" else ctgov(url)
    with pytest.raises(BackendUnavailable, match=r"HTTP 50[023]") as err:
        call(make, search("cancer", 5))
    assert not isinstance(err.value, RateLimited)


@pytest.mark.parametrize("api", ["pubmed", "ctgov"])
def test_injected_429_burst_is_rate_limited_with_its_retry_after(start_emulator, api):
    url = start_emulator(api, rate_limit=False, faults={"burst_429_rate": 1.0, "burst_429_len": 3, "retry_after_s": 7})
    make = pubmed(url) if api == "pubmed" else ctgov(url)
    with pytest.raises(RateLimited) as err:
        call(make, search("cancer", 5))
    assert err.value.retry_after_s == 7.0


@pytest.mark.parametrize("api", ["pubmed", "ctgov"])
def test_truncated_or_garbage_bodies_are_backend_unavailable(start_emulator, api):
    url = start_emulator(api, rate_limit=False, faults={"garbage_rate": 1.0, "seed": 3})
    make = pubmed(url) if api == "pubmed" else ctgov(url)

    async def several(client: Client) -> list[str]:
        messages = []
        for _ in range(6):  # the seeded draws give both kinds: a body cut in half and an HTML page
            with pytest.raises(BackendUnavailable, match="unparseable answer") as err:
                await client.search("cancer", 5)
            messages.append(str(err.value))
        return messages

    messages, _ = call(make, several)
    assert any("<html>" in m for m in messages) and any("<html>" not in m for m in messages)


def test_hanging_request_times_out_on_the_client(start_emulator):
    url = start_emulator("pubmed", rate_limit=False, faults={"hang_rate": 1.0, "hang_s": 30.0})
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable, match=r"within 0.5 s"):
        call(pubmed(url, timeout_s=0.5), search("cancer", 5))
    assert time.perf_counter() - t0 < 5.0


def test_latency_is_added_and_the_answer_still_arrives(start_emulator):
    url = start_emulator("ctgov", rate_limit=False, faults={"latency_ms": 300.0})
    t0 = time.perf_counter()
    result, _ = call(ctgov(url), search("cancer", 5))
    assert len(result.ids) == 5 and time.perf_counter() - t0 >= 0.3


def test_unreachable_server_is_backend_unavailable():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        call(pubmed(f"http://127.0.0.1:{port}/entrez/eutils", timeout_s=5), search("cancer", 5))
