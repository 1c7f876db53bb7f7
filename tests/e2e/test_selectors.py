"""Selectors: a Create or Add takes the conversations the database chooses, exactly what
the same filter in SQL returns, oldest first; ListEligibleConversations shows the same."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.helpers import (
    JSONL,
    Stub,
    collect,
    download,
    error_reason,
    expect_error,
    precondition_violations,
    stream_error,
    unique_name,
    violation_fields,
)
from tests.e2e.test_remove import _members
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.storage import Storage

TIMEOUT = 60

# The oracle: the same filter, written out.
ORACLE = """
SELECT conversation_id::text FROM conversations
WHERE enrichment_status = 'completed' AND enriched_file_path IS NOT NULL
  AND created_by = $1 AND persona_id = ANY($2::uuid[]) AND created_at >= $3
ORDER BY created_at, conversation_id
"""


def _timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


# Conversations of an owner of this module only: all of them valid, so whatever a
# selector takes can be built.
SELECTED_OWNER = uuid.UUID("00000000-0000-4000-8000-0000000005e1")


@pytest.fixture(scope="module")
async def owned(server: RunningServer, storage: Storage) -> list[str]:
    made = list(generate(9407, 30, owners=[SELECTED_OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return [str(c.conversation_id) for c in made]


async def _personas(server: RunningServer) -> tuple[list[uuid.UUID], datetime.datetime]:
    """Two personas of the owner's conversations, and a time that leaves some out."""
    rows = await server.database.pool.fetch(
        "SELECT persona_id, count(*) FROM conversations WHERE created_by = $1 "
        "AND enrichment_status = 'completed' GROUP BY persona_id ORDER BY count(*) DESC LIMIT 2",
        SELECTED_OWNER,
    )
    middle = await server.database.pool.fetchval(
        "SELECT percentile_disc(0.3) WITHIN GROUP (ORDER BY created_at) FROM conversations "
        "WHERE created_by = $1",
        SELECTED_OWNER,
    )
    return [r["persona_id"] for r in rows], middle


def _selector(personas: list[uuid.UUID], after: datetime.datetime, **more: Any) -> Any:
    return service_pb2.ConversationSelector(
        persona_ids=[str(p) for p in personas], created_after=_timestamp(after), **more
    )


async def test_a_create_takes_exactly_what_the_filter_selects(
    stub: Stub, server: RunningServer, owned: list[str]
) -> None:
    personas, after = await _personas(server)
    expected = [
        r["conversation_id"]
        for r in await server.database.pool.fetch(ORACLE, SELECTED_OWNER, personas, after)
    ]
    assert expected
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("selected"),
        on_behalf_of=str(SELECTED_OWNER),
        selector=_selector(personas, after),
    )
    result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    assert result.error is None, result.error
    created = result.training_file
    assert await _members(stub, created.id) == expected

    # The pickers see the same conversations (newest first).
    listed = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(
            page_size=1000, selector=_selector(personas, after, owner=str(SELECTED_OWNER))
        ),
        timeout=TIMEOUT,
    )
    assert [c.conversation_id for c in listed.conversations] == expected[::-1]

    # A limit takes the oldest; listed ids come first.
    first = expected[0]
    limited = service_pb2.CreateTrainingFileRequest(
        name=unique_name("selected"),
        on_behalf_of=str(SELECTED_OWNER),
        conversation_ids=[expected[-1]],
        selector=_selector(personas, after, limit=2),
    )
    result = await collect(stub.CreateTrainingFile(limited, timeout=TIMEOUT))
    assert result.error is None, result.error
    assert await _members(stub, result.training_file.id) == [expected[-1], first, expected[1]]


async def test_an_add_selects_only_what_the_file_lacks(
    stub: Stub, server: RunningServer, owned: list[str]
) -> None:
    personas, after = await _personas(server)
    expected = [
        r["conversation_id"]
        for r in await server.database.pool.fetch(ORACLE, SELECTED_OWNER, personas, after)
    ]
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("selected"),
        on_behalf_of=str(SELECTED_OWNER),
        conversation_ids=expected[1:3],
    )
    created = (await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))).training_file
    add = service_pb2.AddConversationsRequest(
        training_file_id=created.id, selector=_selector(personas, after)
    )
    result = await collect(stub.AddConversations(add, timeout=TIMEOUT))
    assert result.error is None, result.error
    rest = [c for c in expected if c not in expected[1:3]]
    assert await _members(stub, created.id) == [*expected[1:3], *rest]


async def test_bad_selectors_are_refused_naming_each_field(
    stub: Stub, server: RunningServer
) -> None:
    bad = service_pb2.ConversationSelector(
        persona_ids=["nope"], training_topic_ids=[str(uuid.uuid4()), "x"], limit=-1
    )
    error = stream_error(
        await collect(
            stub.CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(name=unique_name("bad"), selector=bad),
                timeout=TIMEOUT,
            )
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == [
        "selector.persona_ids[0]",
        "selector.training_topic_ids[1]",
        "selector.limit",
    ]

    nothing = service_pb2.ConversationSelector(persona_ids=[str(uuid.uuid4())])
    error = stream_error(
        await collect(
            stub.CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(name=unique_name("none"), selector=nothing),
                timeout=TIMEOUT,
            )
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "NO_CONVERSATIONS_SELECTED"

    # A user selects only their own conversations.
    async with authorized_channel(server.port, mint("authenticated", uuid.uuid4())) as channel:
        user = service_pb2_grpc.TrainingFileServiceStub(channel)
        theirs = service_pb2.ConversationSelector(owner=str(SELECTED_OWNER))
        error = await expect_error(
            user.ListEligibleConversations(
                service_pb2.ListEligibleConversationsRequest(selector=theirs), timeout=TIMEOUT
            )
        )
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_selector_read_in_small_pages_builds_what_the_listed_ids_build(
    stack: Stack, token: str, stub: Stub, server: RunningServer, owned: list[str]
) -> None:
    """A server reading a selector's conversations 4 at a time (`selector_page_size`)
    builds, with a listed id first and a split, exactly the file an id-list Create of
    the same conversations in the same order builds: members, JSONL bytes, metrics and
    each trainer output of each side of the split (same records, same checksum)."""
    personas, after = await _personas(server)
    expected = [
        r["conversation_id"]
        for r in await server.database.pool.fetch(ORACLE, SELECTED_OWNER, personas, after)
    ]
    assert len(expected) > 8  # more than two pages
    listed = expected[5]
    order = [listed, *(c for c in expected if c != listed)]
    split = resources_pb2.SplitOptions(validation_count=3, seed=11)
    formats = [resources_pb2.FILE_FORMAT_OPENAI_CHAT]
    by_ids = service_pb2.CreateTrainingFileRequest(
        name=unique_name("paged-ids"),
        on_behalf_of=str(SELECTED_OWNER),
        conversation_ids=order,
        split=split,
        formats=formats,
    )
    result = await collect(stub.CreateTrainingFile(by_ids, timeout=TIMEOUT))
    assert result.error is None, result.error
    whole = result.training_file

    settings = stack_settings(stack.postgres, stack.seaweed, selector_page_size=4)
    async with running_server(settings) as paged, authorized_channel(paged.port, token) as channel:
        paged_stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        by_selector = service_pb2.CreateTrainingFileRequest(
            name=unique_name("paged-selector"),
            on_behalf_of=str(SELECTED_OWNER),
            conversation_ids=[listed],
            selector=_selector(personas, after),
            split=split,
            formats=formats,
        )
        result = await collect(paged_stub.CreateTrainingFile(by_selector, timeout=TIMEOUT))
        assert result.error is None, result.error
        selected = result.training_file
        assert await _members(paged_stub, selected.id) == order
        assert await download(paged_stub, selected.id, JSONL) == await download(
            stub, whole.id, JSONL
        )

    def figures(f: resources_pb2.TrainingFile) -> tuple[Any, ...]:
        return (
            f.conversation_count,
            f.total_training_pairs,
            f.quality_summary,
            f.scaffolding_distribution,
        )

    def trainer(f: resources_pb2.TrainingFile) -> list[tuple[Any, ...]]:
        return sorted(
            (o.split, o.record_count, o.size_bytes, o.sha256)
            for o in f.outputs
            if o.format == resources_pb2.FILE_FORMAT_OPENAI_CHAT
        )

    assert figures(selected) == figures(whole)
    assert len(trainer(whole)) == 2  # train and validation
    assert trainer(selected) == trainer(whole)


async def test_listed_ids_are_checked_a_page_at_a_time_reporting_every_offender(
    stack: Stack, token: str, owned: list[str]
) -> None:
    """A server checking listed ids 4 at a time (`selector_page_size`) reports every
    ineligible one of every page, in request order, and builds nothing; with every id
    eligible it builds them all, in request order, as one page would."""
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    mixed = [owned[0], unknown[0], *owned[1:6], unknown[1], owned[6], unknown[2]]
    settings = stack_settings(stack.postgres, stack.seaweed, selector_page_size=4)
    async with running_server(settings) as paged, authorized_channel(paged.port, token) as channel:
        paged_stub = service_pb2_grpc.TrainingFileServiceStub(channel)

        def request(ids: list[str]) -> service_pb2.CreateTrainingFileRequest:
            return service_pb2.CreateTrainingFileRequest(
                name=unique_name("paged-listed"),
                on_behalf_of=str(SELECTED_OWNER),
                conversation_ids=ids,
            )

        refused = await collect(paged_stub.CreateTrainingFile(request(mixed), timeout=TIMEOUT))
        error = stream_error(refused)
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert precondition_violations(error) == [
            ("CONVERSATION_NOT_FOUND", subject) for subject in unknown
        ]
        assert not refused.messages

        order = [*reversed(owned[:9])]  # three pages, not in the table's order
        built = await collect(paged_stub.CreateTrainingFile(request(order), timeout=TIMEOUT))
        assert built.error is None, built.error
        assert await _members(paged_stub, built.training_file.id) == order
