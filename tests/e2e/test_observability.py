"""Metrics scraped over HTTP, traces captured in memory and sent over OTLP, from real
calls to a real server (docs/operations.md)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import Dataset
from tests.e2e.helpers import collect, unique_name
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.embedded import free_port
from trainingfiles_dev.generator import Kind
from trainingfiles_server import tracing
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.logs import JsonFormatter
from trainingfiles_server.sweeper import Sweeper

TIMEOUT = 60
SERVICE = "trainingfiles.v1.TrainingFileService"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Served:
    stub: service_pb2_grpc.TrainingFileServiceStub
    metrics_port: int
    running: RunningServer


@pytest.fixture(scope="module")
async def served(stack: Stack, dataset: Dataset) -> AsyncIterator[Served]:
    """A server with its metrics endpoint on a free port."""
    settings = stack_settings(stack.postgres, stack.seaweed, metrics_address="127.0.0.1:0")
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        assert running.metrics_port is not None
        yield Served(
            service_pb2_grpc.TrainingFileServiceStub(channel), running.metrics_port, running
        )


async def create(stub: service_pb2_grpc.TrainingFileServiceStub, ids: list[str], **kw: object):
    request = service_pb2.CreateTrainingFileRequest(name=unique_name("obs"), conversation_ids=ids)
    return await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT, **kw))


async def test_metrics_count_calls_codes_stages_documents_and_the_pool(
    served: Served, dataset: Dataset
) -> None:
    port = served.metrics_port
    before = await asyncio.to_thread(scrape, port)
    ids = dataset.ids(Kind.ELIGIBLE)[60:63]
    (missing,) = dataset.ids(Kind.MISSING_OBJECT)[:1]

    created = await create(served.stub, ids)
    assert created.error is None, created.error
    failed = await create(served.stub, [missing])
    assert failed.error is not None and failed.error.code() is grpc.StatusCode.FAILED_PRECONDITION
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError):
            await served.stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=bad), timeout=TIMEOUT
            )

    after = await asyncio.to_thread(scrape, port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    method = {"grpc_service": SERVICE}
    handled = "grpc_server_handled_total"
    create_ = {**method, "grpc_method": "CreateTrainingFile"}
    get = {**method, "grpc_method": "GetTrainingFile"}
    assert delta(handled, **create_, grpc_code="OK") == 1
    assert delta(handled, **create_, grpc_code="FAILED_PRECONDITION") == 1
    assert delta(handled, **get, grpc_code="INVALID_ARGUMENT") == 1
    assert delta(handled, **get, grpc_code="NOT_FOUND") == 1
    assert delta("grpc_server_handling_seconds_count", **create_) == 2
    assert delta("grpc_server_handling_seconds_count", **get) == 2
    assert delta("grpc_server_handling_seconds_bucket", **create_, le="+Inf") == 2
    assert value(after, "grpc_server_calls_in_flight", **create_) == 0

    stage_count = "trainingfiles_build_stage_seconds_count"
    assert delta(stage_count, stage="validating") == 2
    assert delta(stage_count, stage="fetching") in (1, 2)
    for stage in ("aggregating", "uploading", "saving"):
        assert delta(stage_count, stage=stage) == 1, stage
    for stage in ("validating", "fetching", "aggregating", "uploading", "saving"):
        assert value(after, "trainingfiles_builds_in_flight", stage=stage) == 0

    documents = {str(c.conversation_id): c.document for c in dataset.conversations}
    assert delta("trainingfiles_documents_fetched_total") == 3
    assert delta("trainingfiles_document_bytes_fetched_total") == sum(
        len(documents[i] or b"") for i in ids
    )
    assert delta("trainingfiles_document_failures_total", reason="missing") == 1

    settings_max = served.running.operations.settings.database_pool_max_size
    assert value(after, "trainingfiles_db_pool_max_connections") == settings_max
    in_use = value(after, "trainingfiles_db_pool_connections", state="in_use")
    idle = value(after, "trainingfiles_db_pool_connections", state="idle")
    assert 1 <= in_use + idle <= settings_max
    assert value(after, "trainingfiles_db_pool_waiting") == 0
    # No label carries an id: every label value is from a small fixed set.
    for (_, labels), _value in after.items():
        for _key, label in labels:
            assert not _is_uuid(label), label


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def test_metrics_count_the_sweepers_actions(served: Served) -> None:
    running = served.running
    storage = running.storage
    key = f"{uuid.uuid4()}/orphan_metrics.json"
    await storage.client.create_multipart_upload(Bucket=storage.training_bucket, Key=key)
    before = await asyncio.to_thread(scrape, served.metrics_port)
    sweeper = Sweeper(running.database, storage, interval=3600, orphan_upload_age=0)
    report = await sweeper.sweep()
    after = await asyncio.to_thread(scrape, served.metrics_port)
    assert report.swept and report.aborted_uploads >= 1

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("trainingfiles_sweeps_total", outcome="swept") == 1
    actions = "trainingfiles_sweeper_actions_total"
    assert delta(actions, action="upload_aborted") == report.aborted_uploads
    assert delta(actions, action="object_deleted") == report.deleted_objects
    assert delta(actions, action="build_failed") == len(report.failed_builds)


# ----------------------------------------------------------------- traces

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The service's call log lines, as the JSON formatter writes them."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("trainingfiles.rpc")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_create_is_one_trace_with_stage_database_and_storage_spans(
    stack: Stack, dataset: Dataset, log_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = stack_settings(stack.postgres, stack.seaweed)
    ids = dataset.ids(Kind.ELIGIBLE)[64:67]
    async with (
        running_server(settings, tracer_provider=provider) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        assert running.metrics_port is None  # METRICS_ADDRESS unset: no endpoint
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        created = await create(stub, ids, metadata=(("traceparent", TRACEPARENT),))
        assert created.error is None, created.error
        await asyncio.sleep(0)  # asyncpg's query logger runs on the next loop turn
    assert tracing.tracer() is None  # off again once the server stopped

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == TRACE_ID]
    (call,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert call.name == f"{SERVICE}/CreateTrainingFile"
    assert call.parent is not None and call.parent.span_id == PARENT_ID
    assert call.attributes is not None and call.attributes["rpc.grpc.status_code"] == 0

    stages = {s.name: s for s in spans if s.name.startswith("stage ")}
    assert set(stages) == {
        f"stage {name}" for name in ("validating", "fetching", "aggregating", "uploading", "saving")
    }
    for stage in stages.values():
        assert stage.parent is not None and stage.parent.span_id == call.context.span_id

    def children_of(parents: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
        ids_ = {p.context.span_id for p in parents}
        return [
            s for s in spans if s.name.startswith(prefix) and s.parent and s.parent.span_id in ids_
        ]

    database = children_of([call, *stages.values()], "postgresql ")
    assert database, [s.name for s in spans]
    assert all(s.kind is SpanKind.CLIENT for s in database)
    assert children_of([stages["stage saving"]], "postgresql ")  # the commit
    storage = children_of(list(stages.values()), "S3.")
    assert {"S3.PutObject", "S3.CreateMultipartUpload"} & {s.name for s in storage}, [
        s.name for s in spans
    ]
    # Never the statements' arguments: the conversation ids are not in any span.
    for span in spans:
        for attribute in (span.attributes or {}).values():
            assert not any(i in str(attribute) for i in ids)

    rpc_lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    (line,) = [x for x in rpc_lines if x.get("method", "").endswith("/CreateTrainingFile")]
    assert line["trace_id"] == f"{TRACE_ID:032x}"
    assert line["span_id"] == f"{call.context.span_id:016x}"


async def test_without_tracing_no_span_is_made_and_logs_carry_no_ids(
    served: Served, dataset: Dataset, log_lines: io.StringIO
) -> None:
    assert tracing.tracer() is None
    created = await create(
        served.stub, dataset.ids(Kind.ELIGIBLE)[67:68], metadata=(("traceparent", TRACEPARENT),)
    )
    assert created.error is None, created.error
    (line,) = [orjson.loads(x) for x in log_lines.getvalue().splitlines()]
    assert "trace_id" not in line and "span_id" not in line


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A tiny OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, int]]:
    # A thread-pool server: the exporter sends from its own thread while the test's loop
    # waits for the provider's shutdown.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    kept = _Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(kept, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield kept, port
    finally:
        server.stop(None)


async def test_with_an_otlp_endpoint_set_traces_are_sent_there(
    stack: Stack, receiver: tuple[_Receiver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "trainingfiles-under-test")
    for unset in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(unset, raising=False)
    settings = stack_settings(stack.postgres, stack.seaweed)
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        assert tracing.tracer() is not None
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=str(uuid.uuid4())),
                metadata=(("traceparent", TRACEPARENT),),
                timeout=TIMEOUT,
            )
    # Stopping the server flushed the batch to the receiver.
    spans = [
        (resource, span)
        for request in kept.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    call = [s for _, s in spans if s.name == f"{SERVICE}/GetTrainingFile"]
    assert len(call) == 1
    assert call[0].trace_id == TRACE_ID.to_bytes(16, "big")
    assert call[0].parent_span_id == PARENT_ID.to_bytes(8, "big")
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"trainingfiles-under-test"}


def test_the_process_refuses_to_start_with_an_exporter_it_does_not_have(tmp_path: Path) -> None:
    """One clear log line and exit code 2, rather than running without the traces asked for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        LISTEN_ADDRESS=f"127.0.0.1:{free_port()}",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        S3_ENDPOINT_URL="http://127.0.0.1:1",
        JWT_SECRET=secrets.token_urlsafe(48),
        OTEL_TRACES_EXPORTER="zipkin",
    )
    done = subprocess.run(
        [sys.executable, "-m", "trainingfiles_server"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert (line["level"], line["msg"]) == ("error", "refusing to start")
    assert "OTEL_TRACES_EXPORTER names zipkin" in line["reason"]


class _FlakyForwarder:
    """A TCP forwarder to the object store that answers `503 Slow Down` once to the
    first request of each pattern, then lets everything through unchanged."""

    def __init__(self, target: str, patterns: list[bytes]) -> None:
        url = urllib.parse.urlsplit(target)
        assert url.hostname and url.port
        self._target = (url.hostname, url.port)
        self.pending = list(patterns)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _FlakyForwarder:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def down() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        answering = asyncio.create_task(down())
        try:
            while data := await reader.read(65536):
                failing = next((p for p in self.pending if p in data), None)
                if failing is not None:  # the client waits for this answer: nothing else
                    self.pending.remove(failing)
                    writer.write(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                up_writer.write(data)
                await up_writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            answering.cancel()
            for closing in (writer, up_writer):
                closing.close()
            self._tasks.discard(task)


async def test_storage_retries_are_counted_by_operation(stack: Stack, dataset: Dataset) -> None:
    eligible = dataset.conversations
    chosen = [c for c in eligible if c.kind is Kind.ELIGIBLE][68:70]
    key = chosen[0].enriched_file_path
    assert key is not None
    patterns = [f"GET /conversation-files/{key}".encode(), b"PUT /training-files/"]
    async with _FlakyForwarder(stack.seaweed.endpoint_url, patterns) as flaky:
        settings = stack_settings(
            stack.postgres,
            stack.seaweed,
            s3_endpoint_url=f"http://127.0.0.1:{flaky.port}",
            metrics_address="127.0.0.1:0",
        )
        async with (
            running_server(settings) as running,
            authorized_channel(running.port, mint("service_role")) as channel,
        ):
            assert running.metrics_port is not None
            before = await asyncio.to_thread(scrape, running.metrics_port)
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            created = await create(stub, [str(c.conversation_id) for c in chosen])
            assert created.error is None, created.error
            after = await asyncio.to_thread(scrape, running.metrics_port)
    assert flaky.pending == []  # each pattern was refused once

    def retries(operation: str | None = None) -> float:
        name = "trainingfiles_storage_retries_total"
        operations = {dict(labels)["operation"] for (n, labels) in after if n == name}
        chosen_ = [operation] if operation else sorted(operations - {"GetDocument"})
        return sum(
            value(after, name, operation=o) - value(before, name, operation=o) for o in chosen_
        )

    assert retries("GetDocument") == 1
    assert retries() == 1  # the PutObject or UploadPart botocore sent again
