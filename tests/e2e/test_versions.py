"""Immutable versions: every Create and Add records a version whose members, counts and
outputs stay as they were built; earlier versions still download, byte for byte, until
retention prunes them; a pruned version keeps its metadata and says so."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import OWNER, Dataset
from tests.e2e.helpers import (
    JSON,
    JSONL,
    Stub,
    add_ok,
    create_ok,
    error_reason,
    expect_error,
    http_get,
    object_keys,
    precondition_violations,
    unique_name,
)
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Kind
from trainingfiles_server.app import RunningServer, running_server

RETENTION = 3
TIMEOUT = 60


@dataclasses.dataclass
class Served:
    server: RunningServer
    stub: Stub


@pytest.fixture(scope="module")
async def served(stack: Stack, server: RunningServer) -> AsyncIterator[Served]:
    """A server keeping the last RETENTION versions' objects (the suite's keeps one)."""
    settings = stack_settings(stack.postgres, stack.seaweed, version_retention=RETENTION)
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        yield Served(running, service_pb2_grpc.TrainingFileServiceStub(channel))


async def _url(
    stub: Stub, file_id: str, fmt: int, version: int = 0
) -> service_pb2.GetDownloadUrlResponse:
    request = service_pb2.GetDownloadUrlRequest(
        training_file_id=file_id,
        format=fmt,  # type: ignore[arg-type]
        version=version,
    )
    response: service_pb2.GetDownloadUrlResponse = await stub.GetDownloadUrl(
        request, timeout=TIMEOUT
    )
    return response


async def _bytes(stub: Stub, file_id: str, fmt: int, version: int = 0) -> bytes:
    return (await http_get((await _url(stub, file_id, fmt, version)).url)).body


async def _versions(stub: Stub, file_id: str, page_size: int = 0) -> list[Version]:
    found: list[Version] = []
    token = ""
    while True:
        page = await stub.ListTrainingFileVersions(
            service_pb2.ListTrainingFileVersionsRequest(
                training_file_id=file_id, page_size=page_size, page_token=token
            ),
            timeout=TIMEOUT,
        )
        found.extend(page.versions)
        token = page.next_page_token
        if not token:
            return found


Version = resources_pb2.TrainingFileVersion


async def _members(stub: Stub, file_id: str, version: int) -> list[str]:
    page = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file_id, version=version, page_size=1000
        ),
        timeout=TIMEOUT,
    )
    return [c.conversation_id for c in page.conversations]


async def test_every_version_keeps_its_content_until_retention_prunes_it(
    served: Served, dataset: Dataset
) -> None:
    stub = served.stub
    ids = dataset.ids(Kind.ELIGIBLE)[40:46]
    created = await create_ok(stub, unique_name("versions"), ids[:2])
    content = {1: (await _bytes(stub, created.id, JSON), await _bytes(stub, created.id, JSONL))}
    members = {1: ids[:2]}
    file = created
    for version, extra in ((2, ids[2:3]), (3, ids[3:5]), (4, ids[5:6])):
        file = await add_ok(stub, created.id, extra)
        assert file.version == version
        content[version] = (
            await _bytes(stub, created.id, JSON),
            await _bytes(stub, created.id, JSONL),
        )
        members[version] = members[version - 1] + extra

    # Newest first, each with why it was made and what it held.
    versions = await _versions(stub, created.id)
    assert [v.version for v in versions] == [4, 3, 2, 1]
    assert [v.reason for v in versions] == [
        resources_pb2.VERSION_REASON_ADDED,
        resources_pb2.VERSION_REASON_ADDED,
        resources_pb2.VERSION_REASON_ADDED,
        resources_pb2.VERSION_REASON_CREATED,
    ]
    assert [v.change_count for v in versions] == [1, 2, 1, 2]
    assert [v.conversation_count for v in versions] == [6, 5, 3, 2]
    assert [v.current for v in versions] == [True, False, False, False]
    # Retention keeps the last three versions' objects: version 1 is pruned.
    assert [v.pruned for v in versions] == [False, False, False, True]
    assert versions[3].HasField("prune_time") and not versions[0].HasField("prune_time")
    # Paging walks the same list.
    assert [v.version for v in await _versions(stub, created.id, page_size=1)] == [4, 3, 2, 1]

    for version in (2, 3, 4):
        # Every kept version still downloads, byte for byte, with its recorded checksum.
        for fmt, index in ((JSON, 0), (JSONL, 1)):
            link = await _url(stub, created.id, fmt, version)
            body = (await http_get(link.url)).body
            assert link.version == version
            assert body == content[version][index]
            assert hashlib.sha256(body).hexdigest() == link.sha256
        # Get and the member list describe the version as it was built.
        described = await stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=created.id, version=version),
            timeout=TIMEOUT,
        )
        assert described.version == version
        assert described.conversation_count == len(members[version])
        assert described.jsonl_file_size == len(content[version][1])
        assert {o.object_key for o in described.outputs} == {
            o.object_key for o in next(v for v in versions if v.version == version).outputs
        }
        assert await _members(stub, created.id, version) == members[version]
    # The current version is what a call naming no version gets.
    assert await _members(stub, created.id, 0) == members[4]

    # The pruned version: metadata kept, objects gone (once no link can use them).
    error = await expect_error(_url(stub, created.id, JSONL, 1))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "VERSION_PRUNED"
    assert precondition_violations(error) == [("VERSION_PRUNED", "version/1")]
    old = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=created.id, version=1),
        timeout=TIMEOUT,
    )
    assert old.conversation_count == 2
    await served.server.database.pool.execute(
        "UPDATE storage_intents SET delete_after = now() WHERE training_file_id = $1::uuid",
        created.id,
    )
    await served.server.sweeper.sweep()
    stored = await object_keys(served.server, f"{created.id}/")
    pruned_keys = {o.object_key for o in versions[3].outputs}
    kept_keys = {o.object_key for v in versions[:3] for o in v.outputs}
    assert not stored & pruned_keys
    assert kept_keys <= stored


async def test_a_version_the_file_never_had_is_not_found(served: Served, dataset: Dataset) -> None:
    stub = served.stub
    created = await create_ok(stub, unique_name("versions"), dataset.ids(Kind.ELIGIBLE)[46:47])
    for call in (
        _url(stub, created.id, JSONL, 7),
        stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=created.id, version=7),
            timeout=TIMEOUT,
        ),
        stub.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=created.id, version=7
            ),
            timeout=TIMEOUT,
        ),
    ):
        error = await expect_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error_reason(error) == "VERSION_NOT_FOUND"
    error = await expect_error(_url(stub, created.id, JSONL, -1))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Naming the current version is the same as naming none.
    assert (await _url(stub, created.id, JSONL, 1)).version == 1
    (only,) = await _versions(stub, created.id)
    assert only.current and not only.pruned and only.reason == resources_pb2.VERSION_REASON_CREATED


async def test_another_users_versions_are_not_found(served: Served, dataset: Dataset) -> None:
    owner, stranger = mint("authenticated", OWNER), mint("authenticated", uuid.uuid4())
    async with authorized_channel(served.server.port, owner) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        created = await create_ok(stub, unique_name("versions"), dataset.ids(Kind.ELIGIBLE)[47:48])
    async with authorized_channel(served.server.port, stranger) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        error = await expect_error(
            stub.ListTrainingFileVersions(
                service_pb2.ListTrainingFileVersionsRequest(training_file_id=created.id),
                timeout=TIMEOUT,
            )
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND
