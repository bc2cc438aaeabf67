"""`trace summary` on a small hand-built trace file; expected values are worked out by hand below."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from deepretrieval.common import trace_names as names
from deepretrieval.common.errors import TraceFileError
from deepretrieval.common.trace_file import read_trace_file
from deepretrieval.common.trace_summary import percentile, summarize_file
from deepretrieval.deploy.cli import main

T0 = 1_790_000_000_000_000_000  # ns since the epoch; every time below is seconds after it


def _span(name: str, trace: str, span: str, start_s: float, end_s: float, *, parent: str | None = None, status: str = "UNSET",
          attrs: dict | None = None, links: tuple[tuple[str, str], ...] = ()) -> dict:
    """A span record as the exporter writes it; trace ids are one letter x 32, span ids two characters x 8."""
    return {"name": name, "trace_id": trace * 32, "span_id": span * 8, "parent_id": parent * 8 if parent else None,
            "start": T0 + round(start_s * 1e9), "end": T0 + round(end_s * 1e9), "status": status, "attributes": attrs or {},
            "links": [{"trace_id": t * 32, "span_id": sp * 8} for t, sp in links], "resource": {"service.name": "test"}}


def _sample(trace: str, gen_end: float, reward: tuple[float, float], queue_wait: float, status: str) -> list[dict]:
    """rl.generate (span `<trace>0`, from 0 s) and its child rl.reward (span `<trace>1`)."""
    uid = {names.UID: f"uid-{trace}"}
    return [_span(names.GENERATE, trace, trace + "0", 0.0, gen_end, attrs=uid),
            _span(names.REWARD_SPAN, trace, trace + "1", *reward, parent=trace + "0",
                  attrs={**uid, names.QUEUE_WAIT_S: queue_wait, names.REWARD_STATUS: status})]


def _search(trace: str, backend: str, start_s: float, end_s: float, *, status: str = "UNSET", **attrs) -> dict:
    """rl.search.<backend> (span `<trace>2`), child of the sample's rl.reward."""
    return _span(names.search_span(backend), trace, trace + "2", start_s, end_s, parent=trace + "1", status=status,
                 attrs={names.UID: f"uid-{trace}", **attrs})


def _write_run(path: Path) -> Path:
    """Five samples:

    a: pubmed, 1 retry after a 429, trained           generate 0-1, reward 1.5-3.0, search 1.6-2.6 (1.0 s)
    b: pubmed cache hit, never trained                generate 0-1, reward 1.2-2.2, search 1.3-1.5 (0.2 s)
    c: invalid format (no search), trained            generate 0-1, reward 1.1-1.2
    d: ctgov unavailable after 3 x 503, trained       generate 0-2, reward 2.0-4.0, search 2.1-3.6 (1.5 s)
    e: pubmed, first try, trained                     generate 0-1, reward 1.0-2.0, search 1.0-1.4 (0.4 s)
    """
    spans = [
        *_sample("a", 1.0, (1.5, 3.0), 0.5, "ok"),
        _search("a", "pubmed", 1.6, 2.6, **{names.CACHE_HIT: False, names.SEARCH_RETRIES: 1, names.SEARCH_API_LATENCY_S: 0.6,
                                            names.RATELIMIT_WAIT_S: 0.3, names.HTTP_STATUSES: [429, 200], names.HTTP_STATUS: 200}),
        # The emulator's server span under a's search: in a's trace, but neither a search nor a sample stage.
        _span("POST /entrez/eutils/esearch.fcgi", "a", "a9", 2.0, 2.5, parent="a2"),
        *_sample("b", 1.0, (1.2, 2.2), 0.2, "ok"),
        _search("b", "pubmed", 1.3, 1.5, **{names.CACHE_HIT: True, names.SEARCH_RETRIES: 0, names.SEARCH_API_LATENCY_S: 0.0,
                                            names.RATELIMIT_WAIT_S: 0.0}),
        *_sample("c", 1.0, (1.1, 1.2), 0.1, "invalid"),
        *_sample("d", 2.0, (2.0, 4.0), 0.0, "unavailable"),
        _search("d", "ctgov", 2.1, 3.6, status="ERROR", **{names.CACHE_HIT: False, names.SEARCH_RETRIES: 2, names.SEARCH_API_LATENCY_S: 0.9,
                                                         names.RATELIMIT_WAIT_S: 0.0, names.HTTP_STATUSES: [503, 503, 503]}),
        *_sample("e", 1.0, (1.0, 2.0), 0.3, "ok"),
        _search("e", "pubmed", 1.0, 1.4, **{names.CACHE_HIT: False, names.SEARCH_RETRIES: 0, names.SEARCH_API_LATENCY_S: 0.2,
                                            names.RATELIMIT_WAIT_S: 0.1, names.HTTP_STATUSES: [200]}),
        # The learner step that trained a, c, d, e: its own trace, linked to their rl.generate spans.
        _span(names.TRAIN, "f", "f0", 4.0, 5.0, links=(("a", "a0"), ("c", "c0"), ("d", "d0"), ("e", "e0"))),
    ]
    lines = [json.dumps(s) for s in spans]
    lines.insert(3, "")  # blank lines are not errors
    lines.insert(5, '{"name": "rl.reward", "trace_id": "cut short by a kill')  # line 6 of the file
    lines.insert(9, '{"name": "rl.reward"}')  # valid JSON, not a span: line 10
    path.write_text("\n".join(lines) + "\n")
    return path


def test_percentile_interpolates_between_nearest_ranks():
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # rank 1.5 between 2 and 3
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0 and percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_of_a_hand_built_run(tmp_path, caplog):
    path = _write_run(tmp_path / "traces.jsonl")
    with caplog.at_level(logging.WARNING):
        s = summarize_file(path)
    assert s.bad_lines == 2 and "line 6" in caplog.text and "skipped 2 malformed" in caplog.text
    assert s.spans == 16 and s.spans_by_name[names.GENERATE] == 5 and s.spans_by_name["POST /entrez/eutils/esearch.fcgi"] == 1

    # a, b, d, e searched; a, c, d, e trained; complete = searched and trained = a, d, e.
    t = s.traces
    assert (t.samples, t.generated, t.scored, t.searched, t.trained, t.complete) == (5, 5, 5, 4, 4, 3)
    assert s.reward_status == {"invalid": 1, "ok": 3, "unavailable": 1}

    # Queue waits sorted [0.0, 0.1, 0.2, 0.3, 0.5]: p50 at rank 2 = 0.2; p95 at rank 3.8 = 0.3 + 0.8 x 0.2 = 0.46;
    # p99 at rank 3.96 = 0.3 + 0.96 x 0.2 = 0.492.
    q = s.queue_wait_s
    assert q.n == 5 and q.p50 == pytest.approx(0.2) and q.p95 == pytest.approx(0.46) and q.p99 == pytest.approx(0.492)

    pm = s.backends["pubmed"]
    assert (pm.searches, pm.cache_hits, pm.retries, pm.searches_retried, pm.errors) == (3, 1, 1, 1, 0)
    assert pm.cache_hit_rate == pytest.approx(1 / 3)
    assert pm.http_status == {"200": 2, "429": 1}  # every attempt, the cache hit made none
    # API latency of the two searches that called the API, [0.2, 0.6]: p50 = 0.4, p95 = 0.2 + 0.95 x 0.4 = 0.58,
    # p99 = 0.2 + 0.99 x 0.4 = 0.596. Rate-limiter wait [0.1, 0.3]: 0.2, 0.29, 0.298.
    assert pm.api_latency_s.n == 2
    assert (pm.api_latency_s.p50, pm.api_latency_s.p95, pm.api_latency_s.p99) == pytest.approx((0.4, 0.58, 0.596))
    assert (pm.ratelimit_wait_s.p50, pm.ratelimit_wait_s.p95, pm.ratelimit_wait_s.p99) == pytest.approx((0.2, 0.29, 0.298))
    ct = s.backends["ctgov"]
    assert (ct.searches, ct.cache_hits, ct.retries, ct.errors, ct.http_status) == (1, 0, 2, 1, {"503": 3})
    assert ct.api_latency_s.p50 == ct.api_latency_s.p99 == pytest.approx(0.9)

    # Search time S / sample latency L (generate start -> last reward end), traces with a search:
    # a 1.0/3.0, b 0.2/2.2, d 1.5/4.0, e 0.4/2.0. Ratio of sums 3.1/11.2; median (0.2 + 1/3) / 2.
    share = s.api_wait_share
    assert share.traces == 4
    assert share.ratio_of_sums == pytest.approx(3.1 / 11.2)
    assert share.median == pytest.approx((0.2 + 1 / 3) / 2)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    path = _write_run(tmp_path / "traces.jsonl")
    out = tmp_path / "summary.json"
    assert main(["trace", "summary", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "complete (generate+reward+search+train): 3" in text and "429:1" in text and "503:3" in text
    data = json.loads(out.read_text())
    assert data["traces"]["complete"] == 3 and data["backends"]["pubmed"]["http_status"] == {"200": 2, "429": 1}
    assert data["api_wait_share"]["ratio_of_sums"] == pytest.approx(3.1 / 11.2)


def test_missing_empty_and_unreadable_files_are_clear_errors(tmp_path, capsys):
    with pytest.raises(TraceFileError, match="does not exist"):
        read_trace_file(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(TraceFileError, match="is empty"):
        read_trace_file(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('[1, 2]\n{"name": "x", "trace_id": "t", "span_id": "s", "start": 5, "end": 1}\n')
    with pytest.raises(TraceFileError, match=r"all 2 line\(s\) are malformed \(first: line 1: not a JSON object"):
        read_trace_file(tmp_path / "bad.jsonl")
    assert main(["trace", "summary", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
