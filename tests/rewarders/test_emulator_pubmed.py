"""The PubMed E-utilities emulator over real HTTP and a real SciFact Lucene index."""

import json
import re

from emulator_http import all_ids, count, esearch, http

from deepretrieval.common.datasets import BeirDataset


def test_and_narrows_or_widens_not_excludes(pubmed_url):
    cancer, mortality = all_ids(pubmed_url, "cancer"), all_ids(pubmed_url, "mortality")
    assert len(cancer) > 100 and len(mortality) > 100
    assert all_ids(pubmed_url, "cancer AND mortality") == cancer & mortality
    assert all_ids(pubmed_url, "cancer OR mortality") == cancer | mortality
    assert all_ids(pubmed_url, "cancer NOT mortality") == cancer - mortality
    assert 0 < len(cancer & mortality) < len(cancer)


def test_operators_apply_left_to_right_and_parentheses_override(pubmed_url):
    left_to_right = all_ids(pubmed_url, "cancer OR heart AND mortality")
    assert left_to_right == all_ids(pubmed_url, "(cancer OR heart) AND mortality")
    assert left_to_right == (all_ids(pubmed_url, "cancer") | all_ids(pubmed_url, "heart")) & all_ids(pubmed_url, "mortality")
    grouped = all_ids(pubmed_url, "cancer OR (heart AND mortality)")
    assert grouped != left_to_right and all_ids(pubmed_url, "cancer") <= grouped


def test_adjacent_terms_are_anded(pubmed_url):
    assert all_ids(pubmed_url, "stem cells") == all_ids(pubmed_url, "stem AND cells")


def test_phrase_is_stricter_than_its_words(pubmed_url):
    phrase, words = all_ids(pubmed_url, '"stem cells"'), all_ids(pubmed_url, "stem cells")
    assert phrase < words and len(phrase) > 50


def test_title_tag_searches_titles_only(pubmed_url, emu_index):
    titled, anywhere = all_ids(pubmed_url, "cancer[ti]"), all_ids(pubmed_url, "cancer[tiab]")
    assert titled < anywhere and len(titled) > 50
    assert anywhere == all_ids(pubmed_url, "cancer") == all_ids(pubmed_url, "cancer[All Fields]") == all_ids(pubmed_url, "cancer[mh]")
    docs = {d.doc_id: d for d in emu_index.dataset.iter_corpus()}
    assert all(re.search(r"cancer", docs[i].title, re.I) for i in titled)


def test_long_natural_language_request_finds_far_less_than_its_words_ored(pubmed_url, data_root):
    queries, _ = BeirDataset.open("scifact", data_root).split_queries("test")
    request = queries["36"]  # "A deficiency of vitamin B12 increases blood levels of homocysteine."
    words = re.findall(r"[A-Za-z][A-Za-z0-9-]+", request)
    as_request, as_or = count(pubmed_url, request), count(pubmed_url, " OR ".join(words))
    assert as_request <= 5 and as_or >= 1000, (as_request, as_or)


def test_terms_absent_from_the_corpus_are_dropped_and_reported(pubmed_url):
    res = esearch(pubmed_url, "zzqxv cancer")
    assert res["count"] == str(count(pubmed_url, "cancer"))
    assert res["errorlist"] == {"phrasesnotfound": ["zzqxv"], "fieldsnotfound": []}
    assert res["querytranslation"] == '"cancer"[All Fields]'


def test_unknown_field_tag_is_reported_in_fieldsnotfound(pubmed_url):
    res = esearch(pubmed_url, "smith[au] AND cancer")
    assert res["errorlist"]["fieldsnotfound"] == ["au"]
    assert int(res["count"]) == count(pubmed_url, "cancer")


def test_quoted_phrase_not_found_matches_nothing_and_warns(pubmed_url):
    res = esearch(pubmed_url, '"homocysteine stem cells"')
    assert res["count"] == "0" and res["idlist"] == []
    assert res["warninglist"] == {"phrasesignored": [], "quotedphrasesnotfound": ['"homocysteine stem cells"'], "outputmessages": ["No items found."]}


def test_stopword_only_term_is_ignored(pubmed_url):
    res = esearch(pubmed_url, "the")
    assert res["count"] == "0"
    assert res["warninglist"]["phrasesignored"] == ["the"]


def test_unbalanced_syntax_is_repaired_with_a_message(pubmed_url):
    res = esearch(pubmed_url, "(cancer OR heart")
    assert int(res["count"]) == count(pubmed_url, "cancer OR heart")
    assert any("Unmatched '('" in m for m in res["warninglist"]["outputmessages"])


def test_empty_term_answers_the_real_error(pubmed_url):
    for term in ("", "   "):
        status, _, body = http("POST", f"{pubmed_url}/esearch.fcgi", data={"db": "pubmed", "term": term, "retmode": "json"})
        assert status == 200
        assert json.loads(body) == {"header": {"type": "esearch", "version": "0.3"}, "esearchresult": {"ERROR": "Empty term and query_key - nothing todo"}}


def test_unknown_db_answers_the_real_error(pubmed_url):
    status, _, body = http("GET", f"{pubmed_url}/esearch.fcgi", params={"db": "fleegle", "term": "cat", "retmode": "json"})
    assert status == 200 and json.loads(body)["esearchresult"] == {"ERROR": "Invalid db name specified: fleegle"}


def test_retmax_retstart_paging(pubmed_url):
    term = "cancer OR heart"
    full = esearch(pubmed_url, term, retmax="30")["idlist"]
    pages = [esearch(pubmed_url, term, retmax="10", retstart=str(s))["idlist"] for s in (0, 10, 20)]
    assert sum(pages, []) == full and len(set(full)) == 30
    default = esearch(pubmed_url, term)
    assert default["retmax"] == "20" and default["idlist"] == full[:20]
    total = int(default["count"])
    tail = esearch(pubmed_url, term, retmax="50", retstart=str(total - 5))
    assert tail["retmax"] == "5" and tail["retstart"] == str(total - 5)
    capped = esearch(pubmed_url, "cancer OR heart OR cell OR patients", retmax="20000")
    assert len(capped["idlist"]) == min(int(capped["count"]), 10000)
    assert "ERROR" in esearch(pubmed_url, term, retstart="9999")


def test_sort_relevance_is_accepted_and_unknown_sort_is_reported(pubmed_url):
    assert esearch(pubmed_url, "cancer", sort="relevance")["idlist"] == esearch(pubmed_url, "cancer")["idlist"]
    assert "Unknown sort schema 'bogus' ignored" in esearch(pubmed_url, "cancer", sort="bogus")["warninglist"]["outputmessages"]


def test_xml_is_the_default_retmode_and_both_paths_and_methods_work(pubmed_url):
    root = pubmed_url.removesuffix("/entrez/eutils")
    status, headers, body = http("GET", f"{root}/esearch.fcgi", params={"term": "cancer", "retmax": "3"})
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    ids = re.findall(r"<Id>(\d+)</Id>", body)
    assert re.search(r"<Count>(\d+)</Count>", body).group(1) == str(count(pubmed_url, "cancer"))
    assert ids == esearch(pubmed_url, "cancer", retmax="3")["idlist"]
    status, _, body = http("GET", f"{pubmed_url}/esearch.fcgi", params={"term": "", "retmode": "xml"})
    assert "<ERROR>Empty term and query_key - nothing todo</ERROR>" in body


def test_answers_carry_the_index_version(pubmed_url, emu_index):
    _, headers, body = http("GET", f"{pubmed_url}/einfo.fcgi", params={"db": "pubmed", "retmode": "json"})
    assert headers["X-Index-Version"] == emu_index.engine.index.version
    info = json.loads(body)["einforesult"]["dbinfo"][0]
    assert info["count"] == "5183" and info["lastupdate"] == emu_index.engine.index.version


def test_rate_limit_per_address_and_per_key(start_emulator):
    # 3 requests per 5 s window without a key, 10 with one (a wide window keeps a slow test machine inside it).
    url = start_emulator("pubmed", rate_limit_rps=0.6, rate_limit_rps_with_key=2.0, rate_limit_window_s=5.0)
    form = {"db": "pubmed", "term": "cancer", "retmode": "json", "retmax": "1"}
    statuses = [http("POST", f"{url}/esearch.fcgi", data=form)[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, headers, body = http("POST", f"{url}/esearch.fcgi", data=form)
    assert status == 429
    assert json.loads(body) == {"error": "API rate limit exceeded", "api-key": "127.0.0.1", "count": "4", "limit": "3"}
    assert 1 <= int(headers["Retry-After"]) <= 5 and headers["X-RateLimit-Limit"] == "3"
    keyed = [http("POST", f"{url}/esearch.fcgi", data={**form, "api_key": "k1"})[0] for _ in range(10)]
    assert keyed == [200] * 10
    status, _, body = http("POST", f"{url}/esearch.fcgi", data={**form, "api_key": "k1"})
    assert status == 429 and json.loads(body)["api-key"] == "k1" and json.loads(body)["limit"] == "10"


async def test_stats_endpoint_counts_answers_by_status(start_emulator):
    import aiohttp

    from deepretrieval.rewarders.emulators.middleware import STATS_PATH

    base_url = start_emulator("pubmed", rate_limit_rps=2.0)
    root = base_url.split("/entrez")[0]
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(4):
            async with s.get(f"{base_url}/esearch.fcgi", params={"db": "pubmed", "term": "cancer", "retmode": "json"}) as r:
                statuses.append(r.status)
        async with s.get(root + STATS_PATH) as r:
            stats = await r.json()
    assert stats["requests"] == 4
    assert stats["by_status"] == {str(code): statuses.count(code) for code in set(statuses)}
    assert statuses.count(429) >= 1  # 4 back-to-back requests against 2/s
