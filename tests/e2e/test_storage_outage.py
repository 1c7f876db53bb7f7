"""Object storage dying in the middle of a Create leaves nothing half-written."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest

from tests.conftest import Stack, authorized_channel, stack_settings
from tests.e2e.helpers import open_uploads, wait_for_uploads
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.bootstrap import ensure_buckets
from trainingfiles_dev.embedded import EmbeddedSeaweedFS
from trainingfiles_dev.generator import generate, load
from trainingfiles_server.app import running_server
from trainingfiles_server.storage import open_storage


async def test_storage_stopped_mid_create_fails_the_file_and_the_sweeper_removes_the_rest(
    stack: Stack, token: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="trainingfiles-outage-") as directory:
        seaweed = EmbeddedSeaweedFS.start(Path(directory) / "seaweedfs")
        settings = stack_settings(
            stack.postgres,
            seaweed,
            s3_max_attempts=1,
            fetch_concurrency=1,
        )
        conversations = list(generate(4242, 200, owners=[uuid.uuid4()]))
        ids = [str(c.conversation_id) for c in conversations]
        try:
            async with open_storage(settings) as storage:
                bucket = settings.s3_conversations_bucket
                await ensure_buckets(storage.client, bucket, settings.s3_training_bucket)
                async with (
                    running_server(settings) as running,
                    authorized_channel(running.port, token) as channel,
                ):
                    await load(running.database.pool, storage.client, bucket, conversations)
                    stub = service_pb2_grpc.TrainingFileServiceStub(channel)
                    call = stub.CreateTrainingFile(
                        service_pb2.CreateTrainingFileRequest(
                            name=f"outage-{uuid.uuid4().hex[:8]}", conversation_ids=ids
                        ),
                        timeout=60,
                    )
                    file_id = ""
                    fetching = service_pb2.TrainingFileProgress.STAGE_FETCHING

                    async def follow() -> None:
                        nonlocal file_id
                        killed = False
                        async for message in call:
                            file_id = message.training_file_id
                            if message.stage == fetching and not killed:
                                killed = True
                                # Storage dies while the JSONL's upload is open
                                # (its first part is out: 200 documents are ~8 MB).
                                await wait_for_uploads(running, f"{file_id}/", 1)
                                seaweed.process.send_signal(signal.SIGTERM)

                    with pytest.raises(grpc.aio.AioRpcError) as failure:
                        await follow()
                    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value

                    # The row is failed at once, with its reason; it points at nothing.
                    row = await running.database.get_file(uuid.UUID(file_id))
                    assert row is not None
                    assert (row.status.value, row.json_file_path) == ("failed", None)
                    assert row.error_message and "unavailable" in row.error_message

                    # Storage comes back; the sweeper deletes what could not be.
                    await asyncio.to_thread(seaweed.stop, 3)
                    seaweed = EmbeddedSeaweedFS.start(
                        Path(directory) / "seaweedfs",
                        access_key=seaweed.access_key,
                        secret_key=seaweed.secret_key,
                        s3_port=seaweed.s3_port,
                    )
                    assert await open_uploads(running, f"{file_id}/"), "uploads survive"
                    await running.sweeper.sweep()
                    intents = await running.database.pool.fetchval(
                        "SELECT count(*) FROM storage_intents WHERE training_file_id = $1",
                        uuid.UUID(file_id),
                    )
                    assert intents == 0
                    listed = await storage.client.list_objects_v2(
                        Bucket=settings.s3_training_bucket, Prefix=f"{file_id}/"
                    )
                    assert listed.get("KeyCount", 0) == 0
                    assert await open_uploads(running, f"{file_id}/") == set()
                    status = await stub.GetTrainingFile(
                        service_pb2.GetTrainingFileRequest(training_file_id=file_id)
                    )
                    assert status.status == resources_pb2.TRAINING_FILE_STATUS_FAILED
        finally:
            seaweed.stop(timeout=3)
