"""Failures after work began leave nothing half-written: bad enriched documents, a caller
that cancels, and a process that died (start-up repair)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from tests.conftest import Stack, authorized_channel, stack_settings
from tests.crash.harness import padded
from tests.e2e.conftest import Dataset
from tests.e2e.forwarder import HoldingForwarder
from tests.e2e.helpers import (
    ACTIVE,
    FAILED,
    FETCHING,
    TIMEOUT,
    VALIDATING,
    Stub,
    add_ok,
    captured_logs,
    collect,
    conversations_by_id,
    create,
    create_ok,
    file_conversations,
    file_row,
    get,
    intent_count,
    logged,
    object_keys,
    open_uploads,
    output_keys,
    precondition_violations,
    stream_error,
    unique_name,
    wait_for_uploads,
)
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation, Kind, generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.auth import SYSTEM, current_caller
from trainingfiles_server.servicer import TrainingFileServicer
from trainingfiles_server.storage import Storage
from trainingfiles_server.sweeper import Sweeper

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


async def _wait_until_failed_and_clean(stub: Stub, server: RunningServer, file_id: str) -> str:
    """Poll (bounded) until the file is FAILED and what it stored is gone; returns its error
    message. The server marks the file failed first, then deletes its objects and intents."""
    seen: tuple[int, set[str], int] | None = None
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                file = await get(stub, file_id)
                assert file.status != ACTIVE, "the create finished before it was cancelled"
                seen = (
                    file.status,
                    await object_keys(server, f"{file_id}/"),
                    await intent_count(server, file_id),
                )
                if seen == (FAILED, set(), 0):
                    return file.error_message
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"(status, objects, intents) still {seen}") from None


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
    message = await _wait_until_failed_and_clean(stub, server, first.training_file_id)
    assert "cancel" in message


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
    old_keys = output_keys(created)
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


# ----------------------------------------------------------------- the sweeper


async def test_the_sweeper_fails_expired_builds_and_removes_their_objects_and_uploads(
    server: RunningServer,
) -> None:
    """An expired lease is a dead build: its file fails, its objects and uploads go.

    A build whose lease is still live is left alone, uploads included.
    """
    pool = server.database.pool
    client = server.storage.client
    bucket = server.storage.training_bucket
    dead_id, live_id = uuid.uuid4(), uuid.uuid4()
    keys = {dead_id: f"{dead_id}/dead_x.jsonl", live_id: f"{live_id}/live_x.jsonl"}
    uploads = {}
    for file_id, expires in ((dead_id, timedelta(seconds=-1)), (live_id, timedelta(hours=1))):
        token = uuid.uuid4()
        await pool.execute(
            "INSERT INTO training_files (id, name, status, lease_token, lease_expires_at) "
            "VALUES ($1, $2, 'processing', $3, now() + $4)",
            file_id,
            unique_name("sweep"),
            token,
            expires,
        )
        key = keys[file_id]
        await client.put_object(Bucket=bucket, Key=key + ".done", Body=b"{}\n")
        created = await client.create_multipart_upload(Bucket=bucket, Key=key)
        uploads[file_id] = created["UploadId"]
        await pool.execute(
            "INSERT INTO storage_intents (bucket, object_key, training_file_id, lease_token, "
            "upload_id) VALUES ($1, $2, $3, $4, $5), ($1, $6, $3, $4, NULL)",
            bucket,
            key,
            file_id,
            token,
            uploads[file_id],
            key + ".done",
        )
    try:
        report = await server.sweeper.sweep()

        assert report.swept
        assert str(dead_id) in report.failed_builds
        dead = await file_row(server, str(dead_id))
        assert (dead["status"], dead["lease_token"]) == ("failed", None)
        assert "interrupted" in dead["error_message"]
        assert await object_keys(server, f"{dead_id}/") == set()
        assert await intent_count(server, str(dead_id)) == 0
        assert await open_uploads(server, f"{dead_id}/") == set()
        # A live lease: possibly still being built by another process.
        live = await file_row(server, str(live_id))
        assert live["status"] == "processing"
        assert await object_keys(server, f"{live_id}/") == {keys[live_id] + ".done"}
        assert await intent_count(server, str(live_id)) == 2
        assert await open_uploads(server, f"{live_id}/") == {uploads[live_id]}
    finally:
        await pool.execute(
            "UPDATE training_files SET lease_expires_at = now() - interval '1 second' "
            "WHERE id = $1",
            live_id,
        )
        await server.sweeper.sweep()
    assert await open_uploads(server, f"{live_id}/") == set()
    assert await object_keys(server, f"{live_id}/") == set()


async def test_the_sweeper_aborts_uploads_no_build_accounts_for(server: RunningServer) -> None:
    """An upload started by a process killed before it could record it is found too."""
    client = server.storage.client
    bucket = server.storage.training_bucket
    key = f"{uuid.uuid4()}/orphan_x.json"
    created = await client.create_multipart_upload(Bucket=bucket, Key=key)
    sweeper = Sweeper(server.database, server.storage, interval=3600, orphan_upload_age=0)
    report = await sweeper.sweep()
    assert report.aborted_uploads >= 1
    assert created["UploadId"] not in await open_uploads(server, key)


async def test_a_young_unrecorded_upload_is_left_to_its_build(server: RunningServer) -> None:
    """Younger than a lease: its build may be about to record it."""
    client = server.storage.client
    bucket = server.storage.training_bucket
    key = f"{uuid.uuid4()}/young_x.json"
    created = await client.create_multipart_upload(Bucket=bucket, Key=key)
    try:
        await server.sweeper.sweep()
        assert await open_uploads(server, key) == {created["UploadId"]}
    finally:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=created["UploadId"])


# ----------------------------------------------------------------- open uploads


@pytest.fixture(scope="module")
async def big(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    """Padded conversations (~400 KiB each): a file of 30 spans several 5 MiB parts."""
    conversations = [padded(c) for c in generate(7373, 32, owners=[uuid.uuid4()])]
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    return conversations


@pytest.fixture(scope="module")
def big_ids(big: list[GeneratedConversation]) -> list[str]:
    return [str(c.conversation_id) for c in big[:30]]


async def _failed_and_clean(server: RunningServer, file_id: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while (await file_row(server, file_id))["status"] != "failed":  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_cancelled_create_aborts_its_open_uploads_itself(
    stub: Stub, server: RunningServer, big_ids: list[str]
) -> None:
    """No sweep runs here (the test server sweeps hourly): the Create's own cleanup
    aborts the multipart uploads that were open when the call was cancelled."""
    call = stub.CreateTrainingFile(
        service_pb2.CreateTrainingFileRequest(
            name=unique_name("cancel-open"), conversation_ids=big_ids
        ),
        timeout=TIMEOUT,
    )
    file_id = (await call.read()).training_file_id
    assert await wait_for_uploads(server, f"{file_id}/", 1)
    call.cancel()
    await _failed_and_clean(server, file_id)
    assert await open_uploads(server, f"{file_id}/") == set()
    assert await object_keys(server, f"{file_id}/") == set()
    assert await intent_count(server, file_id) == 0


async def test_a_create_closed_between_messages_is_clean_when_the_close_returns(
    server: RunningServer, big_ids: list[str]
) -> None:
    """A call that ends while a progress message is being sent closes the handler's
    stream at a `yield` instead of cancelling an await. The close must run the whole
    build's cleanup, the innermost first: when it returns the uploads are aborted, and
    only then is the file FAILED (no sweep runs here). Driven on the servicer in this
    process, so that the close lands at a `yield` every time; the test above lets the
    transport choose."""
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("close-open"), conversation_ids=big_ids
    )
    caller = current_caller.set(SYSTEM)
    try:
        stream = TrainingFileServicer(server.operations).CreateTrainingFile(request, None)
        file_id = (await anext(stream)).training_file_id
        async with asyncio.timeout(TIMEOUT):
            # The build moves only while its stream is read: read until an upload is open.
            while not await open_uploads(server, f"{file_id}/"):
                await anext(stream)
        await stream.aclose()
    finally:
        current_caller.reset(caller)
    assert (await file_row(server, file_id))["status"] == "failed"
    assert await open_uploads(server, f"{file_id}/") == set()
    assert await object_keys(server, f"{file_id}/") == set()
    assert await intent_count(server, file_id) == 0


# ----------------------------------------------------------------- deadlines

# The caller's deadline. The build is held (below) long before it passes: the time that
# passes is what these tests are about.
DEADLINE = 15.0


@contextlib.asynccontextmanager
async def held_at(
    stack: Stack, token: str, conversation: GeneratedConversation
) -> AsyncIterator[tuple[HoldingForwarder, Stub]]:
    """A server whose store holds the GET of `conversation`'s document: a build that
    reaches it cannot finish until the test ends."""
    assert conversation.enriched_file_path is not None
    pattern = f"/{conversation.enriched_file_path}".encode()
    async with HoldingForwarder(stack.seaweed.endpoint_url, pattern) as store:
        settings = stack_settings(stack.postgres, stack.seaweed, s3_endpoint_url=store.endpoint_url)
        async with (
            running_server(settings) as held,
            authorized_channel(held.port, token) as channel,
        ):
            yield store, service_pb2_grpc.TrainingFileServiceStub(channel)


async def test_a_create_whose_deadline_passes_fails_and_aborts_its_uploads(
    stack: Stack, token: str, stub: Stub, server: RunningServer, big: list[GeneratedConversation]
) -> None:
    ids = [str(c.conversation_id) for c in big[:30]]
    async with held_at(stack, token, big[29]) as (store, held):
        call = held.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=unique_name("deadline"), conversation_ids=ids
            ),
            timeout=DEADLINE,
        )
        file_id = (await call.read()).training_file_id
        await asyncio.wait_for(store.held.wait(), DEADLINE)
        assert await wait_for_uploads(server, f"{file_id}/", 1)

        result = await collect(call)

        assert stream_error(result).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        message = await _wait_until_failed_and_clean(stub, server, file_id)
        assert "deadline" in message
        assert await open_uploads(server, f"{file_id}/") == set()


async def test_an_add_whose_deadline_passes_changes_nothing(
    stack: Stack, token: str, stub: Stub, server: RunningServer, big: list[GeneratedConversation]
) -> None:
    ids = [str(c.conversation_id) for c in big]
    created = await create_ok(stub, unique_name("deadline-add"), ids[:10])
    prefix = f"{created.id}/"
    async with held_at(stack, token, big[29]) as (store, held):
        call = held.AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=created.id, conversation_ids=ids[10:30]
            ),
            timeout=DEADLINE,
        )
        await asyncio.wait_for(store.held.wait(), DEADLINE)
        assert await wait_for_uploads(server, prefix, 1)

        result = await collect(call)

        assert stream_error(result).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        old_keys = output_keys(created)
        async with asyncio.timeout(TIMEOUT):
            while (  # noqa: ASYNC110 (polled: the cleanup announces nothing)
                await object_keys(server, prefix) != old_keys
                or await open_uploads(server, prefix)
                or await intent_count(server, created.id)
            ):
                await asyncio.sleep(0.05)
    assert await get(stub, created.id) == created
    assert [c.conversation_id for c in await file_conversations(stub, created.id)] == ids[:10]
    after = await add_ok(stub, created.id, ids[30:32])
    assert (after.version, after.conversation_count) == (2, 12)


# ----------------------------------------------------------------- what an operator sees


async def test_a_failed_build_is_logged_with_its_reason(stub: Stub, dataset: Dataset) -> None:
    bad = dataset.ids(Kind.MALFORMED_SCHEMA)[0]
    with captured_logs() as records:
        result = await create(stub, unique_name("logged-failure"), [dataset.ids()[44], bad])
    assert stream_error(result).code() == grpc.StatusCode.FAILED_PRECONDITION

    failures = [
        fields
        for fields in logged(records, "build failed")
        if fields.get("training_file_id") == result.training_file_id
    ]

    assert len(failures) == 1
    assert bad in failures[0]["reason"]


async def test_a_sweep_that_repairs_something_is_logged(server: RunningServer) -> None:
    """`swept`: the builds it failed, the objects it deleted and the uploads it aborted."""
    pool = server.database.pool
    client = server.storage.client
    bucket = server.storage.training_bucket
    dead_id, token = uuid.uuid4(), uuid.uuid4()
    key = f"{dead_id}/dead_x.jsonl"
    await pool.execute(
        "INSERT INTO training_files (id, name, status, lease_token, lease_expires_at) "
        "VALUES ($1, $2, 'processing', $3, now() - interval '1 second')",
        dead_id,
        unique_name("logged-sweep"),
        token,
    )
    await client.put_object(Bucket=bucket, Key=key + ".done", Body=b"{}\n")
    upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
    await pool.execute(
        "INSERT INTO storage_intents (bucket, object_key, training_file_id, lease_token, "
        "upload_id) VALUES ($1, $2, $3, $4, $5), ($1, $6, $3, $4, NULL)",
        bucket,
        key,
        dead_id,
        token,
        upload["UploadId"],
        key + ".done",
    )

    with captured_logs() as records:
        report = await server.sweeper.sweep()

    assert str(dead_id) in report.failed_builds
    (swept,) = logged(records, "swept")
    assert str(dead_id) in swept["failed_builds"]
    assert swept["deleted_objects"] >= 1
    assert swept["aborted_uploads"] >= 1
    assert await object_keys(server, f"{dead_id}/") == set()
    assert await open_uploads(server, f"{dead_id}/") == set()


async def test_a_create_cancelled_while_the_store_creates_its_upload_aborts_it(
    stack: Stack, token: str, server: RunningServer, big: list[GeneratedConversation]
) -> None:
    """The store has created the JSONL's multipart upload and its answer is on the way
    when the caller cancels: the build must still abort that upload itself (no sweep
    runs here), not leave it for the sweeper's orphan pass a lease later."""
    ids = [str(c.conversation_id) for c in big[:30]]
    answer = b"<InitiateMultipartUploadResult"
    async with HoldingForwarder(stack.seaweed.endpoint_url, answer, answers=True) as store:
        settings = stack_settings(stack.postgres, stack.seaweed, s3_endpoint_url=store.endpoint_url)
        async with (
            running_server(settings) as held,
            authorized_channel(held.port, token) as channel,
        ):
            call = service_pb2_grpc.TrainingFileServiceStub(channel).CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(
                    name=unique_name("cancel-creating"), conversation_ids=ids
                ),
                timeout=TIMEOUT,
            )
            file_id = (await call.read()).training_file_id
            await asyncio.wait_for(store.held.wait(), TIMEOUT)
            assert await wait_for_uploads(server, f"{file_id}/", 1)  # the store has it

            call.cancel()
            # A build that drops the upload fails its file at once; one that waits for
            # the upload's id to abort it waits for the answer. Bounded either way.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    while (await file_row(server, file_id))["status"] != "failed":  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
            store.release.set()
            await _failed_and_clean(server, file_id)

    assert await open_uploads(server, f"{file_id}/") == set()
    assert await object_keys(server, f"{file_id}/") == set()
