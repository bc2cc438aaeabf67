"""Plain HTTP helpers for the emulator tests (real requests over loopback, no client code under test)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


async def _fetch(method: str, url: str, params: dict[str, str] | None, data: dict[str, str] | None) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, params=params, data=data, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            return resp.status, dict(resp.headers), await resp.text()


def http(method: str, url: str, *, params: dict[str, str] | None = None, data: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One real HTTP request (status, headers, body text)."""
    return asyncio.run(_fetch(method, url, params, data))


def esearch(base_url: str, term: str, **params: str) -> dict[str, Any]:
    """The `esearchresult` of a JSON esearch (POST), asserting HTTP 200."""
    status, _, body = http("POST", f"{base_url}/esearch.fcgi", data={"db": "pubmed", "term": term, "retmode": "json", **params})
    assert status == 200, body
    return json.loads(body)["esearchresult"]


def count(base_url: str, term: str) -> int:
    return int(esearch(base_url, term, retmax="0")["count"])


def all_ids(base_url: str, term: str) -> set[str]:
    return set(esearch(base_url, term, retmax="10000")["idlist"])
