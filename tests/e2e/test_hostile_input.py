"""Hostile input: every malformed or malicious request is refused with a clear status,
changes nothing, and leaves the server SERVING.

"Nothing changed" is checked over the rows of `training_files`,
`training_file_conversations` and `storage_intents` (counts, and every file's status and
version) and the keys of the training bucket (`tests/e2e/guards.py`). The caller is an
ordinary authenticated user, Mallory, with conversations and files of her own.

Hostile enriched documents are different: they are found after the work began, so the
Create fails with FAILED_PRECONDITION naming the conversation, and — as for any failed
Create — its row is kept with status FAILED and its reason; nothing else is written.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import Dataset
from tests.e2e.guards import (
    SERVING,
    State,
    User,
    assert_serving,
    assert_unchanged,
    health_status,
    make_user,
    state,
    swept_once,
)
from tests.e2e.helpers import (
    ACTIVE,
    FAILED,
    JSONL,
    TIMEOUT,
    Stub,
    collect,
    detail,
    download,
    error_reason,
    expect_error,
    field_violations,
    file_row,
    jsonl_records,
    precondition_violations,
    stream_error,
    unique_name,
)
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Awkward, generate_one
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.pagination import PageTokens
from trainingfiles_server.storage import Storage

MALLORY_SEED = 6201
DOCUMENTS_SEED = 6202
MIB = 1024 * 1024

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Ctx:
    """Mallory, her stub, two files of hers and page tokens issued to her."""

    user: User
    stub: Stub
    file: resources_pb2.TrainingFile  # two conversations
    other_file: resources_pb2.TrainingFile
    files_token: str  # ListTrainingFiles, no filter
    active_token: str  # ListTrainingFiles, status ACTIVE
    eligible_token: str  # ListEligibleConversations
    members_token: str  # ListTrainingFileConversations of `file`

    def ids(self, count: int) -> list[str]:
        return self.user.ids(count)


async def _created(stub: Stub, ids: list[str], **fields: Any) -> resources_pb2.TrainingFile:
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("hostile"), conversation_ids=ids, **fields
    )
    result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result.training_file


@pytest.fixture(scope="module")
async def ctx(server: RunningServer, storage: Storage) -> AsyncIterator[Ctx]:
    user = await make_user(server, storage, MALLORY_SEED, 8, awkward=Awkward(not_started=1))
    async with authorized_channel(server.port, user.token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        file = await _created(stub, user.ids()[:2])
        other_file = await _created(stub, user.ids()[2:3])

        async def token(call: Any, request: Message) -> str:
            next_page_token: str = (await call(request, timeout=TIMEOUT)).next_page_token
            assert next_page_token
            return next_page_token

        yield Ctx(
            user,
            stub,
            file,
            other_file,
            files_token=await token(
                stub.ListTrainingFiles, service_pb2.ListTrainingFilesRequest(page_size=1)
            ),
            active_token=await token(
                stub.ListTrainingFiles,
                service_pb2.ListTrainingFilesRequest(page_size=1, status=ACTIVE),
            ),
            eligible_token=await token(
                stub.ListEligibleConversations,
                service_pb2.ListEligibleConversationsRequest(page_size=1),
            ),
            members_token=await token(
                stub.ListTrainingFileConversations,
                service_pb2.ListTrainingFileConversationsRequest(
                    training_file_id=file.id, page_size=1
                ),
            ),
        )


# ----------------------------------------------------------------- requests


def _create(
    name: str | None = None, ids: Callable[[Ctx], list[str]] | None = None, **fields: Any
) -> Any:
    def build(ctx: Ctx) -> Message:
        return service_pb2.CreateTrainingFileRequest(
            name=unique_name("hostile") if name is None else name,
            conversation_ids=ids(ctx) if ids else ctx.ids(2),
            **fields,
        )

    return build


def _add(ids: Callable[[Ctx], list[str]], file_id: str | None = None) -> Any:
    def build(ctx: Ctx) -> Message:
        return service_pb2.AddConversationsRequest(
            training_file_id=ctx.file.id if file_id is None else file_id,
            conversation_ids=ids(ctx),
        )

    return build


def _by_id(rpc: str, file_id: str) -> Any:
    message = {
        "GetTrainingFile": service_pb2.GetTrainingFileRequest,
        "ArchiveTrainingFile": service_pb2.ArchiveTrainingFileRequest,
        "ListTrainingFileConversations": service_pb2.ListTrainingFileConversationsRequest,
    }[rpc]
    return lambda ctx: message(training_file_id=file_id)


def _files(**fields: Any) -> Any:
    def build(ctx: Ctx) -> Message:
        return service_pb2.ListTrainingFilesRequest(
            **{k: v(ctx) if callable(v) else v for k, v in fields.items()}
        )

    return build


def _eligible(**fields: Any) -> Any:
    def build(ctx: Ctx) -> Message:
        return service_pb2.ListEligibleConversationsRequest(
            **{k: v(ctx) if callable(v) else v for k, v in fields.items()}
        )

    return build


def _members(file: Callable[[Ctx], str] | None = None, **fields: Any) -> Any:
    def build(ctx: Ctx) -> Message:
        return service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file(ctx) if file else ctx.file.id,
            **{k: v(ctx) if callable(v) else v for k, v in fields.items()},
        )

    return build


def _url(seconds: int | None = None, nanos: int = 0, file_format: int = JSONL) -> Any:
    def build(ctx: Ctx) -> Message:
        request = service_pb2.GetDownloadUrlRequest(
            training_file_id=ctx.file.id,
            format=file_format,  # type: ignore[arg-type]
        )
        if seconds is not None:
            request.expires_in.CopyFrom(duration_pb2.Duration(seconds=seconds, nanos=nanos))
        return request

    return build


def _uuids(count: int) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [str(uuid.UUID(int=i + 1)) for i in range(count)]


def _forged_position(token: str) -> str:
    """The payload re-encoded with another keyset position, the original mac kept."""
    payload, mac = token.split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["p"][0] = "1970-01-01T00:00:00+00:00"
    forged = base64.urlsafe_b64encode(orjson.dumps(decoded)).rstrip(b"=").decode()
    return f"{forged}.{mac}"


def _forged_mac(token: str) -> str:
    """The same payload, with a mac computed under a secret that is not the server's."""
    payload = token.split(".")[0]
    decoded = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return PageTokens(os.urandom(32)).issue(decoded["q"], decoded["p"])


@dataclass(frozen=True)
class Case:
    """A request and the exact answer it must get."""

    id: str
    rpc: str
    request: Callable[[Ctx], Message]
    code: grpc.StatusCode
    # The BadRequest fields of an INVALID_ARGUMENT, in order.
    fields: tuple[str, ...] = ()
    # The ErrorInfo reason; None when gRPC itself answers (no details).
    reason: str | None = "INVALID_ARGUMENT"


INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
CREATE, ADD = "CreateTrainingFile", "AddConversations"
FILES, ELIGIBLE = "ListTrainingFiles", "ListEligibleConversations"
MEMBERS, URL = "ListTrainingFileConversations", "GetDownloadUrl"

HOSTILE_NAMES = {
    "slash": "a/b",
    "dot-dot": "..",
    "path-traversal": "../../etc/passwd",
    "leading-dot": ".hidden",
    "nul": "name\x00.json",
    "escape-sequence": "a\x1b[31mred",
    "newline": "a\nb",
    "tab": "a\tb",
    "right-to-left-override": "\u202egnp.exe",
    "right-to-left-mark": "name\u200f",
    "zero-width-space": "na\u200bme",
    "non-ascii": "naïve",
    "backslash": "a\\b",
    "space": "a b",
    "empty": "",
    "129-characters": "a" * 129,
}

BAD_IDS = [
    "not-a-uuid",
    "",
    "../../etc/passwd",
    "'; DROP TABLE training_files; --",
    "\x00",
    "\u202e00000000-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-00000000000",
    "0" * 10_000,
]

CASES = [
    # --- names and descriptions
    *[
        Case(f"name-{key}", CREATE, _create(name=name), INVALID, ("name",))
        for key, name in HOSTILE_NAMES.items()
    ],
    Case(
        "description-2001-characters",
        CREATE,
        _create(description="d" * 2001),
        INVALID,
        ("description",),
    ),
    Case("description-with-nul", CREATE, _create(description="a\x00b"), INVALID, ("description",)),
    # Above the 4 MiB message limit: gRPC refuses it before any handler runs.
    Case(
        "description-10-mb",
        CREATE,
        _create(description="d" * (10 * 1000 * 1000)),
        EXHAUSTED,
        reason=None,
    ),
    # --- ids
    # 100,000 UUIDs are 3.8 MB, under the 4 MiB message limit: the server's own limit.
    Case(
        "ids-100000",
        CREATE,
        _create(ids=_uuids(100_000)),
        EXHAUSTED,
        reason="TOO_MANY_CONVERSATIONS",
    ),
    Case(
        "ids-10001", CREATE, _create(ids=_uuids(10_001)), EXHAUSTED, reason="TOO_MANY_CONVERSATIONS"
    ),
    Case("add-ids-100000", ADD, _add(_uuids(100_000)), EXHAUSTED, reason="TOO_MANY_CONVERSATIONS"),
    # 200,000 are 7.6 MB: above the message limit.
    Case("ids-200000", CREATE, _create(ids=_uuids(200_000)), EXHAUSTED, reason=None),
    Case(
        "ids-duplicate",
        CREATE,
        _create(ids=lambda ctx: [ctx.ids(2)[0], ctx.ids(2)[1], ctx.ids(2)[0], ctx.ids(2)[0]]),
        INVALID,
        ("conversation_ids[2]", "conversation_ids[3]"),
    ),
    Case(
        "ids-duplicate-in-other-spellings",
        CREATE,
        _create(
            ids=lambda ctx: [
                ctx.ids(1)[0],
                ctx.ids(1)[0].upper(),
                "{" + ctx.ids(1)[0] + "}",
                ctx.ids(1)[0].replace("-", ""),
            ]
        ),
        INVALID,
        ("conversation_ids[1]", "conversation_ids[2]", "conversation_ids[3]"),
    ),
    Case(
        "ids-not-uuids",
        CREATE,
        _create(ids=lambda ctx: [ctx.ids(1)[0], *BAD_IDS]),
        INVALID,
        tuple(f"conversation_ids[{i + 1}]" for i in range(len(BAD_IDS))),
    ),
    Case("ids-none", CREATE, _create(ids=lambda ctx: []), INVALID, ("conversation_ids",)),
    Case(
        "add-ids-duplicate",
        ADD,
        _add(lambda ctx: [ctx.ids(4)[3], ctx.ids(4)[3]]),
        INVALID,
        ("conversation_ids[1]",),
    ),
    Case(
        "add-ids-not-uuids",
        ADD,
        _add(lambda ctx: BAD_IDS[:3]),
        INVALID,
        ("conversation_ids[0]", "conversation_ids[1]", "conversation_ids[2]"),
    ),
    *[
        Case(f"{rpc}-file-id-{key}", rpc, request, INVALID, ("training_file_id",))
        for key, bad in (("traversal", "../../etc/passwd"), ("nul", "\x00"), ("empty", ""))
        for rpc, request in (
            ("GetTrainingFile", _by_id("GetTrainingFile", bad)),
            ("ArchiveTrainingFile", _by_id("ArchiveTrainingFile", bad)),
            (MEMBERS, _by_id(MEMBERS, bad)),
            (ADD, _add(lambda ctx: ctx.ids(4)[3:], file_id=bad)),
            (
                URL,
                lambda ctx, bad=bad: service_pb2.GetDownloadUrlRequest(
                    training_file_id=bad, format=JSONL
                ),
            ),
        )
    ],
    Case(
        "eligible-exclude-bidi",
        ELIGIBLE,
        _eligible(exclude_training_file_id="\u202e"),
        INVALID,
        ("exclude_training_file_id",),
    ),
    # --- page tokens
    *[
        Case(f"{rpc}-page-token-{key}", rpc, build(page_token=token), INVALID, ("page_token",))
        for rpc, build in ((FILES, _files), (ELIGIBLE, _eligible), (MEMBERS, _members))
        for key, token in (
            ("garbage", "garbage"),
            ("dots", "...."),
            ("nul", "\x00.\x00"),
            ("bidi", "\u202e.\u202e"),
            ("not-base64", "%%%.%%%"),
            ("long", "x" * 100_000 + ".x"),
        )
    ],
    Case(
        "files-page-token-truncated",
        FILES,
        _files(page_token=lambda c: c.files_token[:-5]),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-half",
        FILES,
        _files(page_token=lambda c: c.files_token[: len(c.files_token) // 2]),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-forged-position",
        FILES,
        _files(page_token=lambda c: _forged_position(c.files_token)),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-forged-mac",
        FILES,
        _files(page_token=lambda c: _forged_mac(c.files_token)),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-from-eligible",
        FILES,
        _files(page_token=lambda c: c.eligible_token),
        INVALID,
        ("page_token",),
    ),
    Case(
        "eligible-page-token-from-files",
        ELIGIBLE,
        _eligible(page_token=lambda c: c.files_token),
        INVALID,
        ("page_token",),
    ),
    Case(
        "eligible-page-token-forged-mac",
        ELIGIBLE,
        _eligible(page_token=lambda c: _forged_mac(c.eligible_token)),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-from-another-status",
        FILES,
        _files(page_token=lambda c: c.active_token, status=FAILED),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-from-no-status",
        FILES,
        _files(page_token=lambda c: c.files_token, status=ACTIVE),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-from-without-archived",
        FILES,
        _files(page_token=lambda c: c.files_token, include_archived=True),
        INVALID,
        ("page_token",),
    ),
    Case(
        "members-page-token-from-another-file",
        MEMBERS,
        _members(file=lambda c: c.other_file.id, page_token=lambda c: c.members_token),
        INVALID,
        ("page_token",),
    ),
    Case(
        "members-page-token-forged-position",
        MEMBERS,
        _members(page_token=lambda c: _forged_position(c.members_token)),
        INVALID,
        ("page_token",),
    ),
    Case(
        "files-page-token-5-mb", FILES, _files(page_token="t" * (5 * MIB)), EXHAUSTED, reason=None
    ),
    # --- page sizes
    *[
        Case(f"{rpc}-page-size-{size}", rpc, build(page_size=size), INVALID, ("page_size",))
        for rpc, build in ((FILES, _files), (ELIGIBLE, _eligible), (MEMBERS, _members))
        for size in (-1, -(2**31))
    ],
    # --- download expiry
    Case("url-expiry-0", URL, _url(0), INVALID, ("expires_in",)),
    Case("url-expiry-negative", URL, _url(-3600), INVALID, ("expires_in",)),
    Case("url-expiry-most-negative", URL, _url(-315_576_000_000), INVALID, ("expires_in",)),
    Case("url-expiry-a-year", URL, _url(365 * 24 * 3600), INVALID, ("expires_in",)),
    Case("url-expiry-59-seconds", URL, _url(59), INVALID, ("expires_in",)),
    Case("url-expiry-7-days-and-a-second", URL, _url(604_801), INVALID, ("expires_in",)),
    Case("url-expiry-fraction", URL, _url(600, nanos=1), INVALID, ("expires_in",)),
    Case("url-expiry-negative-fraction", URL, _url(-1, nanos=-1), INVALID, ("expires_in",)),
    # --- unknown enum values (proto3 enums are open: the ints go over the wire)
    Case("files-status-99", FILES, _files(status=99), INVALID, ("status",)),
    Case("files-status-negative", FILES, _files(status=-1), INVALID, ("status",)),
    Case("files-status-max", FILES, _files(status=2**31 - 1), INVALID, ("status",)),
    Case("url-format-42", URL, _url(file_format=42), INVALID, ("format",)),
    Case("url-format-negative", URL, _url(file_format=-7), INVALID, ("format",)),
    Case("url-format-unspecified", URL, _url(file_format=0), INVALID, ("format",)),
]


async def _call(stub: Stub, rpc: str, request: Message) -> grpc.aio.AioRpcError:
    call = getattr(stub, rpc)(request, timeout=TIMEOUT)
    if rpc in (CREATE, ADD):
        result = await collect(call)
        assert not result.messages, "a refused request must not start its stream"
        return stream_error(result)
    return await expect_error(call)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_a_hostile_request_is_refused_and_changes_nothing(
    case: Case, ctx: Ctx, server: RunningServer
) -> None:
    request = case.request(ctx)
    before = await state(server)
    error = await _call(ctx.stub, case.rpc, request)
    assert error.code() == case.code, error.details()
    assert "Traceback" not in (error.details() or "")
    if case.reason is None:
        # gRPC's own answer: the request never reached a handler.
        assert request.ByteSize() > server_max_message_bytes()
    else:
        assert error_reason(error) == case.reason
    if case.fields:
        assert [name for name, _ in field_violations(error)] == list(case.fields)
    if case.code is EXHAUSTED and case.reason is not None:
        quota = detail(error, error_details_pb2.QuotaFailure)
        assert [v.subject for v in quota.violations] == ["conversation_ids"]
    await assert_unchanged(server, before)
    await assert_serving(server.port)


def server_max_message_bytes() -> int:
    from trainingfiles_server.config import Settings

    return int(Settings.model_fields["max_message_bytes"].default)


async def test_a_description_is_kept_as_written_whatever_its_characters(
    ctx: Ctx, server: RunningServer
) -> None:
    """A description is free text: bidi, control and non-Latin characters are kept."""
    description = "\u202eevil\u202c \x1b[31m red\ttab\nline — 中文 🎉"
    file = await _created(ctx.stub, ctx.ids(4)[3:4], description=description)
    assert file.description == description
    stored = await file_row(server, file.id)
    assert stored["description"] == description


async def test_a_huge_page_size_is_treated_as_1000(ctx: Ctx, server: RunningServer) -> None:
    """1,001 eligible rows of a fresh user: a page of 2**31 - 1 holds 1,000 of them."""
    owner = uuid.uuid4()
    rows = [(uuid.uuid4(), f"{owner}/{i}/enriched.json", owner) for i in range(1001)]
    pool = server.database.pool
    await pool.executemany(
        "INSERT INTO conversations (conversation_id, enriched_file_path, enrichment_status,"
        " created_by) VALUES ($1, $2, 'completed', $3)",
        rows,
    )
    try:
        async with authorized_channel(server.port, mint("authenticated", owner)) as channel:
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            page = await stub.ListEligibleConversations(
                service_pb2.ListEligibleConversationsRequest(page_size=2**31 - 1), timeout=TIMEOUT
            )
            assert len(page.conversations) == 1000
            assert page.next_page_token
            rest = await stub.ListEligibleConversations(
                service_pb2.ListEligibleConversationsRequest(
                    page_size=2**31 - 1, page_token=page.next_page_token
                ),
                timeout=TIMEOUT,
            )
            assert len(rest.conversations) == 1
            assert not rest.next_page_token
        for rpc, request in (
            (FILES, service_pb2.ListTrainingFilesRequest(page_size=2**31 - 1)),
            (
                MEMBERS,
                service_pb2.ListTrainingFileConversationsRequest(
                    training_file_id=ctx.file.id, page_size=2**31 - 1
                ),
            ),
        ):
            response = await getattr(ctx.stub, rpc)(request, timeout=TIMEOUT)
            assert not response.next_page_token
    finally:
        await pool.execute("DELETE FROM conversations WHERE created_by = $1", owner)


# ----------------------------------------------------------------- bytes that are no message


def _raw(data: bytes) -> bytes:
    return data


# One string field of each request (its field number), for the not-UTF-8 case.
STRING_FIELDS = {
    CREATE: 1,
    ADD: 1,
    "GetTrainingFile": 1,
    FILES: 2,
    MEMBERS: 1,
    URL: 1,
    "ArchiveTrainingFile": 1,
    ELIGIBLE: 2,
}


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
@pytest.mark.parametrize("kind", ["truncated", "not-utf-8"])
@pytest.mark.parametrize("rpc", list(STRING_FIELDS))
async def test_bytes_that_are_not_a_request_message_are_invalid_argument(
    rpc: str, kind: str, with_token: bool, ctx: Ctx, server: RunningServer
) -> None:
    """Checked before authentication: grpc itself would answer UNKNOWN."""
    if kind == "truncated":
        body = b"\x0a\x05abc"  # field 1, length 5, three bytes follow
    else:
        body = bytes([STRING_FIELDS[rpc] << 3 | 2, 3]) + b"\xff\xfe\xfd"
    metadata = [("authorization", f"Bearer {ctx.user.token}")] if with_token else []
    before = await state(server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = f"/trainingfiles.v1.TrainingFileService/{rpc}"
        if rpc in (CREATE, ADD):
            stream = channel.unary_stream(
                method, request_serializer=_raw, response_deserializer=_raw
            )
            error = stream_error(await collect(stream(body, metadata=metadata, timeout=TIMEOUT)))
        else:
            unary = channel.unary_unary(method, request_serializer=_raw, response_deserializer=_raw)
            error = await expect_error(unary(body, metadata=metadata, timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_reason(error) == "MALFORMED_REQUEST"
    assert "DecodeError" not in (error.details() or "")
    await assert_unchanged(server, before)
    await assert_serving(server.port)


async def test_health_answers_bytes_that_are_no_message_with_invalid_argument(
    server: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=_raw, response_deserializer=_raw
        )
        error = await expect_error(check(b"\x0a\x05abc", timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await health_status(server.port) == SERVING


async def test_reflection_answers_bytes_that_are_no_message_with_invalid_argument(
    server: RunningServer,
) -> None:
    """Reflection is open to anyone: a garbage request must not get grpc's UNKNOWN."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=_raw,
            response_deserializer=_raw,
        )
        result = await collect(info(iter([b"\x0a\x05abc"]), timeout=TIMEOUT))
    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_reason(error) == "MALFORMED_REQUEST"
    await assert_serving(server.port)


# ----------------------------------------------------------------- hostile documents


@dataclass(frozen=True)
class Documents:
    """A user who owns one valid conversation and can add hostile ones."""

    user: User
    stub: Stub
    server: RunningServer
    storage: Storage

    async def add(self, body: bytes) -> str:
        """Upload `body` as a conversation's enriched document; its row says 'completed'."""
        conversation_id = uuid.uuid4()
        key = f"{self.user.id}/{conversation_id}/enriched.json"
        await self.storage.client.put_object(
            Bucket=self.storage.conversations_bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
        )
        await self.server.database.pool.execute(
            "INSERT INTO conversations (conversation_id, file_path, enriched_file_path,"
            " enrichment_status, created_by) VALUES ($1, $2, $3, 'completed', $4)",
            conversation_id,
            f"{self.user.id}/{conversation_id}/conversation.json",
            key,
            self.user.id,
        )
        return str(conversation_id)


@pytest.fixture(scope="module")
async def documents(server: RunningServer, storage: Storage) -> AsyncIterator[Documents]:
    user = await make_user(server, storage, DOCUMENTS_SEED, 2)
    async with authorized_channel(server.port, user.token) as channel:
        yield Documents(user, service_pb2_grpc.TrainingFileServiceStub(channel), server, storage)


def _valid_document(owner: uuid.UUID, index: int = 0) -> dict[str, Any]:
    generated = generate_one(DOCUMENTS_SEED + 1000, index, owners=[owner])
    assert generated.document is not None
    decoded: dict[str, Any] = orjson.loads(generated.document)
    return decoded


def _with(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> bytes:
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return orjson.dumps(document)


def _deep(levels: int) -> bytes:
    nested = b"[" * levels + b"]" * levels
    return b'{"dataset_metadata": ' + nested + b"}"


HOSTILE_DOCUMENTS: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    # name: (document from a valid one, text the reason contains)
    "10000-levels-deep": (lambda doc: _deep(10_000), "not valid JSON"),
    "not-utf-8": (
        lambda doc: orjson.dumps(doc).replace(b'"vertical":"', b'"vertical":"\xff\xfe', 1),
        "not UTF-8",
    ),
    "latin-1": (lambda doc: '{"vertical": "café"}'.encode("latin-1"), "not UTF-8"),
    "utf-16": (lambda doc: orjson.dumps(doc).decode().encode("utf-16"), "not UTF-8"),
    "empty": (lambda doc: b"", "not valid JSON"),
    "truncated": (lambda doc: orjson.dumps(doc)[:-100], "not valid JSON"),
    "top-level-array": (lambda doc: orjson.dumps([doc]), "top level is an array"),
    "quality-score-a-string": (
        lambda doc: _with(doc, ("training_pairs", 0, "training_metadata", "quality_score"), "9"),
        "training_pairs.0.training_metadata.quality_score",
    ),
    "turn-number-a-float": (
        lambda doc: _with(doc, ("training_pairs", 0, "turn_number"), 1.5),
        "training_pairs.0.turn_number",
    ),
    "training-pairs-an-object": (
        lambda doc: _with(doc, ("training_pairs",), {"0": doc["training_pairs"][0]}),
        "training_pairs",
    ),
    "human-reviewed-a-number": (
        lambda doc: _with(doc, ("training_pairs", 1, "training_metadata", "human_reviewed"), 1),
        "training_pairs.1.training_metadata.human_reviewed",
    ),
    "input-parameters-null": (
        lambda doc: _with(doc, ("input_parameters",), None),
        "input_parameters",
    ),
    "integer-beyond-64-bits": (
        lambda doc: orjson.dumps(doc).replace(b'"turn_number":1', b'"turn_number":' + b"9" * 30, 1),
        "turn_number",
    ),
    "nan-literal": (
        lambda doc: orjson.dumps(doc).replace(b'"quality_score":', b'"quality_score":NaN,"x":', 1),
        "not valid JSON",
    ),
}


async def _assert_only_a_failed_row(
    server: RunningServer, before: State, file_id: str, conversation_id: str
) -> None:
    """The failed Create kept its row (FAILED, naming the conversation) and nothing else."""
    after = await state(server)
    assert after.objects == before.objects
    assert (after.file_conversations, after.intents) == (before.file_conversations, before.intents)
    assert after.training_files == before.training_files + 1
    row = await file_row(server, file_id)
    assert row["status"] == "failed"
    assert conversation_id in row["error_message"]
    assert row["conversation_count"] == 0


@pytest.mark.parametrize("kind", list(HOSTILE_DOCUMENTS))
async def test_a_hostile_document_fails_the_create_naming_the_conversation(
    kind: str, documents: Documents, server: RunningServer
) -> None:
    make, expected = HOSTILE_DOCUMENTS[kind]
    hostile = await documents.add(make(_valid_document(documents.user.id)))
    before = await state(server)
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name(f"doc-{kind}"), conversation_ids=[*documents.user.ids(), hostile]
    )
    result = await collect(documents.stub.CreateTrainingFile(request, timeout=TIMEOUT))
    error = stream_error(result)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert error_reason(error) == "ENRICHED_DOCUMENT_INVALID"
    assert precondition_violations(error) == [("ENRICHED_DOCUMENT_INVALID", hostile)]
    assert hostile in (error.details() or "")
    description = detail(error, error_details_pb2.PreconditionFailure).violations[0].description
    assert expected in description
    await _assert_only_a_failed_row(server, before, result.training_file_id, hostile)
    await assert_serving(server.port)


async def test_a_document_above_the_size_limit_fails_the_create_naming_the_conversation(
    documents: Documents, stack: Stack, server: RunningServer
) -> None:
    """Stands for the 200 MB document: a second server with MAX_OBJECT_BYTES at 1 MiB
    gets a 2 MiB document (same code path, without uploading 200 MB). Its size is read
    from the object's metadata, so the body is never downloaded."""
    document = _valid_document(documents.user.id)
    document["padding"] = "p" * (2 * MIB)
    hostile = await documents.add(orjson.dumps(document))
    settings = stack_settings(stack.postgres, stack.seaweed, max_object_bytes=MIB)
    async with (
        running_server(settings) as small,
        authorized_channel(small.port, documents.user.token) as channel,
    ):
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        await swept_once(small)
        before = await state(server)
        request = service_pb2.CreateTrainingFileRequest(
            name=unique_name("doc-too-large"), conversation_ids=[*documents.user.ids(), hostile]
        )
        result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
        error = stream_error(result)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert precondition_violations(error) == [("ENRICHED_DOCUMENT_INVALID", hostile)]
        assert f"above the limit of {MIB}" in (error.details() or "")
        await _assert_only_a_failed_row(server, before, result.training_file_id, hostile)
        await assert_serving(small.port)
    await assert_serving(server.port)


async def test_duplicate_keys_are_accepted_and_the_last_one_wins(
    documents: Documents, server: RunningServer
) -> None:
    """Every pair's `training_metadata` first says `"quality_score": "first"` (a string,
    which would fail validation) and the top level first says `"training_pairs": []`
    (too short): the Create succeeds, and the file carries the last values."""
    document = _valid_document(documents.user.id, 1)
    scores = [p["training_metadata"]["quality_score"] for p in document["training_pairs"]]
    body = orjson.dumps(document)
    body = body.replace(b'"training_metadata":{', b'"training_metadata":{"quality_score":"first",')
    body = b'{"training_pairs":[],' + body[1:]
    assert body.count(b'"quality_score":"first"') == len(scores)
    conversation_id = await documents.add(body)
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("doc-duplicate-keys"), conversation_ids=[conversation_id]
    )
    result = await collect(documents.stub.CreateTrainingFile(request, timeout=TIMEOUT))
    file = result.training_file
    assert file.status == ACTIVE
    assert (file.conversation_count, file.total_training_pairs) == (1, len(scores))
    assert file.quality_summary.avg_quality_score == pytest.approx(
        round(sum(scores) / len(scores), 2)
    )
    lines = jsonl_records(await download(documents.stub, file.id, JSONL))
    assert [line["training_metadata"]["quality_score"] for line in lines] == scores


async def test_the_message_limit_is_the_servers_setting(
    stack: Stack, token: str, server: RunningServer
) -> None:
    """MAX_MESSAGE_BYTES at 64 KiB: a request of ~115 KB is refused by gRPC before any
    handler runs (no details), where the default 4 MiB lets it reach validation."""
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("message-limit"), conversation_ids=[str(uuid.uuid4()) for _ in range(3000)]
    )
    assert 64 * 1024 < request.ByteSize() < server_max_message_bytes()
    settings = stack_settings(stack.postgres, stack.seaweed, max_message_bytes=64 * 1024)
    async with running_server(settings) as small, authorized_channel(small.port, token) as channel:
        await swept_once(small)
        before = await state(server)
        refused = await collect(
            service_pb2_grpc.TrainingFileServiceStub(channel).CreateTrainingFile(
                request, timeout=TIMEOUT
            )
        )
    async with authorized_channel(server.port, token) as channel:
        checked = await collect(
            service_pb2_grpc.TrainingFileServiceStub(channel).CreateTrainingFile(
                request, timeout=TIMEOUT
            )
        )

    error = stream_error(refused)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert all(key != "grpc-status-details-bin" for key, _ in error.trailing_metadata() or ())
    assert stream_error(checked).code() == grpc.StatusCode.FAILED_PRECONDITION
    await assert_unchanged(server, before)


async def test_a_response_above_the_message_limit_is_not_sent(
    stack: Stack, token: str, dataset: Dataset
) -> None:
    """The limit holds for responses too: with MAX_MESSAGE_BYTES at 8 KiB, a page of a
    hundred eligible conversations is refused, a page of five is answered."""
    settings = stack_settings(stack.postgres, stack.seaweed, max_message_bytes=8 * 1024)
    async with running_server(settings) as small, authorized_channel(small.port, token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        few = await stub.ListEligibleConversations(
            service_pb2.ListEligibleConversationsRequest(page_size=5), timeout=TIMEOUT
        )
        error = await expect_error(
            stub.ListEligibleConversations(
                service_pb2.ListEligibleConversationsRequest(page_size=100), timeout=TIMEOUT
            )
        )

    assert len(few.conversations) == 5
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
