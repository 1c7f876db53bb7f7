"""Which OTEL_* variables turn tracing on (tracing.py): none set, none made."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import TracerProvider

from trainingfiles_server.tracing import TracingConfigurationError, provider_from_environment

ENDPOINT = "http://127.0.0.1:4317"


def _exporters(provider: TracerProvider | None) -> list[type]:
    assert provider is not None
    try:
        processors = provider._active_span_processor._span_processors
        return [type(p.span_exporter) for p in processors]  # type: ignore[attr-defined]
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
    ],
    ids=["nothing", "no-exporter", "exporter-none", "sdk-disabled"],
)
def test_tracing_is_off_unless_the_variables_ask_for_an_exporter(environ: dict[str, str]) -> None:
    assert provider_from_environment(environ) is None


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, OTLPSpanExporter),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            HttpSpanExporter,
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            HttpSpanExporter,
        ),
    ],
    ids=["endpoint", "traces-endpoint", "exporter-otlp", "http", "traces-protocol-http"],
)
def test_an_otlp_exporter_is_made_when_the_variables_ask(
    environ: dict[str, str], exporter: type
) -> None:
    assert _exporters(provider_from_environment(environ)) == [exporter]


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    ],
    ids=["unknown-exporter", "unknown-protocol"],
)
def test_what_cannot_be_exported_is_refused_at_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(TracingConfigurationError):
        provider_from_environment(environ)
