"""Concurrency: many Adds on one file, many callers on one connection, a database that
stalls at commit, download links that outlive an Add, and an Archive during an Add.

Everything runs against the real gRPC server, PostgreSQL and SeaweedFS; nothing is
mocked. Stalls are real: the test stops (SIGSTOP) a PostgreSQL or SeaweedFS it started
itself, and always lets it continue and stops it in the end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from tests.conftest import Stack, authorized_channel, stack_settings
from tests.e2e.guards import SERVING, health_status
from tests.e2e.helpers import (
    ACTIVE,
    ARCHIVED,
    FAILED,
    FETCHING,
    JSON,
    JSONL,
    VALIDATING,
    Progress,
    StreamResult,
    Stub,
    captured_logs,
    collect,
    create_ok,
    download,
    download_url,
    error_reason,
    file_conversations,
    get,
    http_get,
    intent_count,
    jsonl_records,
    object_keys,
    open_uploads,
    output_keys,
    unique_name,
)
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_dev.embedded import EmbeddedPostgres, EmbeddedSeaweedFS
from trainingfiles_dev.generator import generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.config import Settings
from trainingfiles_server.storage import Storage, open_storage

pytestmark = pytest.mark.timeout(240)

SEED = 9137
# How long a read may take while Adds run; a read stuck behind them took 30 s.
READ_BOUND = 5.0
# Every wait of these tests ends after this long at the latest.
WAIT = 60.0


@pytest.fixture(scope="module")
async def conversations(server: RunningServer, storage: Storage) -> list[str]:
    """Ids of 120 eligible conversations of this module's own user."""
    generated = list(generate(SEED, 120, owners=[uuid.uuid4()]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, generated)
    return [str(c.conversation_id) for c in generated]


async def _until(condition: Any, what: str, timeout: float = WAIT) -> None:
    """Poll `condition` (sync or async) until it is true; fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = condition()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting until {what}") from None


def _queued(server: RunningServer, file_id: str) -> int:
    """Adds of the file in the server's queue: the one running and those waiting."""
    entry = server.operations._queue._locks.get(uuid.UUID(file_id))
    return entry[1] if entry is not None else 0


async def _serving_again(server: RunningServer) -> None:
    """Wait until the server's health probe passes again after a load (the next test's
    first health check must not see a probe that timed out under this one's load)."""

    async def serving() -> bool:
        return bool(await health_status(server.port) == SERVING)

    await _until(serving, "the server is SERVING again")


def _add_request(file_id: str, ids: Sequence[str]) -> service_pb2.AddConversationsRequest:
    return service_pb2.AddConversationsRequest(training_file_id=file_id, conversation_ids=ids)


async def _next_stage(call: Any, stage: int) -> Progress:
    """Read a Create/Add stream until a message of `stage`; fail if it ends first."""
    async with asyncio.timeout(WAIT):
        while (message := await call.read()) is not grpc.aio.EOF:
            assert isinstance(message, Progress)
            if message.stage == stage:
                return message
    raise AssertionError(f"the stream ended before stage {stage}")


# ----------------------------------------------------------------- 50 Adds on one file

ADDS = 50


async def test_50_concurrent_adds_on_one_file_all_succeed_in_arrival_order(
    server: RunningServer, stub: Stub, conversations: list[str]
) -> None:
    base = conversations[:2]
    batches: list[list[str]] = []
    rest = iter(conversations[2:])
    for k in range(ADDS):  # 1, 2, 1, 2, ... distinct conversations per Add
        batches.append([next(rest) for _ in range(1 + k % 2)])
    added = [c for batch in batches for c in batch]
    created = await create_ok(stub, unique_name("fifty-adds"), base)
    assert created.version == 1

    latencies: list[float] = []
    adds_done = asyncio.Event()

    async def reader(index: int) -> None:
        get_request = service_pb2.GetTrainingFileRequest(training_file_id=created.id)
        list_request = service_pb2.ListTrainingFilesRequest(page_size=10)
        while not adds_done.is_set():
            started = time.monotonic()
            if index % 2:
                await stub.GetTrainingFile(get_request, timeout=WAIT)
            else:
                await stub.ListTrainingFiles(list_request, timeout=WAIT)
            latencies.append(time.monotonic() - started)

    readers = [asyncio.create_task(reader(i)) for i in range(4)]
    adds: list[asyncio.Task[StreamResult]] = []
    try:
        for k, batch in enumerate(batches):
            call = stub.AddConversations(_add_request(created.id, batch), timeout=180)
            adds.append(asyncio.create_task(collect(call)))
            # Add k has arrived once the queue (with the Adds already over) counts k + 1:
            # arrival order is defined before the next one is sent.
            await _until(
                lambda k=k: _queued(server, created.id) + sum(t.done() for t in adds) > k,
                f"Add {k} joined the file's queue",
            )
        results = await asyncio.gather(*adds)
    finally:
        adds_done.set()
        await asyncio.gather(*readers)
        for task in adds:
            task.cancel()

    errors = [(k, r.error.code(), r.error.details()) for k, r in enumerate(results) if r.error]
    assert not errors, errors
    versions = [r.training_file.version for r in results]
    # FIFO: each Add extends the version the one that arrived before it left.
    assert versions == list(range(2, ADDS + 2)), versions
    final = await get(stub, created.id)
    assert (final.version, final.status) == (ADDS + 1, ACTIVE)
    assert final.conversation_count == len(base) + len(added)
    listed = [c.conversation_id for c in await file_conversations(stub, created.id)]
    assert listed == base + added
    assert len(set(listed)) == len(listed)
    # The content is exactly a Create of the same conversations in the same order.
    jsonl = await download(stub, created.id, JSONL)
    fresh = await create_ok(stub, unique_name("fifty-adds-fresh"), base + added)
    assert jsonl == await download(stub, fresh.id, JSONL)
    lines = jsonl_records(jsonl)
    assert len(lines) == final.total_training_pairs == fresh.total_training_pairs
    assert list(dict.fromkeys(line["conversation_id"] for line in lines)) == base + added
    # No link was handed out while the Adds ran: every replaced object is gone.
    assert await object_keys(server, f"{created.id}/") == output_keys(final)
    assert await intent_count(server, created.id) == 0
    # Reads kept answering throughout.
    assert len(latencies) >= 20, f"only {len(latencies)} reads ran during the Adds"
    slowest = max(latencies)
    assert slowest < READ_BOUND, (
        f"a read took {slowest:.2f} s while the Adds ran ({len(latencies)} reads)"
    )
    await _serving_again(server)


# ----------------------------------------------------------------- many callers, one channel

CALLERS = 200
LOAD_SECONDS = 5.0


async def test_200_callers_on_one_default_channel_never_see_refused_streams(
    server: RunningServer, settings: Settings, stub: Stub, token: str, conversations: list[str]
) -> None:
    """Sustained load above the stream limit: the client queues calls, none is refused."""
    assert (
        settings.max_concurrent_streams == Settings.model_fields["max_concurrent_streams"].default
    )
    created = await create_ok(stub, unique_name("streams"), conversations[:2])
    metadata = (("authorization", f"Bearer {token}"),)
    codes: collections.Counter[str] = collections.Counter()
    details: dict[str, str] = {}
    slowest = 0.0
    # A channel with gRPC's defaults: nothing here raises or lowers the stream limits.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        plain = service_pb2_grpc.TrainingFileServiceStub(channel)
        get_request = service_pb2.GetTrainingFileRequest(training_file_id=created.id)
        list_request = service_pb2.ListTrainingFilesRequest(page_size=5)
        deadline = time.monotonic() + LOAD_SECONDS

        async def caller(index: int) -> None:
            nonlocal slowest
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    if index % 2:
                        await plain.GetTrainingFile(get_request, metadata=metadata, timeout=WAIT)
                    else:
                        await plain.ListTrainingFiles(list_request, metadata=metadata, timeout=WAIT)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    details.setdefault(error.code().name, error.details() or "")
                slowest = max(slowest, time.monotonic() - started)

        await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    await _serving_again(server)

    failures = {code: n for code, n in codes.items() if code != "OK"}
    assert not failures, f"{failures} of {sum(codes.values())} calls failed: {details}"
    assert codes["OK"] >= CALLERS, codes
    assert slowest < READ_BOUND, f"a call took {slowest:.2f} s ({codes['OK']} calls)"


async def test_a_connection_still_runs_at_most_max_concurrent_streams_calls(
    server: RunningServer, settings: Settings, token: str, conversations: list[str], stub: Stub
) -> None:
    """The limit holds: calls beyond it wait in the client, and are not refused."""
    limit = settings.max_concurrent_streams
    created = await create_ok(stub, unique_name("stream-limit"), conversations[:1])
    file_id = uuid.UUID(created.id)
    # Another build holds the file (as another replica's would): the Adds wait in the
    # server, each holding its stream.
    await server.database.pool.execute(
        "UPDATE training_files SET lease_token = $2,"
        " lease_expires_at = clock_timestamp() + interval '5 minutes' WHERE id = $1",
        file_id,
        uuid.uuid4(),
    )
    metadata = (("authorization", f"Bearer {token}"),)
    get_request = service_pb2.GetTrainingFileRequest(training_file_id=created.id)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            plain = service_pb2_grpc.TrainingFileServiceStub(channel)
            calls = [
                plain.AddConversations(
                    _add_request(created.id, conversations[1:2]), metadata=metadata, timeout=WAIT
                )
                for _ in range(limit + 50)
            ]
            await _until(lambda: _queued(server, created.id) >= limit, f"{limit} Adds arrived")
            # The connection is full: a read on it waits in the client for a free stream
            # (and runs into its deadline), while another connection is answered at once.
            with pytest.raises(grpc.aio.AioRpcError) as waited:
                await plain.GetTrainingFile(get_request, metadata=metadata, timeout=1)
            assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, waited.value
            assert (await stub.GetTrainingFile(get_request, timeout=WAIT)).id == created.id
            assert _queued(server, created.id) == limit
            for call in calls:
                call.cancel()
            await _until(lambda: _queued(server, created.id) == 0, "the Adds were cancelled")
            codes = {(await _code(call)).name for call in calls}
            assert codes == {"CANCELLED"}, codes
            # Streams are free again: the same connection answers.
            await plain.GetTrainingFile(get_request, metadata=metadata, timeout=WAIT)
    finally:
        await server.database.pool.execute(
            "UPDATE training_files SET lease_token = NULL, lease_expires_at = NULL WHERE id = $1",
            file_id,
        )
    assert (await get(stub, created.id)).version == 1


async def _code(call: Any) -> grpc.StatusCode:
    code: grpc.StatusCode = await call.code()
    return code


# ----------------------------------------------------------------- processes we stop


@contextlib.contextmanager
def stopped(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP a server this test started, and every process below it; SIGCONT on exit."""
    root = psutil.Process(process.pid)
    root.suspend()  # first, so that it forks no child meanwhile
    tree = [root]
    try:
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.suspend()
                tree.append(child)
        yield
    finally:
        for member in reversed(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                member.resume()


# ----------------------------------------------------------------- PostgreSQL stalls at commit

COMMAND_TIMEOUT = 2.0
LEASE = 2.0
STALLED_CONVERSATIONS = 400


@contextlib.asynccontextmanager
async def own_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test alone, migrated, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="trainingfiles-stall-") as directory:
        postgres = await asyncio.to_thread(
            EmbeddedPostgres.start, Path(directory) / "postgres", durable=False
        )
        try:
            await asyncio.to_thread(postgres.create_database, "trainingfiles")
            await asyncio.to_thread(
                apply_migrations, postgres.url("trainingfiles"), development=True
            )
            yield postgres
        finally:
            await asyncio.to_thread(postgres.stop)


async def test_postgres_stalled_before_the_commit_fails_the_create_and_the_sweeper_cleans(
    stack: Stack, storage: Storage, token: str
) -> None:
    async with own_postgres() as postgres:
        settings = stack_settings(
            postgres,
            stack.seaweed,
            database_command_timeout_seconds=COMMAND_TIMEOUT,
            lease_seconds=LEASE,
            fetch_concurrency=1,
            # A bucket of its own: this server's sweeper knows only its own database's
            # uploads and must not take other servers' for orphans.
            s3_training_bucket=f"training-stall-{uuid.uuid4().hex[:12]}",
        )
        await ensure_buckets(storage.client, settings.s3_training_bucket)
        # ~40 KB of lines each: ~16 MB, so both objects become multipart uploads (parts
        # of 5 MiB, the least a store accepts) well before the last document is fetched.
        generated = list(generate(SEED + 1, STALLED_CONVERSATIONS, owners=[uuid.uuid4()]))
        with captured_logs() as logs:
            async with (
                running_server(settings) as running,
                authorized_channel(running.port, token) as channel,
            ):
                await load(
                    running.database.pool,
                    storage.client,
                    storage.conversations_bucket,
                    generated,
                )
                own = service_pb2_grpc.TrainingFileServiceStub(channel)
                call = own.CreateTrainingFile(
                    service_pb2.CreateTrainingFileRequest(
                        name=unique_name("stalled"),
                        conversation_ids=[str(c.conversation_id) for c in generated],
                    ),
                    timeout=WAIT,
                )
                first = await call.read()
                assert first.stage == VALIDATING
                file_id = first.training_file_id
                await _next_stage(call, FETCHING)
                recorded = (
                    "SELECT count(*) FROM storage_intents"
                    " WHERE training_file_id = $1 AND upload_id IS NOT NULL"
                )
                await _until(
                    lambda: _fetchval(running, recorded, uuid.UUID(file_id), expect=2),
                    "both uploads are recorded",
                )

                get_request = service_pb2.GetTrainingFileRequest(training_file_id=file_id)
                with stopped(postgres.process):
                    # The Create goes on fetching; its commit cannot happen.
                    started = time.monotonic()
                    with pytest.raises(grpc.aio.AioRpcError) as read_failed:
                        await own.GetTrainingFile(get_request, timeout=WAIT)
                    read_took = time.monotonic() - started
                    result = await collect(call)

                assert read_failed.value.code() == grpc.StatusCode.UNAVAILABLE, read_failed.value
                # Its statement's timeout, and a short grace for the cancellation.
                assert read_took < COMMAND_TIMEOUT + 1.5, f"the read took {read_took:.2f} s"
                assert result.error is not None, "the Create succeeded"
                assert result.error.code() == grpc.StatusCode.UNAVAILABLE, result.error
                # It fetched every document and got no further: its first write after them,
                # staging its members (400, one batch) before the commit, cannot happen.
                assert result.last.stage == FETCHING, result.last
                assert result.last.done == result.last.total == STALLED_CONVERSATIONS
                assert not any(m.HasField("training_file") for m in result.messages)

                # PostgreSQL is back: once the lease has run out, a sweep fails the file
                # and removes what the Create stored.
                prefix = f"{file_id}/"

                async def repaired() -> bool:
                    await running.sweeper.sweep()
                    file = await own.GetTrainingFile(get_request, timeout=WAIT)
                    return (
                        file.status == FAILED
                        and not await object_keys(running, prefix)
                        and not await open_uploads(running, prefix)
                        and not await intent_count(running, file_id)
                    )

                await _until(repaired, "the sweeper repaired the file")
                file = await own.GetTrainingFile(get_request, timeout=WAIT)
                assert (file.json_file_path, file.jsonl_file_path) == ("", "")
                assert file.error_message

        lines = logs.lines()
        with_traceback = [line for line in lines if "Traceback" in line]
        assert not with_traceback, "\n".join(with_traceback)
        codes = [getattr(r, "fields", {}).get("code") for r in logs.records if r.msg == "rpc"]
        assert "UNAVAILABLE" in codes
        assert not {"INTERNAL", "UNKNOWN"} & set(codes), codes


async def _fetchval(running: RunningServer, query: str, *args: Any, expect: Any) -> bool:
    value = await running.database.pool.fetchval(query, *args)
    return bool(value == expect)


# ----------------------------------------------------------------- download links and Adds


async def test_download_links_survive_an_add_until_they_expire(
    server: RunningServer, stub: Stub, conversations: list[str]
) -> None:
    created = await create_ok(stub, unique_name("links"), conversations[:3])
    links = {
        fmt: await download_url(stub, created.id, fmt)
        # both formats, each with its own expiry
        for fmt in (JSON, JSONL)
    }
    before = {fmt: (await http_get(link.url)).body for fmt, link in links.items()}

    added = await collect(
        stub.AddConversations(_add_request(created.id, conversations[3:5]), timeout=WAIT)
    )
    assert added.error is None, added.error
    new = added.training_file
    assert new.version == 2

    # The old links still answer, with the old, complete content.
    for fmt, link in links.items():
        assert (await http_get(link.url)).body == before[fmt]
    after = {fmt: await download(stub, created.id, fmt) for fmt in (JSON, JSONL)}
    assert after[JSONL].startswith(before[JSONL]) and len(after[JSONL]) > len(before[JSONL])
    assert after[JSON] != before[JSON]
    assert len(jsonl_records(after[JSONL])) == new.total_training_pairs

    # The replaced objects are the sweeper's, due once the last link has expired.
    expiry = max(link.expire_time.ToDatetime(tzinfo=UTC) for link in links.values())
    replaced = output_keys(created)
    rows = await _intents(server, created.id)
    assert {row["object_key"] for row in rows} == replaced
    assert all(row["lease_token"] is None for row in rows)
    assert all(row["delete_after"] >= expiry for row in rows), (rows, expiry)

    # A sweep leaves them alone: the links are still valid.
    await _swept(server)
    assert await object_keys(server, f"{created.id}/") == replaced | output_keys(new)
    assert len(await _intents(server, created.id)) == len(replaced)
    for fmt, link in links.items():
        assert (await http_get(link.url)).body == before[fmt]

    # Once the links have expired (their expiry moved to now), the next sweep deletes them.
    await server.database.pool.execute(
        "UPDATE storage_intents SET delete_after = now() WHERE training_file_id = $1",
        uuid.UUID(created.id),
    )
    await _swept(server)
    assert await object_keys(server, f"{created.id}/") == output_keys(new)
    assert await intent_count(server, created.id) == 0


async def test_an_add_to_a_file_without_links_deletes_the_replaced_objects_at_once(
    server: RunningServer, stub: Stub, conversations: list[str]
) -> None:
    created = await create_ok(stub, unique_name("no-links"), conversations[5:7])

    added = await collect(
        stub.AddConversations(_add_request(created.id, conversations[7:8]), timeout=WAIT)
    )

    assert added.error is None, added.error
    new = added.training_file
    assert await object_keys(server, f"{created.id}/") == output_keys(new)
    assert await intent_count(server, created.id) == 0


async def _intents(server: RunningServer, file_id: str) -> list[dict[str, Any]]:
    rows = await server.database.pool.fetch(
        "SELECT object_key, lease_token, delete_after FROM storage_intents"
        " WHERE training_file_id = $1",
        uuid.UUID(file_id),
    )
    return [dict(row.items()) for row in rows]


async def _swept(server: RunningServer) -> None:
    """One sweep of the session server (another may be sweeping: then wait for it)."""

    async def swept() -> bool:
        return (await server.sweeper.sweep()).swept

    await _until(swept, "the sweeper ran")


# ----------------------------------------------------------------- Archive during an Add


@contextlib.asynccontextmanager
async def own_storage(stack: Stack) -> AsyncIterator[tuple[EmbeddedSeaweedFS, Settings]]:
    """A SeaweedFS of this test alone, with both buckets, and settings that use it."""
    with tempfile.TemporaryDirectory(prefix="trainingfiles-archive-") as directory:
        seaweed = await asyncio.to_thread(EmbeddedSeaweedFS.start, Path(directory) / "seaweedfs")
        try:
            settings = stack_settings(stack.postgres, seaweed)
            async with open_storage(settings) as storage:
                await ensure_buckets(
                    storage.client, settings.s3_conversations_bucket, settings.s3_training_bucket
                )
            yield seaweed, settings
        finally:
            await asyncio.to_thread(seaweed.stop, 3)


async def test_archive_during_an_add_wins_and_the_add_leaves_nothing_behind(
    stack: Stack, token: str
) -> None:
    generated = list(generate(SEED + 2, 12, owners=[uuid.uuid4()]))
    ids = [str(c.conversation_id) for c in generated]
    async with (
        own_storage(stack) as (seaweed, settings),
        running_server(settings) as running,
        authorized_channel(running.port, token) as channel,
    ):
        await load(
            running.database.pool,
            running.storage.client,
            running.storage.conversations_bucket,
            generated,
        )
        own = service_pb2_grpc.TrainingFileServiceStub(channel)
        created = await create_ok(own, unique_name("archive-race"), ids[:4])
        before = {fmt: await download(own, created.id, fmt) for fmt in (JSON, JSONL)}
        prefix = f"{created.id}/"

        # Storage stalls: the Add gets its lease and starts, then waits on every read and
        # write; its progress still ticks (FETCHING, nothing fetched yet).
        with stopped(seaweed.process):
            call = own.AddConversations(_add_request(created.id, ids[4:]), timeout=WAIT)
            fetching = await _next_stage(call, FETCHING)
            assert fetching.done < fetching.total  # the Add is still fetching
            started = time.monotonic()
            archived = await own.ArchiveTrainingFile(
                service_pb2.ArchiveTrainingFileRequest(training_file_id=created.id),
                timeout=WAIT,
            )
            archive_took = time.monotonic() - started
        result = await collect(call)

        assert archived.status == ARCHIVED
        assert archive_took < READ_BOUND, f"the Archive waited {archive_took:.1f} s for the Add"
        assert result.error is not None, "the Add succeeded"
        assert result.error.code() == grpc.StatusCode.FAILED_PRECONDITION, result.error
        assert error_reason(result.error) == "TRAINING_FILE_NOT_ACTIVE"
        file = await own.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=created.id), timeout=WAIT
        )
        assert file == archived
        assert (file.version, file.conversation_count) == (1, 4)
        for fmt in (JSON, JSONL):
            assert await download(own, created.id, fmt) == before[fmt]
        assert await object_keys(running, prefix) == output_keys(created)
        assert await open_uploads(running, prefix) == set()
        assert await intent_count(running, created.id) == 0
        listed = [c.conversation_id for c in await file_conversations(own, created.id)]
        assert listed == ids[:4]
