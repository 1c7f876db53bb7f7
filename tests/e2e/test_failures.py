"""Failures after work began leave nothing half-written: bad enriched documents, a caller
that cancels, and a process that died (start-up repair)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest

from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    ACTIVE,
    FAILED,
    FETCHING,
    TIMEOUT,
    VALIDATING,
    Stub,
    add_ok,
    conversations_by_id,
    create,
    create_ok,
    file_conversations,
    file_row,
    get,
    intent_count,
    object_keys,
    precondition_violations,
    stream_error,
    unique_name,
)
from trainingfiles.v1 import service_pb2
from trainingfiles_server.app import RunningServer
from trainingfiles_server.config import Settings
from trainingfiles_server.dev.generator import Kind
from trainingfiles_server.operations import Operations
from trainingfiles_server.pagination import PageTokens

BAD_KINDS = [Kind.MISSING_OBJECT, Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA]


# ----------------------------------------------------------------- bad enriched documents


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_a_bad_document_fails_the_create_naming_the_conversation(
    stub: Stub, dataset: Dataset, kind: Kind
) -> None:
    bad = dataset.ids(kind)[0]
    ids = [dataset.ids()[40], bad, dataset.ids()[41]]

    result = await create(stub, unique_name(f"bad-{kind.value}"), ids)

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("ENRICHED_DOCUMENT_INVALID", bad)]
    assert bad in error.details()
    defect = conversations_by_id(dataset.conversations)[bad].defect
    if defect is not None:
        assert defect in error.details()
    assert result.messages[0].stage == VALIDATING
    assert not any(m.HasField("training_file") for m in result.messages)


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_after_a_bad_document_the_file_is_failed_with_nothing_stored(
    stub: Stub, server: RunningServer, dataset: Dataset, kind: Kind
) -> None:
    result = await create(
        stub, unique_name(f"bad-clean-{kind.value}"), [dataset.ids()[42], dataset.ids(kind)[1]]
    )
    assert stream_error(result).code() == grpc.StatusCode.FAILED_PRECONDITION
    file_id = result.training_file_id

    file = await get(stub, file_id)
    row = await file_row(server, file_id)

    assert file.status == FAILED
    assert dataset.ids(kind)[1] in file.error_message
    assert (file.json_file_path, file.jsonl_file_path) == ("", "")
    assert file.version == 0 and not file.HasField("quality_summary")
    assert row["status"] == "failed" and row["error_message"]
    assert await object_keys(server, f"{file_id}/") == set()
    assert await intent_count(server, file_id) == 0
    members = await server.database.pool.fetchval(
        "SELECT count(*) FROM training_file_conversations WHERE training_file_id = $1",
        uuid.UUID(file_id),
    )
    assert members == 0


async def test_the_name_of_a_failed_file_can_be_reused(stub: Stub, dataset: Dataset) -> None:
    name = unique_name("reuse")
    failed = await create(stub, name, [dataset.ids(Kind.MALFORMED_JSON)[0]])
    assert stream_error(failed).code() == grpc.StatusCode.FAILED_PRECONDITION

    file = await create_ok(stub, name, dataset.ids()[43:44])

    assert file.status == ACTIVE
    assert file.name == name
    assert file.id != failed.training_file_id
    assert (await get(stub, failed.training_file_id)).status == FAILED


# ----------------------------------------------------------------- cancellation


async def _wait_until_failed(stub: Stub, file_id: str) -> str:
    """Poll until the file is FAILED; returns its error message."""
    async with asyncio.timeout(TIMEOUT):
        while (file := await get(stub, file_id)).status != FAILED:
            assert file.status != ACTIVE, "the create finished before it was cancelled"
            await asyncio.sleep(0.05)
    return file.error_message


async def test_cancelling_a_create_fails_the_file_and_removes_everything(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    ids = dataset.usable()
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("cancelled"), conversation_ids=ids
    )
    call = stub.CreateTrainingFile(request, timeout=TIMEOUT)
    first = await call.read()
    assert first.stage == VALIDATING
    while (message := await call.read()).stage != FETCHING:
        pass
    assert message.done < message.total == len(ids)

    call.cancel()

    assert call.cancelled()
    message = await _wait_until_failed(stub, first.training_file_id)
    assert "cancel" in message
    assert await object_keys(server, f"{first.training_file_id}/") == set()
    assert await intent_count(server, first.training_file_id) == 0


async def test_cancelling_an_add_changes_nothing(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    usable = dataset.usable()
    created = await create_ok(stub, unique_name("cancelled-add"), usable[:1])
    request = service_pb2.AddConversationsRequest(
        training_file_id=created.id, conversation_ids=usable[1:]
    )
    call = stub.AddConversations(request, timeout=TIMEOUT)
    while (message := await call.read()).stage != FETCHING:
        pass
    assert message.done < message.total

    call.cancel()

    # The aborted Add removes what it uploaded and releases the file: a later Add runs.
    old_keys = {created.json_file_path, created.jsonl_file_path}
    async with asyncio.timeout(TIMEOUT):
        while True:
            keys = await object_keys(server, f"{created.id}/")
            if keys == old_keys and await intent_count(server, created.id) == 0:
                break
            await asyncio.sleep(0.05)
    assert await get(stub, created.id) == created
    assert [c.conversation_id for c in await file_conversations(stub, created.id)] == usable[:1]
    after = await add_ok(stub, created.id, usable[1:3])
    assert (after.version, after.conversation_count) == (2, 3)


# ----------------------------------------------------------------- start-up repair


async def test_repair_fails_stale_processing_files_and_deletes_their_objects(
    server: RunningServer, settings: Settings
) -> None:
    pool = server.database.pool
    bucket = server.storage.training_bucket
    stale_id, fresh_id = uuid.uuid4(), uuid.uuid4()
    stale_key, fresh_key = f"{stale_id}/stale_x.jsonl", f"{fresh_id}/fresh_x.jsonl"
    for file_id, key, age in (
        (stale_id, stale_key, timedelta(hours=2)),
        (fresh_id, fresh_key, timedelta()),
    ):
        await server.storage.client.put_object(Bucket=bucket, Key=key, Body=b"{}\n")
        # The trigger only maintains updated_at on UPDATE: an INSERT can backdate it.
        await pool.execute(
            "INSERT INTO training_files (id, name, status, created_at, updated_at) "
            "VALUES ($1, $2, 'processing', now() - $3::interval, now() - $3::interval)",
            file_id,
            unique_name("repair"),
            age,
        )
        await pool.execute(
            "INSERT INTO storage_intents (bucket, object_key, training_file_id, created_at) "
            "VALUES ($1, $2, $3, now() - $4::interval)",
            bucket,
            key,
            file_id,
            age,
        )
    operations = Operations(settings, server.database, server.storage, PageTokens(b"x" * 32))
    try:
        await operations.repair()

        stale = await file_row(server, str(stale_id))
        assert stale["status"] == "failed"
        assert "interrupted" in stale["error_message"]
        assert await object_keys(server, f"{stale_id}/") == set()
        assert await intent_count(server, str(stale_id)) == 0
        # Younger than `stale_processing_after_seconds`: possibly still being built.
        fresh = await file_row(server, str(fresh_id))
        assert fresh["status"] == "processing"
        assert await object_keys(server, f"{fresh_id}/") == {fresh_key}
        assert await intent_count(server, str(fresh_id)) == 1
    finally:
        await server.storage.delete(bucket, [fresh_key])
        await pool.execute("DELETE FROM storage_intents WHERE training_file_id = $1", fresh_id)
        await pool.execute("DELETE FROM training_files WHERE id = $1", fresh_id)
