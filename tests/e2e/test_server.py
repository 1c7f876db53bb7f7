"""The server skeleton through a real gRPC client: health, reflection, unimplemented ops."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import Stack, authorized_channel, stack_settings
from tests.e2e.helpers import captured_logs
from tests.e2e.test_concurrency import own_postgres, stopped
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_dev.embedded import EmbeddedSeaweedFS
from trainingfiles_server.app import running_server
from trainingfiles_server.storage import Storage, open_storage

SERVICE = "trainingfiles.v1.TrainingFileService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


async def test_health_is_serving_for_the_server_and_the_service(channel: grpc.aio.Channel) -> None:
    assert await _health(channel) == SERVING
    assert await _health(channel, SERVICE) == SERVING


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    responses = [response async for response in call]
    names = {s.name for s in responses[0].list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def test_reflection_describes_the_service_file(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    protos = responses[0].file_descriptor_response.file_descriptor_proto
    assert protos, responses[0]
    from google.protobuf import descriptor_pb2

    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in protos]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"CreateTrainingFile", "AddConversations", "GetTrainingFile"} <= methods


async def test_health_reports_not_serving_while_storage_is_stopped(stack: Stack) -> None:
    """A server on its own SeaweedFS: stop storage, health flips; start it, it recovers."""
    with tempfile.TemporaryDirectory(prefix="trainingfiles-s3-") as directory:
        seaweed = EmbeddedSeaweedFS.start(Path(directory) / "seaweedfs")
        settings = stack_settings(stack.postgres, seaweed)
        try:
            async with open_storage(settings) as storage:
                await ensure_buckets(
                    storage.client, settings.s3_conversations_bucket, settings.s3_training_bucket
                )
            async with (
                running_server(settings) as running,
                grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
            ):
                assert await _health(channel, SERVICE) == SERVING
                seaweed.stop(timeout=3)
                assert await _wait_for_status(channel, NOT_SERVING) == NOT_SERVING
                assert await _health(channel) == NOT_SERVING
                seaweed = EmbeddedSeaweedFS.start(
                    Path(directory) / "seaweedfs",
                    access_key=seaweed.access_key,
                    secret_key=seaweed.secret_key,
                    s3_port=seaweed.s3_port,
                )
                assert await _wait_for_status(channel, SERVING) == SERVING
        finally:
            seaweed.stop(timeout=3)


async def _wait_for_status(channel: grpc.aio.Channel, wanted: int, timeout: float = 20) -> int:
    status = -1
    async with asyncio.timeout(timeout):
        while status != wanted:
            await asyncio.sleep(0.1)
            status = await _health(channel, SERVICE)
    return status


async def test_an_unexpected_fault_is_internal_without_a_trace_and_logged(
    stack: Stack, token: str
) -> None:
    """A database whose schema was broken behind the server's back (its table renamed):
    the call ends INTERNAL with a generic message, the cause is logged with its
    traceback, and the server answers again once the schema is back."""
    admin = await asyncpg.connect(stack.postgres.url("postgres"))
    database = f"broken_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = stack.postgres.url(database)
    await asyncio.to_thread(apply_migrations, url, development=True)
    settings = stack_settings(stack.postgres, stack.seaweed, database_url=url)
    request = service_pb2.GetTrainingFileRequest(training_file_id=str(uuid.uuid4()))
    conn = await asyncpg.connect(url)
    try:
        async with (
            running_server(settings) as running,
            authorized_channel(running.port, token) as channel,
        ):
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            await conn.execute("ALTER TABLE training_files RENAME TO training_files_moved")
            with captured_logs() as records, pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.GetTrainingFile(request, timeout=30)

            error = failed.value
            assert error.code() == grpc.StatusCode.INTERNAL
            assert error.details() == "internal error; it has been logged"
            (logged_error,) = [r for r in records.records if r.msg == "unhandled error"]
            assert logged_error.exc_info is not None
            assert "training_files" in str(logged_error.exc_info[1])

            await conn.execute("ALTER TABLE training_files_moved RENAME TO training_files")
            with pytest.raises(grpc.aio.AioRpcError) as answered:
                await stub.GetTrainingFile(request, timeout=30)
            assert answered.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await conn.close()


async def test_health_reports_not_serving_while_postgres_is_stopped(
    stack: Stack, storage: Storage
) -> None:
    """A server on its own PostgreSQL: freeze the database, health flips; let it go on,
    it recovers."""
    async with own_postgres() as postgres:
        settings = stack_settings(postgres, stack.seaweed)
        async with (
            running_server(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            assert await _health(channel, SERVICE) == SERVING
            with stopped(postgres.process):
                # Within a few probes (0.2 s apart, 1 s each), not the 30 s command timeout.
                assert await _wait_for_status(channel, NOT_SERVING, timeout=5) == NOT_SERVING
                assert await _health(channel) == NOT_SERVING
            assert await _wait_for_status(channel, SERVING) == SERVING
