"""One OpenTelemetry set-up for every process, plus W3C trace-context carriage on the wire.

`setup_tracing` builds a TracerProvider from the standard `OTEL_*` environment variables (an OTLP
exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_TRACES_EXPORTER=otlp` is set) and, for local
runs, a JSON-lines file of finished spans. Nothing is configured at import time: `main()` calls it.
Spans are named for the stage of a sample's life: rl.generate, rl.reward, rl.search.<backend>, rl.train.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "deepretrieval"
_PROPAGATOR = TraceContextTextMapPropagator()


def span_record(span: ReadableSpan) -> dict[str, object]:
    """A finished span as a flat JSON-able record (ids as hex, times in ns since the epoch)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": format(lk.context.trace_id, "032x"), "span_id": format(lk.context.span_id, "016x")} for lk in span.links],
        "resource": {k: v for k, v in span.resource.attributes.items() if k in ("service.name", "process.pid")},
    }


class JsonLinesSpanExporter(SpanExporter):
    """Append finished spans to a file, one JSON object per line (safe for several processes: O_APPEND)."""

    def __init__(self, path: Path):
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def otlp_requested() -> bool:
    """Whether the standard OTEL_* environment asks for an OTLP exporter (endpoint or exporter list)."""
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "")
    return "otlp" in exporters.split(",") or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service_name: str, trace_file: Path | None = None, exporters: Sequence[SpanExporter] = ()) -> TracerProvider:
    """Install a TracerProvider for this process and return it.

    Args:
        service_name: `service.name` resource attribute (OTEL_SERVICE_NAME wins when set).
        trace_file: write finished spans here as JSON lines (local runs, `trace summary`).
        exporters: extra exporters (tests pass an in-memory one), exported synchronously.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name), "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    if trace_file is not None:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(trace_file), schedule_delay_millis=500))
    if otlp_requested():
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    for exp in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exp))
    trace.set_tracer_provider(provider)
    return provider


def get_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """The project's tracer from `provider` (or the global one, a no-op until setup_tracing)."""
    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


def inject_context(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """The current (or given) span context as W3C headers: {"traceparent": ..., "tracestate": ...}."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier


def extract_context(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """A context whose parent is the W3C `traceparent` carried on the wire (empty when None)."""
    carrier = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
    return _PROPAGATOR.extract(carrier)


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Flush and stop exporters (call at process exit)."""
    if provider is not None:
        provider.force_flush()
        provider.shutdown()
