"""Helpers for the end-to-end tests: streams, error details, downloads, storage and rows.

Everything goes through the real gRPC server, PostgreSQL and SeaweedFS; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation
from trainingfiles_server.app import RunningServer
from trainingfiles_server.logs import JsonFormatter

Stub = service_pb2_grpc.TrainingFileServiceStub
Progress = service_pb2.TrainingFileProgress

VALIDATING = service_pb2.TrainingFileProgress.STAGE_VALIDATING
FETCHING = service_pb2.TrainingFileProgress.STAGE_FETCHING
AGGREGATING = service_pb2.TrainingFileProgress.STAGE_AGGREGATING
UPLOADING = service_pb2.TrainingFileProgress.STAGE_UPLOADING
SAVING = service_pb2.TrainingFileProgress.STAGE_SAVING

ACTIVE = resources_pb2.TRAINING_FILE_STATUS_ACTIVE
ARCHIVED = resources_pb2.TRAINING_FILE_STATUS_ARCHIVED
FAILED = resources_pb2.TRAINING_FILE_STATUS_FAILED
PROCESSING = resources_pb2.TRAINING_FILE_STATUS_PROCESSING

JSON = resources_pb2.FILE_FORMAT_JSON
JSONL = resources_pb2.FILE_FORMAT_JSONL

TIMEOUT = 30.0

D = TypeVar("D", bound=ProtoMessage)


def unique_name(prefix: str) -> str:
    """A training file name no other test uses (the session database is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ----------------------------------------------------------------- streams


@dataclass
class StreamResult:
    """What a Create or Add stream sent, and how it ended (`error` None: OK)."""

    messages: list[Progress] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None

    @property
    def training_file_id(self) -> str:
        assert self.messages, "the stream sent no message"
        return self.messages[0].training_file_id

    @property
    def last(self) -> Progress:
        assert self.messages, "the stream sent no message"
        return self.messages[-1]

    @property
    def training_file(self) -> resources_pb2.TrainingFile:
        assert self.error is None, f"the stream failed: {self.error}"
        assert self.last.HasField("training_file"), self.last
        return self.last.training_file

    def warnings(self) -> list[service_pb2.ProgressWarning]:
        return [w for m in self.messages for w in m.warnings]

    def mismatch_warnings(self) -> list[service_pb2.ProgressWarning]:
        """The warnings about documents that disagree (not about the pairs' content)."""
        return [w for w in self.warnings() if w.code.endswith("_MISMATCH")]


async def collect(call: Any) -> StreamResult:
    """Read a server stream to its end; an error status is recorded, not raised."""
    result = StreamResult()
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            result.messages.append(message)
    except grpc.aio.AioRpcError as error:
        result.error = error
    return result


async def create(
    stub: Stub, name: str, ids: Sequence[str], description: str | None = None
) -> StreamResult:
    request = service_pb2.CreateTrainingFileRequest(name=name, conversation_ids=list(ids))
    if description is not None:
        request.description = description
    return await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))


async def create_ok(
    stub: Stub, name: str, ids: Sequence[str], description: str | None = None
) -> resources_pb2.TrainingFile:
    """Create a file that must succeed; returns the finished training file."""
    result = await create(stub, name, ids, description)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result.training_file


async def add(stub: Stub, file_id: str, ids: Sequence[str]) -> StreamResult:
    request = service_pb2.AddConversationsRequest(
        training_file_id=file_id, conversation_ids=list(ids)
    )
    return await collect(stub.AddConversations(request, timeout=TIMEOUT))


async def add_ok(stub: Stub, file_id: str, ids: Sequence[str]) -> resources_pb2.TrainingFile:
    result = await add(stub, file_id, ids)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result.training_file


async def get(stub: Stub, file_id: str) -> resources_pb2.TrainingFile:
    request = service_pb2.GetTrainingFileRequest(training_file_id=file_id)
    file: resources_pb2.TrainingFile = await stub.GetTrainingFile(request, timeout=TIMEOUT)
    return file


# ----------------------------------------------------------------- error details


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The `google.rpc.Status` of `grpc-status-details-bin`; its code and message agree."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin in {error.trailing_metadata()!r}"
    return status


def detail(error: grpc.aio.AioRpcError, kind: type[D]) -> D:
    """The one detail of type `kind` in the error's status."""
    found = []
    for packed in rich_status(error).details:
        message = kind()
        if packed.Is(message.DESCRIPTOR):
            packed.Unpack(message)
            found.append(message)
    assert len(found) == 1, f"expected one {kind.__name__}, got {len(found)}"
    return found[0]


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest violation, in order."""
    bad_request = detail(error, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad_request.field_violations]


def violation_fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [name for name, _ in field_violations(error)]


def precondition_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(type, subject) of every PreconditionFailure violation, in order."""
    failure = detail(error, error_details_pb2.PreconditionFailure)
    return [(v.type, v.subject) for v in failure.violations]


def error_reason(error: grpc.aio.AioRpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info.domain == "trainingfiles.v1"
    reason: str = info.reason
    return reason


async def expect_error(awaitable: Any) -> grpc.aio.AioRpcError:
    """Await a unary call that must fail; returns its error."""
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def stream_error(result: StreamResult) -> grpc.aio.AioRpcError:
    assert result.error is not None, "the stream succeeded"
    return result.error


# ----------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Download:
    body: bytes
    headers: Message


def _fetch(url: str) -> Download:
    # No proxy from the environment: the object store is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=TIMEOUT) as response:
        return Download(response.read(), response.headers)


async def http_get(url: str) -> Download:
    return await asyncio.to_thread(_fetch, url)


async def download_url(
    stub: Stub, file_id: str, file_format: int
) -> service_pb2.GetDownloadUrlResponse:
    request = service_pb2.GetDownloadUrlRequest(
        training_file_id=file_id,
        format=file_format,  # type: ignore[arg-type]
    )
    response: service_pb2.GetDownloadUrlResponse = await stub.GetDownloadUrl(
        request, timeout=TIMEOUT
    )
    return response


async def download(stub: Stub, file_id: str, file_format: int) -> bytes:
    """The bytes of a file's JSON or JSONL object, through a presigned URL."""
    response = await download_url(stub, file_id, file_format)
    return (await http_get(response.url)).body


def jsonl_records(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n"), "the JSONL must end with a newline"
    return [orjson.loads(line) for line in body.split(b"\n")[:-1]]


# ----------------------------------------------------------------- storage and rows


async def object_keys(server: RunningServer, prefix: str = "") -> set[str]:
    """Every key in the training bucket under `prefix`."""
    client = server.storage.client
    keys: set[str] = set()
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": server.storage.training_bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = await client.list_objects_v2(**kwargs)
        keys.update(item["Key"] for item in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


async def open_uploads(server: RunningServer, prefix: str = "") -> set[str]:
    """The ids of the multipart uploads open in the training bucket under `prefix`."""
    uploads = await server.storage.open_uploads(server.storage.training_bucket)
    return {u.upload_id for u in uploads if u.key.startswith(prefix)}


async def wait_for_uploads(server: RunningServer, prefix: str, count: int) -> set[str]:
    """Wait (bounded) until `count` multipart uploads are open under `prefix`."""
    async with asyncio.timeout(TIMEOUT):
        # Polled: the store has no way to announce an upload.
        while len(uploads := await open_uploads(server, prefix)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return uploads


async def file_count(server: RunningServer) -> int:
    count: int = await server.database.pool.fetchval("SELECT count(*) FROM training_files")
    return count


async def intent_count(server: RunningServer, file_id: str) -> int:
    count: int = await server.database.pool.fetchval(
        "SELECT count(*) FROM storage_intents WHERE training_file_id = $1", uuid.UUID(file_id)
    )
    return count


async def file_row(server: RunningServer, file_id: str) -> dict[str, Any]:
    row = await server.database.pool.fetchrow(
        "SELECT * FROM training_files WHERE id = $1", uuid.UUID(file_id)
    )
    assert row is not None
    return dict(row.items())


@dataclass(frozen=True)
class Snapshot:
    files: int
    keys: frozenset[str]


async def snapshot(server: RunningServer) -> Snapshot:
    """How many training files exist and which objects the training bucket holds."""
    return Snapshot(await file_count(server), frozenset(await object_keys(server)))


async def assert_nothing_written(server: RunningServer, before: Snapshot) -> None:
    after = await snapshot(server)
    assert after.files == before.files, "a training_files row was written"
    assert after.keys == before.keys, f"objects appeared: {sorted(after.keys - before.keys)}"


# ----------------------------------------------------------------- documents


def document(conversation: GeneratedConversation) -> dict[str, Any]:
    assert conversation.document is not None
    decoded: dict[str, Any] = orjson.loads(conversation.document)
    return decoded


def conversations_by_id(
    conversations: Sequence[GeneratedConversation],
) -> dict[str, GeneratedConversation]:
    return {str(c.conversation_id): c for c in conversations}


def quality(conversation: GeneratedConversation) -> float:
    """The conversation's quality score: the mean of its pairs' scores."""
    pairs = document(conversation)["training_pairs"]
    return float(sum(p["training_metadata"]["quality_score"] for p in pairs) / len(pairs))


async def file_conversations(
    stub: Stub, file_id: str, page_size: int = 0
) -> list[resources_pb2.TrainingFileConversation]:
    """Every conversation of a file, paging through ListTrainingFileConversations."""
    found: list[resources_pb2.TrainingFileConversation] = []
    token = ""
    while True:
        page = await stub.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=file_id, page_size=page_size, page_token=token
            ),
            timeout=TIMEOUT,
        )
        found.extend(page.conversations)
        token = page.next_page_token
        if not token:
            return found


# ----------------------------------------------------------------- object keys


_KEY = re.compile(
    r"^(?P<id>[0-9a-f-]{36})/(?P<name>[A-Za-z0-9_.-]+)_"
    r"(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<micro>\d{6}))?\.(?P<ext>jsonl?)$"
)


def key_moment(key: str) -> tuple[str, str, datetime]:
    """(file id, name, UTC moment) of an object key `<id>/<name>_<stamp>[-<micro>].json(l)`."""
    match = _KEY.match(key)
    assert match is not None, key
    moment = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    micro = match["micro"]
    assert micro != "000000", "a zero microsecond part is left out"
    return match["id"], match["name"], moment + timedelta(microseconds=int(micro or 0))


# ----------------------------------------------------------------- logs


class Records(logging.Handler):
    """Every log record the server writes while installed (on the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        formatter = JsonFormatter()
        return [formatter.format(record) for record in self.records]


@contextlib.contextmanager
def captured_logs() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("trainingfiles")
    root = logging.getLogger()
    level = logger.level
    root.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.setLevel(level)
        root.removeHandler(handler)


def logged(records: Records, message: str) -> list[dict[str, Any]]:
    """The fields of every record logged with `message`, in order."""
    return [dict(getattr(r, "fields", {})) for r in records.records if r.msg == message]


def output_keys(file: resources_pb2.TrainingFile) -> set[str]:
    """The object keys of every output of a file's current version (card included)."""
    return {output.object_key for output in file.outputs}


class Calls:
    """How many times a server called each S3 operation, per object key.

    Counted with botocore's own events on the server's client (nothing is replaced):
    proof that a file went up in several parts, or was copied by the store.
    """

    OPERATIONS = (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "DeleteObjects",
    )

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def attach(self, client: Any) -> None:
        for operation in self.OPERATIONS:
            client.meta.events.register(
                f"before-parameter-build.s3.{operation}", functools.partial(self._seen, operation)
            )

    def _seen(self, operation: str, params: dict[str, Any], **_: Any) -> None:
        self.counts[(operation, params.get("Key", ""))] += 1

    def __call__(self, operation: str, key: str = "") -> int:
        return self.counts[(operation, key)]

    def under(self, operation: str, prefix: str) -> int:
        return sum(
            n for (op, key), n in self.counts.items() if op == operation and key.startswith(prefix)
        )
