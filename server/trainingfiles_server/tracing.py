"""OpenTelemetry traces: one per call, a span per build stage, database and storage
calls as child spans, the caller's trace context continued from the call's metadata.

Traces are exported over OTLP only when the standard variables ask for it
(`OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the exporter, sampler, batch processor and
resource read their other `OTEL_*` variables themselves. Otherwise tracing is off and
free: every place that would make a span checks `tracer()` first and makes nothing, so
the per-document path stays as it was.

The instrumentation libraries do not fit this service: grpc's asyncio server
instrumentation does not see the status `interceptors.py` decides, botocore's does not
patch aiobotocore's async client, and asyncpg's patches the driver process-wide. The
spans are made here instead: the call's in the interceptor, the stages' around the
progress stream, the database's from asyncpg's query logger, the storage's from
botocore's event hooks on the one client.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

SERVICE_NAME = "trainingfiles"
_SCOPE = "trainingfiles_server"


class TracingConfigurationError(Exception):
    """The OTEL_* variables ask for something this service cannot export."""


class _State:
    tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The tracer while tracing is on, else None (make no span at all)."""
    return _State.tracer


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def provider_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting over OTLP when the environment asks for it, else None."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not env.get("OTEL_TRACES_EXPORTER", "").strip():
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    if not names:
        return None
    unknown = sorted(set(names) - {"otlp", "console"})
    if unknown:
        raise TracingConfigurationError(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; "
            "this service exports to otlp (or console, or none)"
        )
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    raise TracingConfigurationError(
        f"OTLP protocol {protocol!r} is not supported; use grpc or http/protobuf"
    )


@contextlib.contextmanager
def tracing(provider: TracerProvider | None, *, owned: bool) -> Iterator[None]:
    """Trace with `provider` while the block runs (None: tracing off).

    An `owned` provider is shut down at the end, which exports what is still queued.
    """
    previous = _State.tracer
    _State.tracer = provider.get_tracer(_SCOPE) if provider is not None else None
    try:
        yield
    finally:
        _State.tracer = previous
        if provider is not None and owned:
            provider.shutdown()


def _carrier(metadata: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    return {key: value for key, value in metadata or () if isinstance(value, str)}


@contextlib.contextmanager
def call_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> Iterator[Span | None]:
    """The span of one call, continuing the caller's trace (W3C `traceparent`)."""
    current = _State.tracer
    if current is None:
        yield None
        return
    service, _, name = method.lstrip("/").partition("/")
    parent = propagate.extract(_carrier(metadata))
    span = current.start_span(
        method.lstrip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


def end_call_span(span: Span | None, code_name: str, code_value: int) -> None:
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", code_value)
    if code_name != "OK":
        span.set_status(Status(StatusCode.ERROR, code_name))


class StageSpan:
    """The span of the stage a build is in, current while the stage runs."""

    def __init__(self, stage: str) -> None:
        current = _State.tracer
        self._span: Span | None = None
        self._token: object | None = None
        if current is not None:
            self._span = current.start_span(f"stage {stage}", attributes={"stage": stage})
            self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def end(self, error: BaseException | None = None) -> None:
        if self._span is None:
            return
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._span.end()
        self._span = None


@contextlib.contextmanager
def span(name: str, **attributes: str | int) -> Iterator[None]:
    """A plain child span of whatever is current; nothing at all when tracing is off."""
    current = _State.tracer
    if current is None:
        yield
        return
    with current.start_as_current_span(name, attributes=attributes):
        yield


def record_query(record: Any) -> None:
    """asyncpg's query logger: a client span for a statement that just finished.

    It runs right after the statement (asyncpg schedules it with the caller's context),
    so its parent is the span that ran the statement; the start is back-dated by the
    statement's duration. Only the SQL text is recorded, never its arguments.
    """
    current = _State.tracer
    if current is None or not trace.get_current_span().get_span_context().is_valid:
        return
    end = time.time_ns()
    query = " ".join(str(record.query).split())
    operation = query.split(" ", 1)[0].upper() if query else "QUERY"
    child = current.start_span(
        f"postgresql {operation}",
        kind=SpanKind.CLIENT,
        start_time=end - int(record.elapsed * 1e9),
        attributes={
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.query.text": query[:2048],
        },
    )
    if record.exception is not None:
        child.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    child.end(end_time=end)


def start_storage_span(operation: str) -> Span | None:
    """A client span for one S3 operation (ended by `end_storage_span`)."""
    current = _State.tracer
    if current is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    return current.start_span(
        f"S3.{operation}",
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": operation},
    )


def end_storage_span(span: Span, problem: str | None) -> None:
    if problem is not None:
        span.set_status(Status(StatusCode.ERROR, problem))
    span.end()


def log_ids() -> dict[str, str]:
    """The current trace and span ids, for a log line; {} outside any span."""
    if _State.tracer is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
