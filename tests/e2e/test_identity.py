"""Identity end to end: bearer tokens on the wire, and two users kept apart.

Every refused call is shown to change nothing: the rows of `training_files`,
`training_file_conversations` and `storage_intents` (counts, and every file's status and
version), and the keys of the training bucket. The server stays SERVING throughout.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import authorized_channel, mint
from tests.e2e.guards import (
    SERVICE,
    SERVING,
    User,
    assert_serving,
    assert_unchanged,
    ids_of,
    make_user,
    state,
)
from tests.e2e.helpers import (
    ACTIVE,
    JSON,
    TIMEOUT,
    StreamResult,
    Stub,
    add,
    collect,
    detail,
    error_reason,
    expect_error,
    file_conversations,
    precondition_violations,
    rich_status,
    stream_error,
    unique_name,
    violation_fields,
)
from tests.tokens import BadToken, bad_tokens
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Awkward
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

ALICE = uuid.UUID("00000000-0000-4000-8000-0000000a11ce")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
ALICE_SEED, BOB_SEED = 6101, 6102

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Party:
    """A user, their stub, and the training file they created."""

    user: User
    stub: Stub
    file: resources_pb2.TrainingFile


async def _create(
    stub: Stub,
    ids: Sequence[str],
    *,
    name: str | None = None,
    on_behalf_of: str = "",
    metadata: Sequence[tuple[str, str]] | None = None,
) -> StreamResult:
    request = service_pb2.CreateTrainingFileRequest(
        name=name or unique_name("identity"),
        conversation_ids=list(ids),
        on_behalf_of=on_behalf_of,
    )
    return await collect(stub.CreateTrainingFile(request, metadata=metadata, timeout=TIMEOUT))


async def _created(stub: Stub, ids: Sequence[str], **kwargs: Any) -> resources_pb2.TrainingFile:
    result = await _create(stub, ids, **kwargs)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result.training_file


@pytest.fixture(autouse=True)
async def still_serving(server: RunningServer) -> AsyncIterator[None]:
    """After every test here, the server and its service are still SERVING."""
    yield
    await assert_serving(server.port)


@pytest.fixture(scope="module")
async def bare(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel that sends no token unless a call names one."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def _party(
    server: RunningServer, storage: Storage, user_id: uuid.UUID, seed: int
) -> AsyncIterator[Party]:
    user = await make_user(
        server, storage, seed, 16, user_id=user_id, awkward=Awkward(not_started=1, null_path=1)
    )
    async with authorized_channel(server.port, user.token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        file = await _created(stub, user.ids(3))
        yield Party(user, stub, file)


@pytest.fixture(scope="module")
async def alice(server: RunningServer, storage: Storage) -> AsyncIterator[Party]:
    async for party in _party(server, storage, ALICE, ALICE_SEED):
        yield party


@pytest.fixture(scope="module")
async def bob(server: RunningServer, storage: Storage) -> AsyncIterator[Party]:
    async for party in _party(server, storage, BOB, BOB_SEED):
        yield party


def _code(error: grpc.aio.AioRpcError) -> str:
    return str(error.code().name)


# ----------------------------------------------------------------- tokens


@pytest.mark.parametrize("case", bad_tokens(ALICE), ids=lambda case: case.name)
async def test_a_bad_token_is_refused_and_changes_nothing(
    case: BadToken, alice: Party, bare: grpc.aio.Channel, server: RunningServer
) -> None:
    """A Create that Alice's valid token would get through, and a Get of her file."""
    stub = service_pb2_grpc.TrainingFileServiceStub(bare)
    before = await state(server)
    error = stream_error(await _create(stub, alice.user.ids(2), metadata=case.metadata()))
    assert _code(error) == case.code, error.details()
    if case.reason is not None:
        assert error_reason(error) == case.reason
        assert rich_status(error).code == error.code().value[0]
    token = (case.authorization or "").partition(" ")[2]
    if len(token) >= 16:
        assert token[:64] not in (error.details() or "")
    get = await expect_error(
        stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=alice.file.id),
            metadata=case.metadata(),
            timeout=TIMEOUT,
        )
    )
    assert _code(get) == case.code
    await assert_unchanged(server, before)
    await assert_serving(server.port)


def _requests(file_id: str, ids: list[str]) -> dict[str, Any]:
    return {
        "CreateTrainingFile": service_pb2.CreateTrainingFileRequest(
            name=unique_name("no-token"), conversation_ids=ids
        ),
        "AddConversations": service_pb2.AddConversationsRequest(
            training_file_id=file_id, conversation_ids=ids
        ),
        "GetTrainingFile": service_pb2.GetTrainingFileRequest(training_file_id=file_id),
        "ListTrainingFiles": service_pb2.ListTrainingFilesRequest(),
        "ListTrainingFileConversations": service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file_id
        ),
        "GetDownloadUrl": service_pb2.GetDownloadUrlRequest(training_file_id=file_id, format=JSON),
        "ArchiveTrainingFile": service_pb2.ArchiveTrainingFileRequest(training_file_id=file_id),
        "ListEligibleConversations": service_pb2.ListEligibleConversationsRequest(),
        "ValidateConversations": service_pb2.ValidateConversationsRequest(conversation_ids=ids),
    }


RPCS = list(_requests("", []))


@pytest.mark.parametrize("rpc", RPCS)
async def test_every_rpc_needs_a_token(
    rpc: str, alice: Party, bare: grpc.aio.Channel, server: RunningServer
) -> None:
    stub = service_pb2_grpc.TrainingFileServiceStub(bare)
    request = _requests(alice.file.id, alice.user.ids()[3:5])[rpc]
    before = await state(server)
    call = getattr(stub, rpc)(request, timeout=TIMEOUT)
    if rpc in ("CreateTrainingFile", "AddConversations"):
        error = stream_error(await collect(call))
    else:
        error = await expect_error(call)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_MISSING"
    await assert_unchanged(server, before)


async def test_health_and_reflection_need_no_token(bare: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(bare)
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert (await watch.read()).status == SERVING
    watch.cancel()
    reflection = reflection_pb2_grpc.ServerReflectionStub(bare)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
    assert SERVICE in {s.name for s in responses[0].list_services_response.service}


async def test_a_valid_token_in_lower_case_scheme_is_accepted(
    alice: Party, bare: grpc.aio.Channel
) -> None:
    stub = service_pb2_grpc.TrainingFileServiceStub(bare)
    file = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=alice.file.id),
        metadata=[("authorization", f"bearer {alice.user.token}")],
        timeout=TIMEOUT,
    )
    assert file.id == alice.file.id


# ----------------------------------------------------------------- two users


async def _not_found_like_an_unknown_file(
    stub: Stub, rpc: str, request_for: Any, file_id: str
) -> None:
    """The call on `file_id` fails exactly as it does on an id that names nothing."""
    unknown = str(uuid.uuid4())
    errors = []
    for target in (file_id, unknown):
        call = getattr(stub, rpc)(request_for(target), timeout=TIMEOUT)
        if rpc == "AddConversations":
            errors.append(stream_error(await collect(call)))
        else:
            errors.append(await expect_error(call))
    theirs, nobodys = errors
    assert theirs.code() == nobodys.code() == grpc.StatusCode.NOT_FOUND, theirs.details()
    assert theirs.details() == (nobodys.details() or "").replace(unknown, file_id)
    assert error_reason(theirs) == error_reason(nobodys) == "NOT_FOUND"
    info = detail(theirs, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("training_file", file_id)


@pytest.mark.parametrize("direction", ["bob-on-alice", "alice-on-bob"])
async def test_neither_user_can_read_extend_or_archive_the_others_file(
    direction: str, alice: Party, bob: Party, server: RunningServer
) -> None:
    viewer, owner = (bob, alice) if direction == "bob-on-alice" else (alice, bob)
    before = await state(server)
    own_ids = viewer.user.ids()[3:5]
    requests: dict[str, Any] = {
        "GetTrainingFile": lambda i: service_pb2.GetTrainingFileRequest(training_file_id=i),
        "ListTrainingFileConversations": lambda i: service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=i
        ),
        "GetDownloadUrl": lambda i: service_pb2.GetDownloadUrlRequest(
            training_file_id=i, format=JSON
        ),
        "AddConversations": lambda i: service_pb2.AddConversationsRequest(
            training_file_id=i, conversation_ids=own_ids
        ),
        "ArchiveTrainingFile": lambda i: service_pb2.ArchiveTrainingFileRequest(training_file_id=i),
        "ListEligibleConversations": lambda i: service_pb2.ListEligibleConversationsRequest(
            exclude_training_file_id=i
        ),
    }
    for rpc, request_for in requests.items():
        await _not_found_like_an_unknown_file(viewer.stub, rpc, request_for, owner.file.id)
    await assert_unchanged(server, before)
    # The owner's file is untouched: still active, same version, same conversations.
    file = await owner.stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=owner.file.id), timeout=TIMEOUT
    )
    assert (file.status, file.version) == (ACTIVE, owner.file.version)
    await assert_serving(server.port)


async def _list_files(stub: Stub, page_size: int = 0) -> list[resources_pb2.TrainingFile]:
    found: list[resources_pb2.TrainingFile] = []
    token = ""
    while True:
        page = await stub.ListTrainingFiles(
            service_pb2.ListTrainingFilesRequest(
                include_archived=True, page_size=page_size, page_token=token
            ),
            timeout=TIMEOUT,
        )
        found.extend(page.training_files)
        if not (token := page.next_page_token):
            return found


async def _list_eligible(
    stub: Stub, page_size: int = 1000
) -> list[resources_pb2.EligibleConversation]:
    found: list[resources_pb2.EligibleConversation] = []
    token = ""
    while True:
        page = await stub.ListEligibleConversations(
            service_pb2.ListEligibleConversationsRequest(page_size=page_size, page_token=token),
            timeout=TIMEOUT,
        )
        found.extend(page.conversations)
        if not (token := page.next_page_token):
            return found


async def test_each_user_lists_only_their_own_files(alice: Party, bob: Party) -> None:
    for party, other in ((alice, bob), (bob, alice)):
        files = await _list_files(party.stub, page_size=1)
        assert {f.created_by for f in files} == {str(party.user.id)}
        ids = {f.id for f in files}
        assert party.file.id in ids
        assert other.file.id not in ids


async def test_each_user_sees_only_their_own_eligible_conversations(
    alice: Party, bob: Party
) -> None:
    for party in (alice, bob):
        eligible = await _list_eligible(party.stub, page_size=3)
        assert {c.created_by for c in eligible} == {str(party.user.id)}
        ready = {str(c.conversation_id) for c in party.user.conversations if c.kind.row_ready}
        assert {c.conversation_id for c in eligible} == ready


async def test_page_tokens_do_not_pass_from_one_user_to_another(alice: Party, bob: Party) -> None:
    first = await alice.stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(page_size=1), timeout=TIMEOUT
    )
    assert first.next_page_token
    error = await expect_error(
        bob.stub.ListEligibleConversations(
            service_pb2.ListEligibleConversationsRequest(
                page_size=1, page_token=first.next_page_token
            ),
            timeout=TIMEOUT,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


async def test_a_user_cannot_create_from_the_others_conversations(
    alice: Party, bob: Party, server: RunningServer
) -> None:
    """Alice's conversations, ready or not, are reported to Bob like unknown ids."""
    unknown = str(uuid.uuid4())
    not_started = ids_of(alice.user.unusable())
    alices = alice.user.ids()[:2]
    before = await state(server)
    error = stream_error(
        await _create(bob.stub, [bob.user.ids()[5], *alices, *not_started, unknown])
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = detail(error, error_details_pb2.PreconditionFailure)
    reported = {v.subject: (v.type, v.description) for v in failure.violations}
    assert set(reported) == {*alices, *not_started, unknown}
    assert set(reported.values()) == {("CONVERSATION_NOT_FOUND", "no such conversation")}
    await assert_unchanged(server, before)


async def test_a_user_cannot_add_the_others_conversations(
    alice: Party, bob: Party, server: RunningServer
) -> None:
    before = await state(server)
    error = stream_error(await add(bob.stub, bob.file.id, alice.user.ids()[5:7]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [
        ("CONVERSATION_NOT_FOUND", i) for i in alice.user.ids()[5:7]
    ]
    await assert_unchanged(server, before)


async def test_created_by_and_added_by_record_the_caller(
    alice: Party, stub: Stub, server: RunningServer
) -> None:
    assert alice.file.created_by == str(ALICE)
    members = await file_conversations(alice.stub, alice.file.id)
    assert [m.added_by for m in members] == [str(ALICE)] * 3
    # A file of her own, extended by her and then by a service.
    file = await _created(alice.stub, alice.user.ids()[6:7])
    result = await add(alice.stub, file.id, alice.user.ids()[7:8])
    assert result.error is None, result.error
    result = await add(stub, file.id, alice.user.ids()[4:5])
    assert result.error is None, result.error
    assert result.training_file.created_by == str(ALICE)
    members = await file_conversations(alice.stub, file.id)
    # A service acts for the system: it has no user id to record.
    assert [(m.conversation_id, m.added_by) for m in members] == [
        (alice.user.ids()[6], str(ALICE)),
        (alice.user.ids()[7], str(ALICE)),
        (alice.user.ids()[4], ""),
    ]
    row = await server.database.pool.fetchrow(
        "SELECT created_by FROM training_files WHERE id = $1", uuid.UUID(file.id)
    )
    assert row is not None and row["created_by"] == ALICE


async def test_a_service_cannot_add_conversations_the_files_owner_does_not_own(
    alice: Party, bob: Party, stub: Stub, server: RunningServer
) -> None:
    before = await state(server)
    error = stream_error(await add(stub, alice.file.id, bob.user.ids()[8:9]))
    assert precondition_violations(error) == [("CONVERSATION_NOT_FOUND", bob.user.ids()[8])]
    await assert_unchanged(server, before)


async def test_the_service_role_sees_everything(alice: Party, bob: Party, stub: Stub) -> None:
    for party in (alice, bob):
        file = await stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=party.file.id), timeout=TIMEOUT
        )
        assert file.created_by == str(party.user.id)
        assert len(await file_conversations(stub, party.file.id)) == 3
        url = await stub.GetDownloadUrl(
            service_pb2.GetDownloadUrlRequest(training_file_id=party.file.id, format=JSON),
            timeout=TIMEOUT,
        )
        assert url.url
    listed = {f.id for f in await _list_files(stub, page_size=1000)}
    assert {alice.file.id, bob.file.id} <= listed
    eligible = {c.conversation_id for c in await _list_eligible(stub)}
    assert set(alice.user.ids()) | set(bob.user.ids()) <= eligible


async def test_a_service_creates_on_behalf_of_a_user_from_that_users_conversations(
    alice: Party, bob: Party, stub: Stub, server: RunningServer
) -> None:
    file = await _created(stub, alice.user.ids()[8:10], on_behalf_of=str(ALICE))
    assert file.created_by == str(ALICE)
    seen = await alice.stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file.id), timeout=TIMEOUT
    )
    assert seen.id == file.id
    error = await expect_error(
        bob.stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=file.id), timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # On Alice's behalf, Bob's conversations are not to be found.
    before = await state(server)
    error = stream_error(
        await _create(stub, [alice.user.ids()[0], bob.user.ids()[0]], on_behalf_of=str(ALICE))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("CONVERSATION_NOT_FOUND", bob.user.ids()[0])]
    await assert_unchanged(server, before)


async def test_a_user_may_name_only_themselves_as_on_behalf_of(
    alice: Party, server: RunningServer
) -> None:
    before = await state(server)
    for someone_else in (str(BOB), str(uuid.uuid4())):
        error = stream_error(
            await _create(alice.stub, alice.user.ids()[:1], on_behalf_of=someone_else)
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error) == "ON_BEHALF_OF_NOT_ALLOWED"
    await assert_unchanged(server, before)
    file = await _created(alice.stub, alice.user.ids()[10:11], on_behalf_of=str(ALICE))
    assert file.created_by == str(ALICE)


@pytest.mark.parametrize("caller", ["user", "service"])
@pytest.mark.parametrize("value", ["not-a-uuid", "00000000-0000-4000-8000", " ", "\u202e"])
async def test_a_malformed_on_behalf_of_is_invalid_argument(
    caller: str, value: str, alice: Party, stub: Stub, server: RunningServer
) -> None:
    before = await state(server)
    error = stream_error(
        await _create(
            alice.stub if caller == "user" else stub, alice.user.ids()[:1], on_behalf_of=value
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["on_behalf_of"]
    await assert_unchanged(server, before)


async def test_an_anon_token_is_permission_denied_on_every_rpc(
    alice: Party, bare: grpc.aio.Channel, server: RunningServer
) -> None:
    """Supabase's anon key: a valid signature, but not a role this service serves."""
    stub = service_pb2_grpc.TrainingFileServiceStub(bare)
    metadata = [("authorization", f"Bearer {mint('anon', ALICE)}")]  # type: ignore[arg-type]
    before = await state(server)
    for rpc, request in _requests(alice.file.id, alice.user.ids()[3:5]).items():
        call = getattr(stub, rpc)(request, metadata=metadata, timeout=TIMEOUT)
        if rpc in ("CreateTrainingFile", "AddConversations"):
            error = stream_error(await collect(call))
        else:
            error = await expect_error(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
        assert error_reason(error) == "ROLE_NOT_ALLOWED"
    await assert_unchanged(server, before)
    await assert_serving(server.port)


async def test_a_files_page_token_does_not_pass_from_one_user_to_another(
    alice: Party, bob: Party
) -> None:
    await _created(alice.stub, alice.user.ids()[11:12])
    first = await alice.stub.ListTrainingFiles(
        service_pb2.ListTrainingFilesRequest(page_size=1), timeout=TIMEOUT
    )
    assert first.next_page_token

    error = await expect_error(
        bob.stub.ListTrainingFiles(
            service_pb2.ListTrainingFilesRequest(page_size=1, page_token=first.next_page_token),
            timeout=TIMEOUT,
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


async def test_a_system_file_takes_anyones_conversations_and_no_user_sees_it(
    alice: Party, bob: Party, stub: Stub
) -> None:
    """A service's file without an owner: built and extended from two users'
    conversations, recorded with no user, and not found by either user."""
    file = await _created(stub, alice.user.ids()[12:13])
    result = await add(stub, file.id, bob.user.ids()[12:13])

    assert result.error is None, result.error
    extended = result.training_file
    assert (extended.created_by, extended.conversation_count) == ("", 2)
    members = await file_conversations(stub, file.id)
    assert [(m.conversation_id, m.added_by) for m in members] == [
        (alice.user.ids()[12], ""),
        (bob.user.ids()[12], ""),
    ]
    for party in (alice, bob):
        error = await expect_error(
            party.stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=file.id), timeout=TIMEOUT
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
