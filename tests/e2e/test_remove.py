"""RemoveConversations: a new version without the named conversations, built from the
stored file (no document fetched), equal to a Create of the remaining ones; every
offender of a refused request listed; the earlier version intact."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    ACTIVE,
    JSON,
    JSONL,
    StreamResult,
    Stub,
    add_ok,
    collect,
    error_reason,
    get,
    http_get,
    object_keys,
    open_uploads,
    precondition_violations,
    stream_error,
    violation_fields,
)
from tests.e2e.test_outputs import TRAINER, _create_ok, _split
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Kind
from trainingfiles_server import db
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.duplicates import DIGEST_SIZE

TIMEOUT = 60
RENDERING = service_pb2.TrainingFileProgress.STAGE_RENDERING


@pytest.fixture(scope="module")
async def kept(stack: Stack, server: RunningServer) -> AsyncIterator[Stub]:
    """A server keeping three versions' objects (the suite's keeps one)."""
    settings = stack_settings(stack.postgres, stack.seaweed, version_retention=3)
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        yield service_pb2_grpc.TrainingFileServiceStub(channel)


async def remove(stub: Stub, file_id: str, ids: Sequence[str]) -> StreamResult:
    request = service_pb2.RemoveConversationsRequest(
        training_file_id=file_id, conversation_ids=list(ids)
    )
    return await collect(stub.RemoveConversations(request, timeout=TIMEOUT))


async def remove_ok(stub: Stub, file_id: str, ids: Sequence[str]) -> StreamResult:
    result = await remove(stub, file_id, ids)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result


async def _outputs(
    stub: Stub, file: resources_pb2.TrainingFile, version: int = 0
) -> dict[Any, bytes]:
    """Every output of a version but the card (whose text names the file), by format/split."""
    found = {}
    for output in file.outputs:
        if output.format == resources_pb2.FILE_FORMAT_DATASET_CARD:
            continue
        link = await stub.GetDownloadUrl(
            service_pb2.GetDownloadUrlRequest(
                training_file_id=file.id,
                format=output.format,
                split=output.split,
                version=version,
            ),
            timeout=TIMEOUT,
        )
        body = (await http_get(link.url)).body
        assert hashlib.sha256(body).hexdigest() == link.sha256
        found[(output.format, output.split)] = body
    return found


def _pairs_of(outputs: dict[Any, bytes]) -> dict[Any, bytes]:
    """The outputs with the v4 JSON's header (name, date) left out: its pairs and footer."""
    trimmed = dict(outputs)
    json_key = (JSON, resources_pb2.SPLIT_ALL)
    document = trimmed.pop(json_key)
    trimmed[json_key] = document[document.index(b'"training_pairs":') :]
    return trimmed


async def _members(stub: Stub, file_id: str, version: int = 0) -> list[str]:
    page = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file_id, version=version, page_size=1000
        ),
        timeout=TIMEOUT,
    )
    return [c.conversation_id for c in page.conversations]


def _same_metrics(a: resources_pb2.TrainingFile, b: resources_pb2.TrainingFile) -> None:
    assert (a.conversation_count, a.total_training_pairs) == (
        b.conversation_count,
        b.total_training_pairs,
    )
    assert a.quality_summary == b.quality_summary
    assert a.scaffolding_distribution == b.scaffolding_distribution
    assert (a.duplicate_pair_count, a.untrainable_pair_count) == (
        b.duplicate_pair_count,
        b.untrainable_pair_count,
    )


@pytest.mark.parametrize("stored_page", [None, 3], ids=["one-page", "pages-of-3"])
async def test_a_remove_equals_a_create_of_the_remaining_conversations(
    kept: Stub, dataset: Dataset, stored_page: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every format and the split, byte for byte; the earlier version as it was. Also
    when the stored members are read in pages of 3 (`db.STORED_PAGE`): in order, none
    twice or missed."""
    if stored_page is not None:
        monkeypatch.setattr(db, "STORED_PAGE", stored_page)
    ids = dataset.ids(Kind.ELIGIBLE)[60:66] + dataset.ids(Kind.EXTRA_FIELDS)[:2]
    gone = [ids[2], ids[6]]
    remaining = [c for c in ids if c not in gone]
    options = {"formats": TRAINER, "split": _split(0.25, seed=11)}
    created = await _create_ok(kept, ids, **options)
    before = await _outputs(kept, created)

    result = await remove_ok(kept, created.id, gone)
    after = result.training_file
    assert (after.status, after.version, after.conversation_count) == (ACTIVE, 2, len(remaining))
    rendering = [m for m in result.messages if m.stage == RENDERING]
    assert rendering and rendering[-1].done == rendering[-1].total == created.total_training_pairs

    fresh = await _create_ok(kept, remaining, **options)
    _same_metrics(after, fresh)
    assert {(o.format, o.split) for o in after.outputs} == {
        (o.format, o.split) for o in fresh.outputs
    }
    assert _pairs_of(await _outputs(kept, after)) == _pairs_of(await _outputs(kept, fresh))
    assert await _members(kept, created.id) == remaining

    # The version before is untouched: its members, and its outputs byte for byte.
    assert await _members(kept, created.id, 1) == ids
    assert await _outputs(kept, after, 1) == before
    versions = await kept.ListTrainingFileVersions(
        service_pb2.ListTrainingFileVersionsRequest(training_file_id=created.id), timeout=TIMEOUT
    )
    newest = versions.versions[0]
    assert (newest.version, newest.reason, newest.change_count) == (
        2,
        resources_pb2.VERSION_REASON_REMOVED,
        2,
    )


async def test_a_removed_conversation_can_be_added_again_at_the_end(
    kept: Stub, dataset: Dataset
) -> None:
    ids = dataset.ids(Kind.ELIGIBLE)[66:70]
    created = await _create_ok(kept, ids)
    await remove_ok(kept, created.id, [ids[0]])
    again = await add_ok(kept, created.id, [ids[0]])
    assert again.version == 3 and again.conversation_count == 4
    order = [*ids[1:], ids[0]]
    assert await _members(kept, created.id) == order
    fresh = await _create_ok(kept, order)
    _same_metrics(again, fresh)
    jsonl = [
        (await http_get(u.url)).body
        for u in [
            await kept.GetDownloadUrl(
                service_pb2.GetDownloadUrlRequest(training_file_id=f, format=JSONL),
                timeout=TIMEOUT,
            )
            for f in (created.id, fresh.id)
        ]
    ]
    assert jsonl[0] == jsonl[1]
    # The removal's version still lists the conversation as gone.
    assert await _members(kept, created.id, 2) == ids[1:]


async def test_a_refused_remove_lists_every_offender_and_changes_nothing(
    stub: Stub, dataset: Dataset
) -> None:
    ids = dataset.ids(Kind.ELIGIBLE)[70:73]
    created = await _create_ok(stub, ids)
    stranger = dataset.ids(Kind.ELIGIBLE)[73]

    malformed = stream_error(await remove(stub, created.id, [ids[0], "nope", ids[0]]))
    assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(malformed) == ["conversation_ids[1]", "conversation_ids[2]"]
    empty = stream_error(await remove(stub, created.id, []))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT

    outsiders = stream_error(await remove(stub, created.id, [stranger, ids[1], ids[0][:-1] + "0"]))
    assert outsiders.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(outsiders) == "CONVERSATIONS_NOT_IN_FILE"
    listed = precondition_violations(outsiders)
    assert ("CONVERSATION_NOT_IN_FILE", stranger) in listed
    assert all(reason == "CONVERSATION_NOT_IN_FILE" for reason, _ in listed)
    assert ids[1] not in {subject for _, subject in listed}

    everything = stream_error(await remove(stub, created.id, ids))
    assert everything.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(everything) == "WOULD_EMPTY_FILE"

    unknown = stream_error(await remove(stub, "00000000-0000-4000-8000-000000000000", ids[:1]))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND

    # Nothing changed: same version, same members.
    current = await get(stub, created.id)
    assert (current.version, current.conversation_count) == (1, 3)
    assert await _members(stub, created.id) == ids


@pytest.mark.parametrize("shift", [1, -1], ids=["first_claims_more", "first_claims_fewer"])
async def test_members_whose_lines_do_not_match_their_counts_fail_the_remove_and_change_nothing(
    shift: int, stub: Stub, dataset: Dataset, server: RunningServer
) -> None:
    """Lines are found by counting each member's pairs (its stored digests), not by
    decoding them: a count that disagrees with the stored file must fail the Remove
    (INTERNAL), never keep or leave out the wrong pairs; the file keeps its version and
    nothing of the failed build is left in the store."""
    ids = dataset.ids(Kind.ELIGIBLE)[74:78] if shift > 0 else dataset.ids(Kind.ELIGIBLE)[78:82]
    created = await _create_ok(stub, ids)
    before = await object_keys(server, f"{created.id}/")
    # The first member claims one pair more (or fewer) than it has, the second one fewer
    # (or more): the file's lines add up, but the boundary between them is one line off.
    pool = server.database.pool
    for member, change in ((ids[0], shift), (ids[1], -shift)):
        await pool.execute(
            "UPDATE training_file_conversations SET training_pair_count = "
            "training_pair_count + $3, pair_digests = CASE WHEN $3 > 0 "
            "THEN pair_digests || $4 ELSE substring(pair_digests FROM $5) END "
            "WHERE training_file_id = $1 AND conversation_id = $2",
            uuid.UUID(created.id),
            uuid.UUID(member),
            change,
            bytes(DIGEST_SIZE),
            DIGEST_SIZE + 1,
        )

    failed = stream_error(await remove(stub, created.id, [ids[2]]))

    assert failed.code() is grpc.StatusCode.INTERNAL
    current = await get(stub, created.id)
    assert (current.version, current.conversation_count) == (1, 4)
    assert await object_keys(server, f"{created.id}/") == before
    assert await open_uploads(server, f"{created.id}/") == set()
