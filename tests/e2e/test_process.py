"""The server as a process: configuration from the environment, logs, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_JWT_SECRET, Stack, authorized_channel
from tests.e2e.conftest import Dataset
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.embedded import free_port


@pytest.fixture
def server_process(stack: Stack) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        **os.environ,
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "DATABASE_URL": stack.database_url,
        "S3_ENDPOINT_URL": stack.seaweed.endpoint_url,
        "S3_ACCESS_KEY_ID": stack.seaweed.access_key,
        "S3_SECRET_ACCESS_KEY": stack.seaweed.secret_key,
        "SHUTDOWN_GRACE_SECONDS": "20",
        "JWT_SECRET": TEST_JWT_SECRET,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trainingfiles_server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait(10)
    assert process.stderr is not None
    process.stderr.close()


async def _wait_serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(30):
            while True:
                try:
                    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)


async def test_sigterm_drains_a_running_create_then_exits_cleanly(
    server_process: tuple[subprocess.Popen[bytes], int],
    dataset: Dataset,
    stack: Stack,
    token: str,
) -> None:
    process, port = server_process
    await _wait_serving(port)
    async with authorized_channel(port, token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=str(uuid.uuid4())), timeout=5
            )
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
        call = stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"drain-{uuid.uuid4().hex[:8]}", conversation_ids=dataset.ids()
            )
        )
        messages: list[service_pb2.TrainingFileProgress] = []
        async for message in call:
            if not messages:
                assert message.stage == service_pb2.TrainingFileProgress.STAGE_VALIDATING
                process.send_signal(signal.SIGTERM)
            messages.append(message)
        assert messages[-1].training_file.status == 2  # ACTIVE: the call was allowed to finish
        assert await call.code() == grpc.StatusCode.OK
    assert await asyncio.to_thread(process.wait, 30) == 0
    assert process.stderr is not None
    log = process.stderr.read().decode()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("msg") == "rpc"]
    by_method = {line["method"]: line for line in calls}
    assert by_method["/trainingfiles.v1.TrainingFileService/GetTrainingFile"]["code"] == "NOT_FOUND"
    create = by_method["/trainingfiles.v1.TrainingFileService/CreateTrainingFile"]
    assert create["code"] == "OK"
    assert create["duration_ms"] > 0
    # The create finished after shutdown began (drained), and "stopped" is the last word.
    order = [line.get("method", line["msg"]) for line in lines]
    assert order.index("shutting down") < order.index(create["method"])
    assert order[-1] == "stopped"
    assert stack.seaweed.secret_key not in log
    assert TEST_JWT_SECRET not in log
    assert token not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_signal_turns_health_not_serving_and_lets_running_calls_finish(
    server_process: tuple[subprocess.Popen[bytes], int],
    dataset: Dataset,
    token: str,
    stop_signal: signal.Signals,
) -> None:
    """Health watchers hear NOT_SERVING at once; a Create under way still completes."""
    process, port = server_process
    await _wait_serving(port)
    async with (
        authorized_channel(port, token) as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain,
    ):
        watch = health_pb2_grpc.HealthStub(plain).Watch(
            health_pb2.HealthCheckRequest(service="trainingfiles.v1.TrainingFileService")
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        call = stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"signal-{uuid.uuid4().hex[:8]}", conversation_ids=dataset.ids()
            )
        )
        assert (await call.read()).stage == service_pb2.TrainingFileProgress.STAGE_VALIDATING
        process.send_signal(stop_signal)

        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        last = None
        async for message in call:
            last = message
        assert last is not None and last.training_file.status == 2  # ACTIVE
        watch.cancel()
    assert await asyncio.to_thread(process.wait, 30) == 0
