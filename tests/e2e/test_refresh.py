"""Re-generation: a conversation re-enriched after its file was built (a new document at
a new key, or new content at the same key) makes the file stale; RefreshTrainingFile
rebuilds exactly the stale conversations, equal to a Create of the same conversations
now, and every earlier version keeps its content."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

import grpc
import orjson
import pytest

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import OWNER
from tests.e2e.helpers import (
    ACTIVE,
    JSONL,
    StreamResult,
    Stub,
    collect,
    error_reason,
    get,
    precondition_violations,
    stream_error,
)
from tests.e2e.test_outputs import TRAINER, _create_ok, _split
from tests.e2e.test_remove import _members, _outputs, _pairs_of, _same_metrics
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.storage import Storage

TIMEOUT = 60
FETCHING = service_pb2.TrainingFileProgress.STAGE_FETCHING


@dataclasses.dataclass
class Setup:
    stub: Stub
    server: RunningServer
    storage: Storage
    conversations: list[GeneratedConversation]


@pytest.fixture(scope="module")
async def setup(stack: Stack, server: RunningServer, storage: Storage) -> AsyncIterator[Setup]:
    """Conversations of this module only (they are re-enriched), and a server keeping
    three versions' objects."""
    conversations = list(generate(9203, 12, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    settings = stack_settings(stack.postgres, stack.seaweed, version_retention=3)
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        yield Setup(
            service_pb2_grpc.TrainingFileServiceStub(channel), running, storage, conversations
        )


def _ids(conversations: Sequence[GeneratedConversation]) -> list[str]:
    return [str(c.conversation_id) for c in conversations]


def _rewritten(conversation: GeneratedConversation, text: str) -> bytes:
    """The conversation's document with every target response changed: new content."""
    document = orjson.loads(conversation.document or b"")
    for pair in document["training_pairs"]:
        pair["target_response"] = f"{text} {pair['target_response']}"
    return orjson.dumps(document)


async def _put(setup: Setup, key: str, body: bytes) -> None:
    await setup.storage.client.put_object(
        Bucket=setup.storage.conversations_bucket, Key=key, Body=body
    )


async def _reenrich_at_new_key(setup: Setup, conversation: GeneratedConversation) -> None:
    key = f"{conversation.created_by}/{conversation.conversation_id}/enriched-v2.json"
    await _put(setup, key, _rewritten(conversation, "Revised:"))
    await setup.server.database.pool.execute(
        "UPDATE conversations SET enriched_file_path = $2 WHERE conversation_id = $1",
        conversation.conversation_id,
        key,
    )


async def _reenrich_in_place(setup: Setup, conversation: GeneratedConversation) -> None:
    """What the pipeline does: in progress, a new document at the same key, completed."""
    pool = setup.server.database.pool
    await pool.execute(
        "UPDATE conversations SET enrichment_status = 'enrichment_in_progress' "
        "WHERE conversation_id = $1",
        conversation.conversation_id,
    )
    assert conversation.enriched_file_path
    await _put(setup, conversation.enriched_file_path, _rewritten(conversation, "Reworded:"))
    await pool.execute(
        "UPDATE conversations SET enrichment_status = 'completed' WHERE conversation_id = $1",
        conversation.conversation_id,
    )


async def refresh(stub: Stub, file_id: str, remove_ineligible: bool = False) -> StreamResult:
    request = service_pb2.RefreshTrainingFileRequest(
        training_file_id=file_id, remove_ineligible=remove_ineligible
    )
    return await collect(stub.RefreshTrainingFile(request, timeout=TIMEOUT))


async def _stale(stub: Stub, file_id: str) -> int:
    file = await get(stub, file_id)
    assert file.HasField("stale_conversation_count")
    return file.stale_conversation_count


async def test_a_refresh_rebuilds_exactly_the_reenriched_conversations(setup: Setup) -> None:
    stub, chosen = setup.stub, setup.conversations[:6]
    ids = _ids(chosen)
    options = {"formats": TRAINER, "split": _split(0.34, seed=5)}
    created = await _create_ok(stub, ids, **options)
    before = await _outputs(stub, created)
    assert await _stale(stub, created.id) == 0

    # Nothing stale: no new version.
    unchanged = await refresh(stub, created.id)
    assert unchanged.error is None and unchanged.training_file.version == 1

    await _reenrich_at_new_key(setup, chosen[1])
    assert await _stale(stub, created.id) == 1
    await _reenrich_in_place(setup, chosen[4])
    assert await _stale(stub, created.id) == 2

    result = await refresh(stub, created.id)
    assert result.error is None, result.error
    after = result.training_file
    assert (after.status, after.version, after.conversation_count) == (ACTIVE, 2, 6)
    fetching = [m for m in result.messages if m.stage == FETCHING]
    assert fetching and fetching[-1].total == 2  # only the stale documents were fetched
    assert await _stale(stub, created.id) == 0

    # Equal to a Create of the same conversations now, in the same order.
    fresh = await _create_ok(stub, ids, **options)
    _same_metrics(after, fresh)
    assert _pairs_of(await _outputs(stub, after)) == _pairs_of(await _outputs(stub, fresh))
    assert await _members(stub, created.id) == ids
    # The refreshed pairs are the new ones.
    assert b"Revised:" in (await _outputs(stub, after))[(JSONL, resources_pb2.SPLIT_ALL)]

    # Version 1 as it was built.
    assert await _outputs(stub, after, 1) == before
    assert await _members(stub, created.id, 1) == ids
    versions = await stub.ListTrainingFileVersions(
        service_pb2.ListTrainingFileVersionsRequest(training_file_id=created.id), timeout=TIMEOUT
    )
    newest = versions.versions[0]
    assert (newest.reason, newest.change_count) == (resources_pb2.VERSION_REASON_REFRESHED, 2)


async def test_a_stale_conversation_no_longer_eligible_is_listed_or_removed(
    setup: Setup,
) -> None:
    stub, chosen = setup.stub, setup.conversations[6:10]
    ids = _ids(chosen)
    created = await _create_ok(stub, ids)
    await setup.server.database.pool.execute(
        "UPDATE conversations SET enrichment_status = 'enrichment_in_progress' "
        "WHERE conversation_id = $1",
        chosen[2].conversation_id,
    )
    assert await _stale(stub, created.id) == 1

    refused = stream_error(await refresh(stub, created.id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused) == "CONVERSATIONS_NOT_ELIGIBLE"
    assert precondition_violations(refused) == [("CONVERSATION_NOT_ENRICHED", ids[2])]
    assert (await get(stub, created.id)).version == 1

    removed = await refresh(stub, created.id, remove_ineligible=True)
    assert removed.error is None, removed.error
    assert removed.training_file.version == 2
    assert await _members(stub, created.id) == [ids[0], ids[1], ids[3]]
    fresh = await _create_ok(stub, [ids[0], ids[1], ids[3]])
    _same_metrics(removed.training_file, fresh)
    assert await _stale(stub, created.id) == 0
