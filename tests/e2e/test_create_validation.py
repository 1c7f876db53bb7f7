"""CreateTrainingFile, rejected before any work: status codes, typed details, no writes.

Every rejected request must leave the database and the training bucket exactly as they
were: no new `training_files` row and no new object.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    Stub,
    assert_nothing_written,
    collect,
    create,
    create_ok,
    detail,
    error_reason,
    expect_error,
    field_violations,
    get,
    precondition_violations,
    snapshot,
    stream_error,
    unique_name,
    violation_fields,
)
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Kind
from trainingfiles_server.app import RunningServer, running_server


@pytest.mark.parametrize(
    ("name", "description", "field"),
    [
        pytest.param("", None, "name", id="empty-name"),
        pytest.param("a/b", None, "name", id="slash-in-name"),
        pytest.param("../escape", None, "name", id="dot-dot-slash"),
        pytest.param(".hidden", None, "name", id="leading-dot"),
        pytest.param("x" * 129, None, "name", id="129-characters"),
        pytest.param("has space", None, "name", id="space-in-name"),
        pytest.param("naïve", None, "name", id="non-ascii-name"),
        pytest.param("new\nline", None, "name", id="newline-in-name"),
        pytest.param(None, "d" * 2001, "description", id="description-2001"),
    ],
)
async def test_bad_name_or_description_is_invalid_argument_naming_the_field(
    stub: Stub,
    server: RunningServer,
    dataset: Dataset,
    name: str | None,
    description: str | None,
    field: str,
) -> None:
    before = await snapshot(server)

    result = await create(
        stub, unique_name("ok") if name is None else name, dataset.ids()[:1], description
    )

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == [field]
    assert result.messages == []
    await assert_nothing_written(server, before)


async def test_every_argument_problem_is_reported_together(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)
    good = dataset.ids()[0]

    result = await create(stub, ".bad", [good, "nope", good], "d" * 2001)

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == [
        "name",
        "description",
        "conversation_ids[1]",
        "conversation_ids[2]",
    ]
    await assert_nothing_written(server, before)


async def test_no_conversation_ids_is_invalid_argument(stub: Stub, server: RunningServer) -> None:
    before = await snapshot(server)

    result = await create(stub, unique_name("no-ids"), [])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["conversation_ids"]
    await assert_nothing_written(server, before)


async def test_more_ids_than_the_limit_is_resource_exhausted_with_a_quota_failure(
    stub: Stub, server: RunningServer
) -> None:
    before = await snapshot(server)
    ids = [str(uuid.uuid4()) for _ in range(10_001)]

    result = await create(stub, unique_name("too-many"), ids)

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = detail(error, error_details_pb2.QuotaFailure)
    assert [v.subject for v in quota.violations] == ["conversation_ids"]
    assert "10000" in quota.violations[0].description
    assert error_reason(error) == "TOO_MANY_CONVERSATIONS"
    await assert_nothing_written(server, before)


async def test_malformed_and_repeated_ids_are_each_reported_with_their_index(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)
    a, b = dataset.ids()[:2]
    ids = [a, "not-a-uuid", a, "", b, b.upper(), "1234", a]

    result = await create(stub, unique_name("bad-ids"), ids)

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error)
    assert [f for f, _ in violations] == [
        "conversation_ids[1]",
        "conversation_ids[2]",
        "conversation_ids[3]",
        "conversation_ids[5]",
        "conversation_ids[6]",
        "conversation_ids[7]",
    ]
    descriptions = dict(violations)
    assert descriptions["conversation_ids[2]"] == "duplicate of conversation_ids[0]"
    assert descriptions["conversation_ids[5]"] == "duplicate of conversation_ids[4]"
    assert descriptions["conversation_ids[7]"] == "duplicate of conversation_ids[0]"
    assert "not a UUID" in descriptions["conversation_ids[1]"]
    assert "not a UUID" in descriptions["conversation_ids[6]"]
    assert "not-a-uuid" in error.details()
    await assert_nothing_written(server, before)


async def test_every_ineligible_conversation_is_reported_with_its_reason(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)
    unknown = str(uuid.uuid4())
    (not_started, _), (in_progress, _), (null_path, _) = (
        dataset.ids(Kind.NOT_STARTED),
        dataset.ids(Kind.IN_PROGRESS),
        dataset.ids(Kind.NULL_PATH),
    )
    eligible = dataset.ids()[0]
    ids = [eligible, unknown, not_started, in_progress, null_path]

    result = await create(stub, unique_name("ineligible"), ids)

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [
        ("CONVERSATION_NOT_FOUND", unknown),
        ("CONVERSATION_NOT_ENRICHED", not_started),
        ("CONVERSATION_NOT_ENRICHED", in_progress),
        ("CONVERSATION_NO_ENRICHED_FILE", null_path),
    ]
    for subject in (unknown, not_started, in_progress, null_path):
        assert subject in error.details()
    assert result.messages == []
    await assert_nothing_written(server, before)


async def test_argument_problems_come_before_conversation_checks(
    stub: Stub, server: RunningServer
) -> None:
    before = await snapshot(server)

    result = await create(stub, "", [str(uuid.uuid4())])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_nothing_written(server, before)


async def test_a_name_in_use_is_already_exists(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    name = unique_name("taken")
    first = await create_ok(stub, name, dataset.ids()[:1])
    before = await snapshot(server)

    result = await create(stub, name, dataset.ids()[1:2])

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert name in error.details()
    resource = detail(error, error_details_pb2.ResourceInfo)
    assert resource.resource_name == name
    await assert_nothing_written(server, before)
    rows = await server.database.pool.fetchval(
        "SELECT count(*) FROM training_files WHERE name = $1", name
    )
    assert rows == 1
    assert (await get(stub, first.id)) == first


async def test_a_name_is_taken_by_an_archived_file_too(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    name = unique_name("taken-archived")
    first = await create_ok(stub, name, dataset.ids()[:1])
    await stub.ArchiveTrainingFile(
        service_pb2.ArchiveTrainingFileRequest(training_file_id=first.id)
    )
    before = await snapshot(server)

    result = await create(stub, name, dataset.ids()[1:2])

    assert stream_error(result).code() == grpc.StatusCode.ALREADY_EXISTS
    await assert_nothing_written(server, before)


@pytest.mark.parametrize("count", [100, 190, 10_000])
async def test_many_offenders_reach_a_default_grpc_client_with_a_count(
    server: RunningServer, token: str, count: int
) -> None:
    """Standard clients refuse trailers above 8 KiB: the details list the first offenders
    and say how many there are; ValidateConversations returns every one."""
    before = await snapshot(server)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    metadata = [("authorization", f"Bearer {token}")]
    # A channel with gRPC's default options: 8 KiB soft / 16 KiB hard metadata limits.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        request = service_pb2.CreateTrainingFileRequest(
            name=unique_name("many-unknown"), conversation_ids=ids
        )
        error = stream_error(await collect(stub.CreateTrainingFile(request, metadata=metadata)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        listed = precondition_violations(error)
        assert 0 < len(listed) <= count
        assert listed == [("CONVERSATION_NOT_FOUND", i) for i in ids[: len(listed)]]
        info = detail(error, error_details_pb2.ErrorInfo)
        if len(listed) < count:
            assert info.metadata["violations_total"] == str(count)
            assert info.metadata["violations_listed"] == str(len(listed))
            assert f"first {len(listed)} of {count}" in (error.details() or "")
        trailers = sum(len(k) + len(v) for k, v in error.trailing_metadata() or ())
        assert trailers < 8 * 1024

        report = await stub.ValidateConversations(
            service_pb2.ValidateConversationsRequest(conversation_ids=ids), metadata=metadata
        )
    assert [(p.reason, p.subject) for p in report.problems] == [
        ("CONVERSATION_NOT_FOUND", i) for i in ids
    ]
    assert report.valid_count == 0
    await assert_nothing_written(server, before)


async def test_many_malformed_ids_are_counted_too(server: RunningServer, token: str) -> None:
    ids = [f"not-a-uuid-{i}" for i in range(2_000)]
    metadata = [("authorization", f"Bearer {token}")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        request = service_pb2.CreateTrainingFileRequest(name="", conversation_ids=ids)
        error = stream_error(await collect(stub.CreateTrainingFile(request, metadata=metadata)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violation_fields(error)
    # The name's problem comes first, then the first ids.
    assert fields[:3] == ["name", "conversation_ids[0]", "conversation_ids[1]"]
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.metadata["violations_total"] == str(len(ids) + 1)


async def test_validate_conversations_reports_what_create_would_and_changes_nothing(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)
    good = dataset.ids()[:2]
    not_enriched = dataset.ids(Kind.NOT_STARTED)[0]
    ids = [good[0], "bad", good[1], not_enriched, good[0]]
    report = await stub.ValidateConversations(
        service_pb2.ValidateConversationsRequest(conversation_ids=ids)
    )
    assert [(p.subject, p.reason) for p in report.problems] == [
        ("conversation_ids[1]", "MALFORMED_ID"),
        ("conversation_ids[4]", "DUPLICATE_ID"),
        (not_enriched, "CONVERSATION_NOT_ENRICHED"),
    ]
    assert report.valid_count == 2
    await assert_nothing_written(server, before)


async def test_validate_conversations_for_an_add_checks_membership_and_status(
    stub: Stub, dataset: Dataset
) -> None:
    ids = dataset.ids()
    created = await create_ok(stub, unique_name("validate-add"), ids[:1])
    report = await stub.ValidateConversations(
        service_pb2.ValidateConversationsRequest(
            conversation_ids=ids[:2], training_file_id=created.id
        )
    )
    assert [(p.subject, p.reason) for p in report.problems] == [
        (ids[0], "CONVERSATION_ALREADY_IN_FILE")
    ]
    assert report.valid_count == 1
    await stub.ArchiveTrainingFile(
        service_pb2.ArchiveTrainingFileRequest(training_file_id=created.id)
    )
    report = await stub.ValidateConversations(
        service_pb2.ValidateConversationsRequest(
            conversation_ids=ids[1:2], training_file_id=created.id
        )
    )
    assert [(p.subject, p.reason) for p in report.problems] == [
        (created.id, "TRAINING_FILE_NOT_ACTIVE")
    ]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.ValidateConversations(
            service_pb2.ValidateConversationsRequest(
                conversation_ids=ids[1:2], training_file_id=str(uuid.uuid4())
            )
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_validate_conversations_reports_an_empty_request_and_never_reads_documents(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    """No ids is a REQUIRED problem on `conversation_ids`; a conversation whose enriched
    document is missing passes, since documents are not read (a Create finds it later)."""
    before = await snapshot(server)

    empty = await stub.ValidateConversations(service_pb2.ValidateConversationsRequest())
    missing = dataset.ids(Kind.MISSING_OBJECT)[0]
    unread = await stub.ValidateConversations(
        service_pb2.ValidateConversationsRequest(conversation_ids=[missing, dataset.ids()[0]])
    )

    assert [(p.subject, p.reason) for p in empty.problems] == [("conversation_ids", "REQUIRED")]
    assert empty.valid_count == 0
    assert list(unread.problems) == []
    assert unread.valid_count == 2
    await assert_nothing_written(server, before)


async def test_validate_conversations_refuses_bad_arguments_as_create_would(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    before = await snapshot(server)
    ids = dataset.ids()[:1]
    user = [("authorization", f"Bearer {mint('authenticated')}")]

    def validate(**fields: Any) -> Any:
        return stub.ValidateConversations(
            service_pb2.ValidateConversationsRequest(**fields), timeout=30
        )

    bad_file = await expect_error(validate(conversation_ids=ids, training_file_id="nope"))
    bad_owner = await expect_error(validate(conversation_ids=ids, on_behalf_of="nope"))
    too_many = await expect_error(
        validate(conversation_ids=[str(uuid.uuid4()) for _ in range(10_001)])
    )
    not_allowed = await expect_error(
        stub.ValidateConversations(
            service_pb2.ValidateConversationsRequest(
                conversation_ids=ids, on_behalf_of=str(uuid.uuid4())
            ),
            metadata=user,
            timeout=30,
        )
    )

    assert bad_file.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(bad_file) == ["training_file_id"]
    assert bad_owner.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(bad_owner) == ["on_behalf_of"]
    assert too_many.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = detail(too_many, error_details_pb2.QuotaFailure)
    assert [v.subject for v in quota.violations] == ["conversation_ids"]
    assert not_allowed.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(not_allowed) == "ON_BEHALF_OF_NOT_ALLOWED"
    await assert_nothing_written(server, before)


async def test_validate_conversations_for_an_add_ignores_on_behalf_of(
    stub: Stub, dataset: Dataset
) -> None:
    """With `training_file_id`, the file's owner counts, not `on_behalf_of`."""
    created = await create_ok(stub, unique_name("validate-owner"), dataset.ids()[:1])

    report = await stub.ValidateConversations(
        service_pb2.ValidateConversationsRequest(
            conversation_ids=dataset.ids()[1:3],
            training_file_id=created.id,
            on_behalf_of=str(uuid.uuid4()),
        )
    )

    assert list(report.problems) == []
    assert report.valid_count == 2


async def test_the_id_limit_is_the_servers_setting(stack: Stack, token: str) -> None:
    """MAX_CONVERSATIONS_PER_REQUEST sets the limit: 3 ids where it is 2 are too many."""
    settings = stack_settings(stack.postgres, stack.seaweed, max_conversations_per_request=2)
    async with running_server(settings) as small, authorized_channel(small.port, token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        result = await create(stub, unique_name("limit-setting"), ids)
        report = await stub.ValidateConversations(
            service_pb2.ValidateConversationsRequest(conversation_ids=ids[:2])
        )

    error = stream_error(result)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = detail(error, error_details_pb2.QuotaFailure)
    assert "limit of 2" in quota.violations[0].description
    assert [p.reason for p in report.problems] == ["CONVERSATION_NOT_FOUND"] * 2
