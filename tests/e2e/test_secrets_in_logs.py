"""The logs never contain a token, the JWT secret, the page-token secret or the S3 keys.

A server process at LOG_LEVEL=DEBUG serves a whole session — good calls of every rpc,
and calls with expired, forged, unsigned, oversized and misplaced tokens, malformed
requests and a bad document — then stops; its standard error and output are searched
for every secret it was given and every token it was shown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_JWT_SECRET, Stack, mint
from tests.e2e.guards import make_user
from tests.e2e.helpers import JSON, TIMEOUT, collect, unique_name
from tests.tokens import OTHER_SECRET, claims, signed, unsigned
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.embedded import free_port
from trainingfiles_dev.token import DEVELOPMENT_JWT_SECRET
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

SEED = 6401
PAGE_TOKEN_SECRET = "page-token-secret-" + uuid.uuid4().hex

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def logged_server(stack: Stack, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        **os.environ,
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "DATABASE_URL": stack.database_url,
        "S3_ENDPOINT_URL": stack.seaweed.endpoint_url,
        "S3_ACCESS_KEY_ID": stack.seaweed.access_key,
        "S3_SECRET_ACCESS_KEY": stack.seaweed.secret_key,
        "JWT_SECRET": TEST_JWT_SECRET,
        "PAGE_TOKEN_SECRET": PAGE_TOKEN_SECRET,
        "LOG_LEVEL": "DEBUG",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    # Files, not pipes: a chatty server must never block on a full pipe.
    with (tmp_path / "stderr").open("wb") as stderr, (tmp_path / "stdout").open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainingfiles_server"],
            env=env,
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,  # no `.env` file of the checkout is read
        )
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def _wait_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited"
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not become SERVING")


async def test_a_whole_session_logs_no_token_and_no_secret(
    logged_server: tuple[subprocess.Popen[bytes], int],
    server: RunningServer,
    storage: Storage,
    stack: Stack,
    tmp_path: Path,
) -> None:
    process, port = logged_server
    user = await make_user(server, storage, SEED, 6)
    await storage.client.put_object(
        Bucket=storage.conversations_bucket, Key=f"{user.id}/bad/enriched.json", Body=b"\xff"
    )
    bad_id = uuid.uuid4()
    await server.database.pool.execute(
        "INSERT INTO conversations (conversation_id, enriched_file_path, enrichment_status,"
        " created_by) VALUES ($1, $2, 'completed', $3)",
        bad_id,
        f"{user.id}/bad/enriched.json",
        user.id,
    )
    service = mint("service_role")
    now = int(time.time())
    refused = {
        "expired": signed(claims(user.id, iat=now - 7200, exp=now - 3600)),
        "other-key": signed(claims(user.id), secret=OTHER_SECRET),
        "alg-none": unsigned(claims(user.id)),
        "anon": signed(claims(user.id, role="anon")),
        "wrong-audience": signed(claims(user.id, aud="other")),
    }
    shown: list[str] = [user.token, service, *refused.values()]
    urls: list[str] = []
    await _wait_serving(port, process)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)

        def as_(token: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {token}")]

        # A whole session of good calls, as the user and as a service.
        result = await collect(
            stub.CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(
                    name=unique_name("logs"), conversation_ids=user.ids(2)
                ),
                metadata=as_(user.token),
                timeout=TIMEOUT,
            )
        )
        assert result.error is None, result.error
        file_id = result.messages[-1].training_file.id
        added = await collect(
            stub.AddConversations(
                service_pb2.AddConversationsRequest(
                    training_file_id=file_id, conversation_ids=user.ids()[2:3]
                ),
                metadata=as_(service),
                timeout=TIMEOUT,
            )
        )
        assert added.error is None, added.error
        for token in (user.token, service):
            await stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=file_id),
                metadata=as_(token),
                timeout=TIMEOUT,
            )
            page = await stub.ListTrainingFiles(
                service_pb2.ListTrainingFilesRequest(page_size=1),
                metadata=as_(token),
                timeout=TIMEOUT,
            )
            if page.next_page_token:
                shown.append(page.next_page_token)
            eligible = await stub.ListEligibleConversations(
                service_pb2.ListEligibleConversationsRequest(page_size=1),
                metadata=as_(token),
                timeout=TIMEOUT,
            )
            shown.append(eligible.next_page_token)
            await stub.ListTrainingFileConversations(
                service_pb2.ListTrainingFileConversationsRequest(training_file_id=file_id),
                metadata=as_(token),
                timeout=TIMEOUT,
            )
            url = await stub.GetDownloadUrl(
                service_pb2.GetDownloadUrlRequest(training_file_id=file_id, format=JSON),
                metadata=as_(token),
                timeout=TIMEOUT,
            )
            urls.append(url.url)
        await stub.ArchiveTrainingFile(
            service_pb2.ArchiveTrainingFileRequest(training_file_id=file_id),
            metadata=as_(user.token),
            timeout=TIMEOUT,
        )

        # Refused tokens, in the header and misplaced.
        get = service_pb2.GetTrainingFileRequest(training_file_id=file_id)
        metadata_cases: list[list[tuple[str, str]]] = [
            *(as_(token) for token in refused.values()),
            [("authorization", user.token)],  # no scheme
            [("authorization", f"Basic {user.token}")],
            [("authorization", f"Bearer {user.token[:-3]}")],  # truncated
            [("authorization", f"Bearer {TEST_JWT_SECRET}")],  # a secret sent as a token
            [("x-api-key", user.token)],  # not where tokens go
            [("authorization", "Bearer " + "a" * (1024 * 1024))],
        ]
        for metadata in metadata_cases:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetTrainingFile(get, metadata=metadata, timeout=TIMEOUT)
            assert error.value.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        # Requests that fail after authentication, and one that fails after work began.
        for request in (
            service_pb2.CreateTrainingFileRequest(
                name="bad/name", description="a\x00b", conversation_ids=["x"]
            ),
            service_pb2.CreateTrainingFileRequest(
                name=unique_name("logs-bad-doc"), conversation_ids=[str(bad_id)]
            ),
        ):
            failed = await collect(
                stub.CreateTrainingFile(request, metadata=as_(user.token), timeout=TIMEOUT)
            )
            assert failed.error is not None
        raw = channel.unary_unary(
            "/trainingfiles.v1.TrainingFileService/GetTrainingFile",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await raw(b"\x0a\x05abc", metadata=as_(user.token), timeout=TIMEOUT)

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0
    log = (tmp_path / "stderr").read_text() + (tmp_path / "stdout").read_text()

    # The log was really written, at DEBUG, with a line per call.
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" for line in lines)
    codes = [line["code"] for line in lines if line.get("msg") == "rpc"]
    assert codes.count("OK") >= 10
    assert {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"} <= set(codes)
    assert "FAILED_PRECONDITION" in codes
    assert not {"UNKNOWN", "INTERNAL"} & set(codes)
    assert "Traceback" not in log

    secrets = {
        "JWT secret": TEST_JWT_SECRET,
        "other JWT secret": OTHER_SECRET,
        "page-token secret": PAGE_TOKEN_SECRET,
        "S3 secret key": stack.seaweed.secret_key,
        "S3 access key": stack.seaweed.access_key,
    }
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} is in the log"
    for token in shown:
        # Each part on its own: the signature, and the claims, are as secret as the token.
        for part in token.split("."):
            if len(part) >= 16:
                assert part not in log, "a token is in the log"
    for url in urls:
        signature = url.split("X-Amz-Signature=")[1].split("&")[0]
        assert signature not in log, "a presigned URL is in the log"


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "JWT_SECRET (or JWT_JWKS_URL) must be set"),
        ("a-secret-of-31-bytes-not-more!!", "JWT_SECRET must be at least 32 bytes"),
        (DEVELOPMENT_JWT_SECRET, "JWT_SECRET is the development secret"),
    ],
    ids=["missing", "short", "development"],
)
def test_the_process_refuses_to_start_with_a_bad_secret(
    secret: str | None, reason: str, tmp_path: Path
) -> None:
    """One clear log line and exit code 2, before any connection is attempted."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "DEVELOPMENT_MODE"))
    }
    env.update(
        LISTEN_ADDRESS=f"127.0.0.1:{free_port()}",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        S3_ENDPOINT_URL="http://127.0.0.1:1",
    )
    if secret is not None:
        env["JWT_SECRET"] = secret
    done = subprocess.run(
        [sys.executable, "-m", "trainingfiles_server"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    (line,) = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert (line["level"], line["msg"]) == ("error", "refusing to start")
    assert line["reason"].startswith(reason)
    if secret is not None:
        assert secret.encode() not in done.stderr + done.stdout
