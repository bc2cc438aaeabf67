"""The ClinicalTrials.gov API v2 emulator: Essie parsing, then real HTTP over a real SciFact index."""

import json

import pytest
from emulator_http import http

from deepretrieval.common.config import EmulatorConfig
from deepretrieval.rewarders.emulators.ctgov_query import EssieSyntaxError, parse_essie
from deepretrieval.rewarders.emulators.process import EmulatorProcess
from deepretrieval.rewarders.emulators.query_ast import TITLE, And, Not, Or, Term


def t(text: str, **kw) -> Term:
    return Term(text=text, label=kw.pop("label", "Other terms"), **kw)


def test_essie_precedence_is_not_then_and_then_or():
    # Unlike PubMed's left-to-right rule: a OR b AND c is a OR (b AND c).
    assert parse_essie("a OR b AND c") == Or((t("a"), And((t("b"), t("c")))))
    assert parse_essie("a NOT b") == And((t("a"), Not(t("b"))))
    assert parse_essie("a AND NOT b OR c") == Or((And((t("a"), Not(t("b")))), t("c")))
    assert parse_essie("(a OR b) c") == And((Or((t("a"), t("b"))), t("c")))


def test_essie_comma_and_juxtaposition_are_and_and_quotes_make_phrases():
    assert parse_essie('heart attack, "blood pressure"') == And((t("heart"), t("attack"), t("blood pressure", quoted=True)))


def test_essie_area_restricts_the_field():
    assert parse_essie("AREA[BriefTitle]cancer OR cell") == Or((t("cancer", field=TITLE), t("cell")))
    assert parse_essie("") is None and parse_essie("  ") is None


@pytest.mark.parametrize("expr, fragment", [
    ("cancer AND", "mismatched input '<EOF>'"),
    ("(cancer OR cell", "missing ')'"),
    ("cancer)", "extraneous input ')'"),
    ('"open phrase', "token recognition error"),
    ("diabetes [type 2]", "mismatched input '['"),
    ("AREA[Nope]x", "unknown search area"),
    ("SEARCH[Location](AREA[LocationCity]Boston)", "not supported by this emulator"),
])
def test_essie_syntax_errors_read_like_the_service(expr, fragment):
    with pytest.raises(EssieSyntaxError, match="^Error parsing query in Other terms: ") as err:
        parse_essie(expr)
    assert fragment in str(err.value)


def studies(base_url: str, **params: str) -> dict:
    status, _, body = http("GET", f"{base_url}/studies", params=params)
    assert status == 200, body
    return json.loads(body)


def nct_ids(page: dict) -> list[str]:
    return [s["protocolSection"]["identificationModule"]["nctId"] for s in page["studies"]]


def test_paging_with_page_token_until_exhausted(ctgov_url):
    first = studies(ctgov_url, **{"query.term": "stem cells", "pageSize": "100", "countTotal": "true"})
    total = first["totalCount"]
    assert 300 < total < 1000
    pages, page = [first], first
    while "nextPageToken" in page:
        page = studies(ctgov_url, **{"query.term": "stem cells", "pageSize": "100", "pageToken": page["nextPageToken"]})
        pages.append(page)
    ids = [i for p in pages for i in nct_ids(p)]
    assert len(pages) == -(-total // 100) and len(ids) == total == len(set(ids))
    assert ids == nct_ids(studies(ctgov_url, **{"query.term": "stem cells", "pageSize": "1000"}))
    assert "totalCount" not in pages[1]


def test_page_token_must_come_with_the_same_query(ctgov_url):
    token = studies(ctgov_url, **{"query.term": "stem cells", "pageSize": "5"})["nextPageToken"]
    status, _, body = http("GET", f"{ctgov_url}/studies", params={"query.term": "cancer", "pageToken": token})
    assert status == 400 and "pageToken" in body


def test_boolean_semantics(ctgov_url):
    def ids(q: str) -> set[str]:
        out, page = set(), {"nextPageToken": ""}
        while "nextPageToken" in page:
            token = {"pageToken": page["nextPageToken"]} if page["nextPageToken"] else {}
            page = studies(ctgov_url, **{"query.term": q, "pageSize": "1000", **token})
            out |= set(nct_ids(page))
        return out

    cancer, mortality, heart = ids("cancer"), ids("mortality"), ids("heart")
    assert ids("cancer AND mortality") == cancer & mortality == ids("cancer, mortality") == ids("cancer mortality")
    assert ids("cancer OR mortality") == cancer | mortality
    assert ids("cancer NOT mortality") == ids("cancer AND NOT mortality") == cancer - mortality
    assert ids("heart OR cancer AND mortality") == heart | (cancer & mortality)
    assert ids('"stem cells"') < ids("stem cells")
    assert ids("AREA[TitleSearch]cancer") < cancer


def test_no_query_returns_every_study(ctgov_url, emu_index):
    page = studies(ctgov_url, countTotal="true", pageSize="3")
    assert page["totalCount"] == emu_index.engine.num_docs == 5183 and len(page["studies"]) == 3


def test_fields_select_what_each_study_contains(ctgov_url, emu_index):
    docs = {d.doc_id: d for d in emu_index.dataset.iter_corpus()}
    only_id = studies(ctgov_url, **{"query.term": "cancer", "pageSize": "2", "fields": "NCTId"})["studies"]
    assert all(s == {"protocolSection": {"identificationModule": {"nctId": s["protocolSection"]["identificationModule"]["nctId"]}}} for s in only_id)
    titled = studies(ctgov_url, **{"query.term": "cancer", "pageSize": "2", "fields": "protocolSection.identificationModule.nctId|BriefTitle,OfficialTitle"})["studies"]
    for s in titled:
        ident = s["protocolSection"]["identificationModule"]
        assert set(ident) == {"nctId", "briefTitle", "officialTitle"} and ident["briefTitle"] == docs[ident["nctId"]].title
    full = studies(ctgov_url, **{"query.term": "cancer", "pageSize": "1"})["studies"][0]
    nct = full["protocolSection"]["identificationModule"]["nctId"]
    assert full["protocolSection"]["descriptionModule"]["briefSummary"] == docs[nct].text and full["hasResults"] is False


@pytest.mark.parametrize("params, fragment", [
    ({"pageSize": "1001"}, "`pageSize` must be an integer between 1 and 1000"),
    ({"pageSize": "0"}, "`pageSize`"),
    ({"pageSize": "ten"}, "`pageSize`"),
    ({"countTotal": "maybe"}, "`countTotal`"),
    ({"fields": "NCTId,Bogus"}, "unknown field or path: Bogus"),
    ({"filter.phase": "PHASE3"}, "`filter.phase` is unknown parameter"),
    ({"filter.overallStatus": "RECRUITING"}, "not supported by this emulator"),
    ({"format": "csv"}, "not supported by this emulator"),
    ({"query.term": "cancer AND (cell"}, "Error parsing query in Other terms: missing ')'"),
    ({"pageToken": "garbage!"}, "`pageToken` is invalid"),
])
def test_bad_parameters_answer_400_with_a_reason(ctgov_url, params, fragment):
    status, headers, body = http("GET", f"{ctgov_url}/studies", params=params)
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert fragment in body


def test_version_endpoint_reports_the_index(ctgov_url, emu_index):
    status, headers, body = http("GET", f"{ctgov_url}/version")
    assert status == 200 and json.loads(body)["dataTimestamp"] == emu_index.engine.index.version == headers["X-Index-Version"]


def test_rate_limit_per_address(start_emulator):
    url = start_emulator("ctgov", rate_limit_rps=0.6, rate_limit_window_s=5.0)  # 3 per 5 s
    statuses = [http("GET", f"{url}/studies", params={"query.term": "cancer", "pageSize": "1"})[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_cli_serves_in_a_subprocess(emu_paths):
    cfg = EmulatorConfig(api="ctgov", dataset="scifact", port=0, rate_limit=False)
    with EmulatorProcess(cfg, emu_paths) as base_url:
        page = studies(base_url, **{"query.term": "cancer", "pageSize": "5", "countTotal": "true"})
        assert len(page["studies"]) == 5 and page["totalCount"] > 5
