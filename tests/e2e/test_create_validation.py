"""CreateTrainingFile, rejected before any work: status codes, typed details, no writes.

Every rejected request must leave the database and the training bucket exactly as they
were: no new `training_files` row and no new object.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    Stub,
    assert_nothing_written,
    create,
    create_ok,
    detail,
    error_reason,
    field_violations,
    get,
    precondition_violations,
    snapshot,
    stream_error,
    unique_name,
    violation_fields,
)
from trainingfiles.v1 import service_pb2
from trainingfiles_server.app import RunningServer
from trainingfiles_server.dev.generator import Kind


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


async def test_ten_thousand_ineligible_conversations_are_all_reported(
    stub: Stub, server: RunningServer
) -> None:
    """Every offender is in the details (~1.3 MB of trailing metadata: the test channel
    raises gRPC's default 16 KiB limit for received metadata, as the client library does)."""
    before = await snapshot(server)
    ids = [str(uuid.uuid4()) for _ in range(10_000)]

    result = await create(stub, unique_name("many-unknown"), ids)

    error = stream_error(result)
    await assert_nothing_written(server, before)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("CONVERSATION_NOT_FOUND", i) for i in ids]
