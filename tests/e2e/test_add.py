"""AddConversations: rebuilding a file, validation, failures that keep the old content,
and concurrent calls on one file."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

import grpc
import pytest

from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    ACTIVE,
    FETCHING,
    JSON,
    JSONL,
    VALIDATING,
    StreamResult,
    Stub,
    add,
    assert_nothing_written,
    create,
    create_ok,
    download,
    file_conversations,
    get,
    intent_count,
    jsonl_records,
    key_moment,
    object_keys,
    output_keys,
    precondition_violations,
    snapshot,
    stream_error,
    unique_name,
    violation_fields,
)
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import GeneratedConversation, Kind, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

_VOLATILE = re.compile(
    rb'^\{"dataset_metadata":\{"dataset_name":"[^"]*","version":"4\.0\.0",'
    rb'"created_date":"[^"]*",'
)


def _normalised(json_document: bytes) -> bytes:
    """The JSON document with its name and creation date blanked out."""
    blanked, count = _VOLATILE.subn(
        b'{"dataset_metadata":{"dataset_name":"","version":"4.0.0","created_date":"",',
        json_document,
    )
    assert count == 1, json_document[:200]
    return blanked


@dataclass(frozen=True)
class Extended:
    a: list[str]
    b: list[str]
    created: resources_pb2.TrainingFile
    added: StreamResult
    json: bytes
    jsonl: bytes
    fresh: resources_pb2.TrainingFile
    fresh_json: bytes
    fresh_jsonl: bytes


@pytest.fixture(scope="module")
async def extended(stub: Stub, dataset: Dataset) -> Extended:
    """Create with A, add B; and, for comparison, a fresh Create of A + B."""
    eligible, extra = dataset.ids(Kind.ELIGIBLE), dataset.ids(Kind.EXTRA_FIELDS)
    a = [eligible[20], extra[2]]
    b = [eligible[21], extra[3], eligible[22]]
    created = await create_ok(stub, unique_name("add-base"), a)
    added = await add(stub, created.id, b)
    assert added.error is None, added.error
    fresh = await create_ok(stub, unique_name("add-fresh"), a + b)
    return Extended(
        a,
        b,
        created,
        added,
        await download(stub, created.id, JSON),
        await download(stub, created.id, JSONL),
        fresh,
        await download(stub, fresh.id, JSON),
        await download(stub, fresh.id, JSONL),
    )


# ----------------------------------------------------------------- a successful add


def test_add_stream_starts_validating_the_new_conversations(extended: Extended) -> None:
    first = extended.added.messages[0]

    assert first.stage == VALIDATING
    assert first.training_file_id == extended.created.id
    assert first.done == first.total == len(extended.b)
    assert any(m.stage == FETCHING for m in extended.added.messages)


def test_add_ends_with_version_2_and_every_conversation(extended: Extended) -> None:
    file = extended.added.training_file

    assert file.id == extended.created.id
    assert file.status == ACTIVE
    assert file.version == 2
    assert file.conversation_count == len(extended.a) + len(extended.b)
    assert file.total_training_pairs == extended.fresh.total_training_pairs


def test_added_jsonl_equals_a_fresh_create_of_the_same_conversations(extended: Extended) -> None:
    assert extended.jsonl == extended.fresh_jsonl


def test_added_json_equals_a_fresh_create_apart_from_name_and_date(extended: Extended) -> None:
    assert _normalised(extended.json) == _normalised(extended.fresh_json)


def test_added_metadata_equals_a_fresh_create(extended: Extended) -> None:
    file, fresh = extended.added.training_file, extended.fresh

    assert file.quality_summary == fresh.quality_summary
    assert file.scaffolding_distribution == fresh.scaffolding_distribution
    assert (file.json_file_size, file.jsonl_file_size) == (
        len(extended.json),
        len(extended.jsonl),
    )
    assert len(jsonl_records(extended.jsonl)) == file.total_training_pairs


async def test_add_replaces_the_objects_and_deletes_the_old_ones(
    extended: Extended, server: RunningServer
) -> None:
    old, new = extended.created, extended.added.training_file

    assert output_keys(new).isdisjoint(output_keys(old))
    assert await object_keys(server, f"{old.id}/") == output_keys(new)
    assert await intent_count(server, old.id) == 0


async def test_file_conversations_list_a_then_b_in_order(extended: Extended, stub: Stub) -> None:
    listed = await file_conversations(stub, extended.created.id, page_size=2)

    assert [c.conversation_id for c in listed] == extended.a + extended.b
    assert all(c.training_pair_count > 0 and c.added_by == "" for c in listed)
    added_at = [c.added_at.ToDatetime() for c in listed]
    assert added_at[0] == added_at[1] < added_at[2] == added_at[3] == added_at[4]


async def test_add_of_consistent_conversations_sends_no_mismatch_warning(
    extended: Extended,
) -> None:
    assert extended.added.mismatch_warnings() == []


async def test_add_warns_about_a_conversation_with_another_profile(
    stub: Stub, dataset: Dataset
) -> None:
    created = await create_ok(stub, unique_name("add-warn"), dataset.ids()[23:24])
    (other_profile,) = dataset.ids(Kind.OTHER_PROFILE)

    result = await add(stub, created.id, [dataset.ids()[24], other_profile])

    assert result.error is None, result.error
    assert [(w.code, list(w.conversation_ids)) for w in result.mismatch_warnings()] == [
        ("CONSULTANT_PROFILE_MISMATCH", [other_profile])
    ]


# ----------------------------------------------------------------- validation


async def test_add_to_an_unknown_file_is_not_found(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)

    result = await add(stub, str(uuid.uuid4()), dataset.ids()[:1])

    assert stream_error(result).code() == grpc.StatusCode.NOT_FOUND
    await assert_nothing_written(server, before)


async def test_add_with_a_malformed_file_id_is_invalid_argument(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)

    result = await add(stub, "not-a-file-id", dataset.ids()[:1])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["training_file_id"]
    await assert_nothing_written(server, before)


async def test_add_reports_a_malformed_file_id_and_bad_ids_together(stub: Stub) -> None:
    result = await add(stub, "", ["x", "y"])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == [
        "training_file_id",
        "conversation_ids[0]",
        "conversation_ids[1]",
    ]


async def test_add_without_ids_is_invalid_argument(stub: Stub, dataset: Dataset) -> None:
    created = await create_ok(stub, unique_name("add-no-ids"), dataset.ids()[:1])

    result = await add(stub, created.id, [])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["conversation_ids"]


async def test_add_of_a_conversation_already_in_the_file_is_failed_precondition(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    ids = dataset.ids()[25:27]
    created = await create_ok(stub, unique_name("add-dup"), ids)
    unknown = str(uuid.uuid4())
    before = await snapshot(server)

    result = await add(stub, created.id, [dataset.ids()[27], ids[1], unknown])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [
        ("CONVERSATION_ALREADY_IN_FILE", ids[1]),
        ("CONVERSATION_NOT_FOUND", unknown),
    ]
    await assert_nothing_written(server, before)
    assert await get(stub, created.id) == created


async def test_add_to_an_archived_file_is_failed_precondition(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    created = await create_ok(stub, unique_name("add-archived"), dataset.ids()[:1])
    archived = await stub.ArchiveTrainingFile(
        service_pb2.ArchiveTrainingFileRequest(training_file_id=created.id)
    )
    before = await snapshot(server)

    result = await add(stub, created.id, dataset.ids()[1:2])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("TRAINING_FILE_NOT_ACTIVE", created.id)]
    await assert_nothing_written(server, before)
    assert await get(stub, created.id) == archived


async def test_add_to_a_failed_file_is_failed_precondition(stub: Stub, dataset: Dataset) -> None:
    failed = await create(
        stub, unique_name("add-failed"), [dataset.ids()[0], *dataset.ids(Kind.MISSING_OBJECT)[:1]]
    )
    assert stream_error(failed).code() == grpc.StatusCode.FAILED_PRECONDITION

    result = await add(stub, failed.training_file_id, dataset.ids()[1:2])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("TRAINING_FILE_NOT_ACTIVE", failed.training_file_id)]


# ----------------------------------------------------------------- failures keep the old content


@pytest.mark.parametrize("kind", [Kind.MISSING_OBJECT, Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA])
async def test_a_bad_document_during_add_leaves_the_previous_content_intact(
    stub: Stub, server: RunningServer, dataset: Dataset, kind: Kind
) -> None:
    created = await create_ok(stub, unique_name(f"add-bad-{kind.value}"), dataset.ids()[28:30])
    json_before = await download(stub, created.id, JSON)
    jsonl_before = await download(stub, created.id, JSONL)
    bad = dataset.ids(kind)[0]

    result = await add(stub, created.id, [dataset.ids()[30], bad, dataset.ids()[31]])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("ENRICHED_DOCUMENT_INVALID", bad)]
    assert result.training_file_id == created.id
    assert await get(stub, created.id) == created
    assert await object_keys(server, f"{created.id}/") == output_keys(created)
    assert await intent_count(server, created.id) == 0
    assert await download(stub, created.id, JSON) == json_before
    assert await download(stub, created.id, JSONL) == jsonl_before
    listed = await file_conversations(stub, created.id)
    assert [c.conversation_id for c in listed] == dataset.ids()[28:30]


# ----------------------------------------------------------------- concurrency


async def test_concurrent_adds_to_one_file_both_succeed_and_lose_nothing(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    base, first, second = dataset.ids()[32:34], dataset.ids()[34:37], dataset.ids()[37:40]
    created = await create_ok(stub, unique_name("add-concurrent"), base)

    one, two = await asyncio.gather(add(stub, created.id, first), add(stub, created.id, second))

    assert one.error is None and two.error is None, (one.error, two.error)
    assert sorted([one.training_file.version, two.training_file.version]) == [2, 3]
    final = await get(stub, created.id)
    assert final.version == 3
    assert final.conversation_count == len(base) + len(first) + len(second)
    listed = [c.conversation_id for c in await file_conversations(stub, created.id)]
    later = first + second if one.training_file.version == 2 else second + first
    assert listed == base + later
    lines = jsonl_records(await download(stub, created.id, JSONL))
    assert len(lines) == final.total_training_pairs
    assert list(dict.fromkeys(line["conversation_id"] for line in lines)) == listed
    assert await object_keys(server, f"{created.id}/") == output_keys(final)


def test_an_adds_keys_are_stamped_later_than_the_ones_it_replaces(extended: Extended) -> None:
    old, new = extended.created, extended.added.training_file
    file_id, name, replaced = key_moment(old.jsonl_file_path)

    assert key_moment(new.json_file_path) == key_moment(new.jsonl_file_path)
    new_id, new_name, stamped = key_moment(new.jsonl_file_path)
    assert (new_id, new_name) == (file_id, name)
    assert stamped > replaced


# ----------------------------------------------------------------- only the new documents are read

OWN_SEED = 1616


@pytest.fixture(scope="module")
async def own(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    """Six eligible conversations of this module's own user."""
    conversations = list(generate(OWN_SEED, 6, owners=[uuid.uuid4()]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    return conversations


async def test_an_add_reads_only_the_new_conversations_documents(
    stub: Stub, storage: Storage, own: list[GeneratedConversation]
) -> None:
    """The stored content and summaries are reused: with the enriched documents of the
    file's conversations gone from storage, an Add still gives exactly a Create's result,
    and it fetches (and counts) the new conversations only."""
    first, later = own[:2], own[2:4]
    a = [str(c.conversation_id) for c in first]
    b = [str(c.conversation_id) for c in later]
    created = await create_ok(stub, unique_name("add-reuse"), a)
    fresh = await create_ok(stub, unique_name("add-reuse-fresh"), a + b)
    for conversation in first:
        assert conversation.enriched_file_path is not None
        await storage.client.delete_object(
            Bucket=storage.conversations_bucket, Key=conversation.enriched_file_path
        )

    added = await add(stub, created.id, b)

    assert added.error is None, added.error
    counted = [m for m in added.messages if m.stage in (VALIDATING, FETCHING)]
    assert counted and {m.total for m in counted} == {len(b)}
    file = added.training_file
    assert (file.version, file.conversation_count) == (2, 4)
    assert file.quality_summary == fresh.quality_summary
    assert file.scaffolding_distribution == fresh.scaffolding_distribution
    assert await download(stub, created.id, JSONL) == await download(stub, fresh.id, JSONL)
    json_document = await download(stub, created.id, JSON)
    assert _normalised(json_document) == _normalised(await download(stub, fresh.id, JSON))


async def test_two_adds_of_one_conversation_at_once_add_it_once(
    stub: Stub, own: list[GeneratedConversation]
) -> None:
    """The second Add is checked against the file as the first left it."""
    base, twice = str(own[4].conversation_id), str(own[5].conversation_id)
    created = await create_ok(stub, unique_name("add-same-twice"), [base])

    one, two = await asyncio.gather(add(stub, created.id, [twice]), add(stub, created.id, [twice]))

    succeeded = [r for r in (one, two) if r.error is None]
    refused = [r for r in (one, two) if r.error is not None]
    assert len(succeeded) == len(refused) == 1, (one.error, two.error)
    error = stream_error(refused[0])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("CONVERSATION_ALREADY_IN_FILE", twice)]
    final = await get(stub, created.id)
    assert (final.version, final.conversation_count) == (2, 2)
    assert final.jsonl_file_path == succeeded[0].training_file.jsonl_file_path
    listed = [c.conversation_id for c in await file_conversations(stub, created.id)]
    assert listed == [base, twice]


async def test_members_staged_in_batches_keep_their_order_and_figures(
    stub: Stub, dataset: Dataset, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New members are staged a batch at a time while the build runs
    (`staging.STAGE_BATCH`) and moved by the commit: with batches of 2, a Create of 5
    and an Add of 3 list every member once, in order, with its summary and provenance,
    as a Create of all 8 in one batch does; no staged row is left."""
    from trainingfiles_server import staging

    eligible = dataset.ids(Kind.ELIGIBLE)
    a, b = eligible[30:35], eligible[35:38]
    whole = await create_ok(stub, unique_name("batch-whole"), a + b)
    monkeypatch.setattr(staging, "STAGE_BATCH", 2)
    created = await create_ok(stub, unique_name("batch-create"), a)
    added = await add(stub, created.id, b)
    assert added.error is None, added.error

    def summaries(
        members: list[resources_pb2.TrainingFileConversation],
    ) -> list[tuple[str, int, float, str]]:
        return [
            (m.conversation_id, m.training_pair_count, m.quality_score, m.persona_key)
            for m in members
        ]

    listed = await file_conversations(stub, created.id, page_size=3)
    assert summaries(listed) == summaries(await file_conversations(stub, whole.id))
    positions = await server.database.pool.fetch(
        "SELECT position, document_key FROM training_file_conversations "
        "WHERE training_file_id = $1 ORDER BY position",
        uuid.UUID(created.id),
    )
    assert [r["position"] for r in positions] == list(range(8))
    assert all(r["document_key"] for r in positions)
    assert await download(stub, created.id, JSONL) == await download(stub, whole.id, JSONL)
    staged = await server.database.pool.fetchval(
        "SELECT count(*) FROM staged_members WHERE training_file_id = ANY($1::uuid[])",
        [uuid.UUID(created.id), uuid.UUID(whole.id)],
    )
    assert staged == 0
