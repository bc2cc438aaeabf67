"""Read a JSON-lines trace file (what `telemetry.JsonLinesSpanExporter` writes) back into spans.

Lines that are not a span record (a line cut short by a killed process, stray text) are counted
and skipped with one warning naming the first bad line; a missing file, an empty one, or one
without a single valid span is a `TraceFileError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepretrieval.common.errors import TraceFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpanLink:
    """A link from one span to another span (possibly in another trace)."""

    trace_id: str
    span_id: str


@dataclass(frozen=True)
class SpanRecord:
    """One finished span as written to the trace file.

    Args:
        name: span name (`rl.generate`, `rl.search.pubmed`, ...).
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent_id: the parent span's id, None for a root span.
        start_ns: start, in ns since the epoch.
        end_ns: end, in ns since the epoch.
        status: OpenTelemetry status code name (UNSET, OK, ERROR).
        attributes: the span's attributes.
        links: the spans this one links to.
    """

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    status: str
    attributes: Mapping[str, Any]
    links: tuple[SpanLink, ...] = ()

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class TraceFile:
    """The valid spans of a trace file and what was skipped.

    Args:
        path: the file read.
        spans: its valid span records, in file order.
        bad_lines: lines that were not a span record (skipped).
        first_bad: 1-based number and reason of the first bad line, None when none.
    """

    path: Path
    spans: list[SpanRecord]
    bad_lines: int = 0
    first_bad: tuple[int, str] | None = None


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _ns(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"field {key!r} must be a time in ns (an integer >= 0), got {value!r}")
    return value


def parse_span(obj: object) -> SpanRecord:
    """A span record from one decoded JSON line.

    Raises:
        ValueError: `obj` is not a span record (the message names the field).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object but a {type(obj).__name__}")
    start, end = _ns(obj, "start"), _ns(obj, "end")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    attributes = obj.get("attributes") or {}
    links = obj.get("links") or []
    parent = obj.get("parent_id")
    if not isinstance(attributes, dict) or not isinstance(links, list) or not (parent is None or isinstance(parent, str)):
        raise ValueError("attributes must be an object, links a list and parent_id a string or null")
    try:
        span_links = tuple(SpanLink(_str(lk, "trace_id"), _str(lk, "span_id")) for lk in links)
    except (TypeError, AttributeError) as e:
        raise ValueError(f"links must be objects with trace_id and span_id: {e}") from e
    return SpanRecord(name=_str(obj, "name"), trace_id=_str(obj, "trace_id"), span_id=_str(obj, "span_id"), parent_id=parent,
                      start_ns=start, end_ns=end, status=str(obj.get("status", "UNSET")), attributes=attributes, links=span_links)


def read_trace_file(path: Path) -> TraceFile:
    """Read every span of a JSON-lines trace file; blank lines are ignored, bad ones skipped.

    Args:
        path: the trace file (e.g. runs/<run>/traces.jsonl).

    Returns:
        The valid spans, with the count and first of the skipped lines (also logged as a warning).

    Raises:
        TraceFileError: the file does not exist, is empty, or has no valid span.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceFileError(f"trace file {path} does not exist (training writes runs/<run>/traces.jsonl, or the --trace-file path)")
    spans: list[SpanRecord] = []
    bad = 0
    first_bad: tuple[int, str] | None = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                spans.append(parse_span(json.loads(line)))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                bad += 1
                if first_bad is None:
                    first_bad = (number, str(e))
    if not spans and first_bad is None:
        raise TraceFileError(f"trace file {path} is empty: no spans were written (spans are flushed about every 0.5 s and at process exit)")
    if not spans:
        raise TraceFileError(f"trace file {path} has no valid span: all {bad} line(s) are malformed (first: line {first_bad[0]}: {first_bad[1]})")  # type: ignore[index]
    if first_bad is not None:
        log.warning("%s: skipped %d malformed line(s); first: line %d: %s", path, bad, first_bad[0], first_bad[1])
    return TraceFile(path, spans, bad, first_bad)
