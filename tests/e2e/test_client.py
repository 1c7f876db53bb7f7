"""The Python client (`trainingfiles_client`) against a real server.

Every method through both faces, with flattened fields and with `request=` and per-call
options (one parametrised test), pagers across pages, the streaming operations
(`result()`, `cancel()`), each error class with its parsed details, reads retried by the
channel across a server restart (and not when `retry=None`), and the distribution
installed alone into an empty venv.

The in-process server runs on the test's event loop, so the synchronous client always
runs in a thread (`asyncio.to_thread`); a blocking call on the loop would deadlock.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import trainingfiles_client as tfc
from tests.conftest import Stack, mint, stack_settings
from tests.e2e.conftest import OWNER, Dataset
from tests.e2e.helpers import ACTIVE, ARCHIVED, FAILED, JSON, JSONL, TIMEOUT
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import Kind
from trainingfiles_server.app import RunningServer, running_server

Stage = service_pb2.TrainingFileProgress
STAGES = [
    Stage.STAGE_VALIDATING,
    Stage.STAGE_FETCHING,
    Stage.STAGE_AGGREGATING,
    Stage.STAGE_UPLOADING,
    Stage.STAGE_SAVING,
]
# A removal fetches no document: it renders the stored file's pairs instead.
REMOVAL_STAGES = [
    Stage.STAGE_VALIDATING,
    Stage.STAGE_RENDERING,
    Stage.STAGE_AGGREGATING,
    Stage.STAGE_UPLOADING,
    Stage.STAGE_SAVING,
]
SERVICE = service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"]
ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fetch(url: str) -> bytes:
    # No proxy from the environment: the object store is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
    return body


def stage_order(events: list[service_pb2.TrainingFileProgress]) -> list[int]:
    """The distinct stages in the order they were first seen."""
    return list(dict.fromkeys(event.stage for event in events))


@pytest.fixture(scope="module")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def client(target: str, token: str) -> Iterator[tfc.TrainingFilesClient]:
    with tfc.TrainingFilesClient(target, token=token) as client:
        yield client


@pytest.fixture(scope="module")
async def aclient(target: str, token: str) -> AsyncIterator[tfc.AsyncTrainingFilesClient]:
    async with tfc.AsyncTrainingFilesClient(target, token=token) as client:
        yield client


async def wait_for_status(
    aclient: tfc.AsyncTrainingFilesClient, file_id: str, status: int
) -> resources_pb2.TrainingFile:
    """The file once it reaches `status` (a cancelled Create fails asynchronously)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        training_file = await aclient.get_training_file(file_id, timeout=TIMEOUT)
        if training_file.status == status or time.monotonic() > deadline:
            return training_file
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------- every method, both faces


class Face:
    """One face of the client, driven the same way: each call awaited (the synchronous
    face's in a thread), pagers read to the end, operations followed to their result.
    It notes which methods were called."""

    def __init__(self, client: tfc.TrainingFilesClient | tfc.AsyncTrainingFilesClient) -> None:
        self.client = client
        self.called: set[str] = set()

    def method(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self.client, name)

    async def call(self, name: str, how: How) -> Any:
        args, kwargs = how
        if isinstance(self.client, tfc.AsyncTrainingFilesClient):
            return await self.method(name)(*args, **kwargs)
        return await asyncio.to_thread(self.method(name), *args, **kwargs)

    async def items(self, name: str, how: How) -> list[Any]:
        args, kwargs = how
        if isinstance(self.client, tfc.AsyncTrainingFilesClient):
            return [item async for item in self.method(name)(*args, **kwargs)]
        return await asyncio.to_thread(lambda: list(self.method(name)(*args, **kwargs)))

    async def operation(self, name: str, how: How) -> tuple[list[Any], Any, str | None]:
        """The events, the finished file and the operation's `training_file_id`."""
        args, kwargs = how
        if isinstance(self.client, tfc.AsyncTrainingFilesClient):
            operation = self.method(name)(*args, **kwargs)
            events = [event async for event in operation]
            return events, await operation.result(), operation.training_file_id

        def follow() -> tuple[list[Any], Any, str | None]:
            operation = self.method(name)(*args, **kwargs)
            events = list(operation)
            return events, operation.result(), operation.training_file_id

        return await asyncio.to_thread(follow)


How = tuple[tuple[Any, ...], dict[str, Any]]


def way(style: str, fields: tuple[Any, ...], request: Any, **options: Any) -> How:
    """The same call with flattened fields, or with the whole `request` (a message or a
    dict) and per-call options."""
    return ((), {"request": request, **options}) if style == "request" else (fields, {})


@pytest.mark.parametrize("style", ["fields", "request"])
@pytest.mark.parametrize("face", ["sync", "async"])
async def test_every_method_through_both_faces(
    face: str,
    style: str,
    client: tfc.TrainingFilesClient,
    aclient: tfc.AsyncTrainingFilesClient,
    dataset: Dataset,
) -> None:
    driver = Face(client if face == "sync" else aclient)
    offset = {"fields": 0, "request": 8}[style] + {"sync": 0, "async": 16}[face]
    first, more = dataset.ids()[offset : offset + 4], dataset.ids()[offset + 4 : offset + 7]
    name = unique(f"{face}-{style}")

    checked = await driver.call(
        "validate_conversations",
        way(style, ([*first, "nope"],), {"conversation_ids": [*first, "nope"]}, retry=None),
    )
    assert [(p.subject, p.reason) for p in checked.problems] == [
        ("conversation_ids[4]", "MALFORMED_ID")
    ]

    request = service_pb2.CreateTrainingFileRequest(
        name=name, conversation_ids=first, description=f"made by the {face} client"
    )
    fields = (name, first, f"made by the {face} client")
    events, created, file_id = await driver.operation(
        "create_training_file", way(style, fields, request, timeout=TIMEOUT * 2)
    )
    assert stage_order(events) == STAGES
    assert file_id == created.id == events[0].training_file_id
    assert (created.name, created.status, created.conversation_count) == (name, ACTIVE, 4)
    assert created.description == f"made by the {face} client"

    more_request = {"training_file_id": created.id, "conversation_ids": more}
    _, added, _ = await driver.operation(
        "add_conversations", way(style, (created.id, more), more_request)
    )
    assert (added.conversation_count, added.version) == (7, 2)

    gone, kept = more[1], [*first, more[0], more[2]]
    removal = service_pb2.RemoveConversationsRequest(
        training_file_id=created.id, conversation_ids=[gone]
    )
    events, removed, _ = await driver.operation(
        "remove_conversations",
        way(style, (created.id, [gone]), removal, timeout=TIMEOUT * 2),
    )
    assert stage_order(events) == REMOVAL_STAGES
    rendering = [e for e in events if e.stage == Stage.STAGE_RENDERING]
    assert rendering[-1].done == rendering[-1].total == added.total_training_pairs
    assert (removed.conversation_count, removed.version) == (6, 3)
    assert removed.total_training_pairs < added.total_training_pairs

    patient = tfc.Retry(attempts=2)  # a policy of its own: a channel of its own
    got = await driver.call(
        "get_training_file",
        way(style, (created.id,), {"training_file_id": created.id}, retry=patient),
    )
    assert got == removed

    # Nothing is stale: the refresh is VALIDATING, then the file as it was (no version).
    refreshing = {"training_file_id": created.id, "remove_ineligible": True}
    events, refreshed, _ = await driver.operation(
        "refresh_training_file", way(style, (created.id,), refreshing, timeout=TIMEOUT * 2)
    )
    assert events[0].stage == Stage.STAGE_VALIDATING
    assert Stage.STAGE_FETCHING not in stage_order(events)
    assert (refreshed.version, refreshed.conversation_count) == (3, 6)
    assert refreshed.jsonl_file_path == removed.jsonl_file_path

    switch = service_pb2.SetAutoRefreshRequest(training_file_id=created.id, enabled=True)
    switched_on = await driver.call("set_auto_refresh", way(style, (created.id, True), switch))
    assert switched_on.auto_refresh and switched_on.id == created.id
    shown = await driver.call(
        "get_training_file", way(style, (created.id,), {"training_file_id": created.id})
    )
    assert shown.auto_refresh and shown.stale_conversation_count == 0
    off = {"training_file_id": created.id, "enabled": False}
    switched_off = await driver.call("set_auto_refresh", way(style, (created.id, False), off))
    assert not switched_off.auto_refresh and switched_off.version == 3

    export = {"training_file_id": created.id, "formats": ["openai_chat"]}
    _, exported, _ = await driver.operation(
        "export_training_file", way(style, (created.id, ["openai_chat"]), export)
    )
    assert (exported.version, exported.conversation_count) == (3, 6)
    assert "openai_chat" in {tfc.Format.of(o.format).value for o in exported.outputs}

    listing = {"status": ACTIVE, "page_size": 1000}
    listed = await driver.items("list_training_files", way(style, (ACTIVE, None, 1000), listing))
    assert created.id in {f.id for f in listed}

    pages = service_pb2.ListTrainingFileConversationsRequest(
        training_file_id=created.id, page_size=3
    )
    members = await driver.items(
        "list_training_file_conversations", way(style, (created.id, 3), pages)
    )
    assert [m.conversation_id for m in members] == kept
    at_one = {"training_file_id": created.id, "page_size": 3, "version": 1}
    members = await driver.items(
        "list_training_file_conversations", way(style, (created.id, 3, 1), at_one)
    )
    assert [m.conversation_id for m in members] == first

    figures_of = {"training_file_id": created.id, "version": 2}
    figures = await driver.call(
        "get_training_file_analytics", way(style, (created.id, 2), figures_of)
    )
    assert (figures.version, figures.conversation_count) == (2, 7)
    assert figures.total_training_pairs == added.total_training_pairs
    assert figures.tokens.tokenizer == "tiktoken:cl100k_base"

    history = {"training_file_id": created.id, "page_size": 1}
    versions = await driver.items(
        "list_training_file_versions", way(style, (created.id, 1), history)
    )
    # The refresh made no version: nothing was stale.
    assert [(v.version, v.reason, v.change_count, v.current) for v in versions] == [
        (3, resources_pb2.VERSION_REASON_REMOVED, 1, True),
        (2, resources_pb2.VERSION_REASON_ADDED, 3, False),
        (1, resources_pb2.VERSION_REASON_CREATED, 4, False),
    ]

    ten_minutes = datetime.timedelta(minutes=10)
    link_request = {"training_file_id": created.id, "format": JSONL, "expires_in": 600}
    link = await driver.call(
        "get_download_url", way(style, (created.id, JSONL, ten_minutes), link_request)
    )
    body = await asyncio.to_thread(fetch, link.url)
    assert len(body) == link.size_bytes == removed.jsonl_file_size
    assert body.count(b"\n") == removed.total_training_pairs
    assert link.file_name == f"{name}.jsonl"
    remaining = link.expire_time.ToDatetime(tzinfo=datetime.UTC) - datetime.datetime.now(
        datetime.UTC
    )
    assert datetime.timedelta(minutes=9) < remaining <= ten_minutes

    # A selector (a Selector, or in a request dict the message's fields): the owner's.
    theirs = tfc.Selector(owner=OWNER)
    excluded = {"exclude_training_file_id": created.id, "selector": {"owner": str(OWNER)}}
    eligible = await driver.items(
        "list_eligible_conversations", way(style, (created.id, None, theirs), excluded)
    )
    offered = {c.conversation_id for c in eligible}
    assert offered.isdisjoint(kept) and gone in offered  # a removed one may be added again
    assert {c.created_by for c in eligible} == {str(OWNER)}

    tagged = [("x-request-id", f"archive-{face}")]
    archive = way(style, (created.id,), {"training_file_id": created.id}, metadata=tagged)
    archived = await driver.call("archive_training_file", archive)
    assert archived.status == ARCHIVED
    assert await driver.call("archive_training_file", archive) == archived  # idempotent
    everything = await driver.items(
        "list_training_files", way(style, (None, True), {"include_archived": True})
    )
    assert created.id in {f.id for f in everything}

    every_rpc = {re.sub(r"(?<!^)(?=[A-Z])", "_", m.name).lower() for m in SERVICE.methods}
    assert driver.called == every_rpc


# ----------------------------------------------------------------- pagers


async def test_pagers_follow_next_page_token_across_pages(
    client: tfc.TrainingFilesClient, aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    everything = [c.conversation_id async for c in aclient.list_eligible_conversations()]
    assert set(dataset.ids()) <= set(everything)
    assert len(everything) == len(set(everything))

    def sync_pages() -> tuple[list[str], list[int], list[str]]:
        pager = client.list_eligible_conversations(page_size=7)
        pages = list(pager.pages)
        sizes = [len(page.conversations) for page in pages]
        tokens = [page.next_page_token for page in pages]
        items = [c.conversation_id for c in pager]  # iterating again starts over
        assert [c.conversation_id for page in pages for c in page.conversations] == items
        return items, sizes, tokens

    items, sizes, tokens = await asyncio.to_thread(sync_pages)
    assert items == everything
    assert len(sizes) >= 3 and all(size <= 7 for size in sizes)
    assert all(tokens[:-1]) and tokens[-1] == ""

    async_pages = [page async for page in aclient.list_eligible_conversations(page_size=9).pages]
    assert len(async_pages) >= 3
    assert [c.conversation_id for p in async_pages for c in p.conversations] == everything

    # Lazy: taking a few items needs only the first page.
    def first_three() -> list[str]:
        pager = client.list_eligible_conversations(page_size=5)
        return [c.conversation_id for c in itertools.islice(pager, 3)]

    assert await asyncio.to_thread(first_three) == everything[:3]


# ----------------------------------------------------------------- result() and cancel()


async def test_sync_cancel_stops_the_stream_and_the_file_fails(
    client: tfc.TrainingFilesClient, aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    def scenario() -> tuple[str | None, tfc.Cancelled]:
        operation = client.create_training_file(unique("cancel-sync"), dataset.usable()[:100])
        first = next(operation)
        assert first.stage == Stage.STAGE_VALIDATING
        assert operation.cancel()
        with pytest.raises(tfc.Cancelled) as raised:
            operation.result()
        assert not operation.cancel()  # already over
        return operation.training_file_id, raised.value

    file_id, error = await asyncio.to_thread(scenario)
    assert file_id and error.code.name == "CANCELLED"
    assert (await wait_for_status(aclient, file_id, FAILED)).status == FAILED


async def test_async_cancel_stops_the_stream_and_the_file_fails(
    aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    operation = aclient.create_training_file(unique("cancel-async"), dataset.usable()[:100])
    first = await anext(operation)
    assert operation.training_file_id == first.training_file_id
    assert operation.cancel()
    with pytest.raises(tfc.Cancelled):
        await operation.result()
    with pytest.raises(tfc.Cancelled):  # the outcome is remembered
        await operation.result()
    file_id = operation.training_file_id
    assert file_id is not None
    failed = await wait_for_status(aclient, file_id, FAILED)
    assert failed.status == FAILED and failed.error_message


async def test_leaving_an_operation_block_early_cancels_the_call(
    aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    async with aclient.create_training_file(unique("block"), dataset.usable()[:100]) as operation:
        await anext(operation)
    assert operation.training_file_id is not None
    failed = await wait_for_status(aclient, operation.training_file_id, FAILED)
    assert failed.status == FAILED


# ----------------------------------------------------------------- errors and details


async def test_not_found_names_the_resource(
    client: tfc.TrainingFilesClient, aclient: tfc.AsyncTrainingFilesClient
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(tfc.NotFound) as raised:
        await aclient.get_training_file(missing)
    error = raised.value
    assert isinstance(error, tfc.TrainingFilesError)
    assert (error.code.name, error.reason, error.domain) == (
        "NOT_FOUND",
        "NOT_FOUND",
        "trainingfiles.v1",
    )
    assert (error.resource_type, error.resource_name) == ("training_file", missing)
    assert missing in error.message and missing in str(error)

    def sync() -> tfc.TrainingFilesError:
        with pytest.raises(tfc.NotFound) as raised:
            list(client.list_training_file_conversations(missing))
        return raised.value

    assert (await asyncio.to_thread(sync)).resource_name == missing


async def test_invalid_argument_lists_every_bad_field(
    client: tfc.TrainingFilesClient, dataset: Dataset
) -> None:
    good = dataset.ids()[0]

    def sync() -> tfc.TrainingFilesError:
        operation = client.create_training_file("bad/name", ["not-a-uuid", good, good])
        with pytest.raises(tfc.InvalidArgument) as raised:
            operation.result()
        assert operation.training_file_id is None
        return raised.value

    error = await asyncio.to_thread(sync)
    assert [(v.subject, v.reason) for v in error.violations] == [
        ("name", "INVALID_NAME"),
        ("conversation_ids[0]", "MALFORMED_ID"),
        ("conversation_ids[2]", "DUPLICATE_ID"),
    ]
    assert error.violations[2].description == "duplicate of conversation_ids[1]"


async def test_failed_precondition_lists_every_offending_id(
    aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    unknown = str(uuid.uuid4())
    offenders = {
        dataset.ids(Kind.NOT_STARTED)[0]: "CONVERSATION_NOT_ENRICHED",
        dataset.ids(Kind.IN_PROGRESS)[0]: "CONVERSATION_NOT_ENRICHED",
        dataset.ids(Kind.NULL_PATH)[0]: "CONVERSATION_NO_ENRICHED_FILE",
        unknown: "CONVERSATION_NOT_FOUND",
    }
    ids = [dataset.ids()[0], *offenders]
    operation = aclient.create_training_file(unique("ineligible"), ids)
    with pytest.raises(tfc.FailedPrecondition) as raised:
        async for _ in operation:
            pass
    error = raised.value
    assert error.reason == "CONVERSATIONS_NOT_ELIGIBLE"
    assert {v.subject: v.reason for v in error.violations} == offenders
    assert all(v.description for v in error.violations)


async def test_every_offender_is_counted_and_validate_returns_them_all(
    aclient: tfc.AsyncTrainingFilesClient,
) -> None:
    """The details list the first offenders (they fit gRPC's metadata limit) and say how
    many there are; `validate_conversations` returns every one."""
    unknown = [str(uuid.uuid4()) for _ in range(10_000)]
    with pytest.raises(tfc.FailedPrecondition) as raised:
        await aclient.create_training_file(unique("unknown"), unknown).result()
    error = raised.value
    assert error.violations_cut
    assert error.violations_total == 10_000
    listed = [v.subject for v in error.violations]
    assert 0 < len(listed) < 10_000
    assert listed == unknown[: len(listed)]
    assert {v.reason for v in error.violations} == {"CONVERSATION_NOT_FOUND"}

    report = await aclient.validate_conversations(unknown)
    assert [p.subject for p in report.problems] == unknown
    assert report.valid_count == 0


async def test_failure_after_work_began_ends_the_operation_and_the_file(
    aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    broken = dataset.ids(Kind.MISSING_OBJECT)[0]
    operation = aclient.create_training_file(unique("broken"), [dataset.ids()[0], broken])
    with pytest.raises(tfc.FailedPrecondition) as raised:
        await operation.result()
    assert [(v.subject, v.reason) for v in raised.value.violations] == [
        (broken, "ENRICHED_DOCUMENT_INVALID")
    ]
    assert operation.training_file_id is not None
    failed = await aclient.get_training_file(operation.training_file_id)
    assert failed.status == FAILED

    with pytest.raises(tfc.FailedPrecondition) as raised:
        await aclient.get_download_url(failed.id, JSON)
    assert [(v.subject, v.reason) for v in raised.value.violations] == [
        (failed.id, "TRAINING_FILE_NOT_ACTIVE")
    ]


async def test_already_exists_names_the_taken_name(
    aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    name = unique("taken")
    await aclient.create_training_file(name, dataset.ids()[20:21]).result()
    with pytest.raises(tfc.AlreadyExists) as raised:
        await aclient.create_training_file(name, dataset.ids()[21:22]).result()
    assert (raised.value.resource_type, raised.value.resource_name) == ("training_file", name)
    assert raised.value.reason == "ALREADY_EXISTS"


async def test_resource_exhausted_carries_the_quota_violation(
    aclient: tfc.AsyncTrainingFilesClient,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(10_001)]
    with pytest.raises(tfc.ResourceExhausted) as raised:
        await aclient.create_training_file(unique("huge"), ids).result()
    assert raised.value.reason == "TOO_MANY_CONVERSATIONS"
    assert [v.subject for v in raised.value.violations] == ["conversation_ids"]


async def test_identity_errors(target: str, dataset: Dataset) -> None:
    async with tfc.AsyncTrainingFilesClient(target) as anonymous:
        with pytest.raises(tfc.Unauthenticated) as raised:
            await anonymous.get_training_file(str(uuid.uuid4()))
        assert raised.value.reason
        with pytest.raises(tfc.Unauthenticated):
            [f async for f in anonymous.list_training_files()]
        # A token in the call's metadata wins over the client's (here: none).
        bearer = ("authorization", "Bearer not-a-jwt")
        with pytest.raises(tfc.Unauthenticated):
            await anonymous.get_training_file(str(uuid.uuid4()), metadata=[bearer])

    async with tfc.AsyncTrainingFilesClient(target, token=mint("authenticated")) as user:
        operation = user.create_training_file(
            unique("behalf"), dataset.ids()[:1], on_behalf_of=str(uuid.uuid4())
        )
        with pytest.raises(tfc.PermissionDenied) as denied:
            await operation.result()
        assert denied.value.reason == "ON_BEHALF_OF_NOT_ALLOWED"


# ----------------------------------------------------------------- retries


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_reads_are_retried_across_a_server_restart(
    stack: Stack, token: str, dataset: Dataset
) -> None:
    """The channel's retry policy, not a loop of ours, carries a Get over the restart."""
    port = _free_port()
    settings = stack_settings(stack.postgres, stack.seaweed, listen_address=f"127.0.0.1:{port}")
    target = f"127.0.0.1:{port}"
    async with (
        running_server(settings),
        tfc.AsyncTrainingFilesClient(target, token=token) as setup,
    ):
        operation = setup.create_training_file(unique("restart"), dataset.ids()[30:31])
        file_id = (await operation.result()).id

    # While the server is down, a listener on its port drops every connection: each
    # client's first attempt fails as against a dead server, and the test sees it happen.
    # Each client gets its own connection (no subchannel shared between the two).
    dropped = 0
    both_dropped = asyncio.Event()

    def drop(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        writer.close()
        dropped += 1
        if dropped >= 2:
            both_dropped.set()

    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    with tfc.TrainingFilesClient(target, token=token, options=own_connection) as client:
        async with tfc.AsyncTrainingFilesClient(
            target, token=token, options=own_connection
        ) as aclient:
            listener = await asyncio.start_server(drop, "127.0.0.1", port)
            sync_get = asyncio.create_task(
                asyncio.to_thread(client.get_training_file, file_id, timeout=TIMEOUT)
            )
            async_get = asyncio.create_task(aclient.get_training_file(file_id, timeout=TIMEOUT))
            async with asyncio.timeout(TIMEOUT):
                await both_dropped.wait()
            listener.close()
            await listener.wait_closed()
            assert not sync_get.done() and not async_get.done()
            async with running_server(settings):
                assert (await sync_get).id == file_id
                assert (await async_get).id == file_id

        # Create is never retried: with the server down it fails at once.
        def create_while_down() -> None:
            with pytest.raises(tfc.Unavailable):
                client.create_training_file("never", dataset.ids()[:1], timeout=TIMEOUT).result()

        started = time.monotonic()
        await asyncio.to_thread(create_while_down)
        assert time.monotonic() - started < 2.0  # retried, it would take about 7.5 s

        # Nor is a read told not to be (`retry=None`: a channel without retries).
        def get_without_retries() -> None:
            with pytest.raises(tfc.Unavailable):
                client.get_training_file(file_id, timeout=TIMEOUT, retry=None)

        started = time.monotonic()
        await asyncio.to_thread(get_without_retries)
        assert time.monotonic() - started < 2.0


# ----------------------------------------------------------------- the distribution


async def test_the_distribution_installs_alone_into_an_empty_venv(tmp_path: Path) -> None:
    """grpcio, protobuf and googleapis-common-protos suffice; nothing server-side comes."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is installed with the dev dependencies"
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"

    def install() -> subprocess.CompletedProcess[str]:
        run = subprocess.run
        run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        command = [uv, "pip", "install", "--quiet", "--python", str(python)]
        # The cache (filled by `make venv`) is enough; the index only when it is not.
        offline = run([*command, "--offline", str(ROOT / "clients" / "python")])
        if offline.returncode != 0:
            run([*command, str(ROOT / "clients" / "python")], check=True)
        check = (
            "import importlib.util, trainingfiles_client, trainingfiles.v1.service_pb2_grpc\n"
            "for name in ('asyncpg', 'aiobotocore', 'pydantic', 'trainingfiles_server'):\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "print(len(trainingfiles_client.__all__))\n"
        )
        return run([str(python), "-c", check], capture_output=True, text=True, timeout=60)

    result = await asyncio.to_thread(install)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(tfc.__all__)
