"""The crash suite: the server killed, frozen and stopped at every stage of a build.

Each scenario runs real server processes on the session's PostgreSQL and SeaweedFS (see
`harness.py`). Nothing is repaired by calling code from the test: what repairs the state
is a server process started afterwards, as in production, and the test only looks.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from tests.conftest import Stack, authorized_channel
from tests.crash.harness import (
    ADD_POINTS,
    CREATE_POINTS,
    EXPORT_POINTS,
    LEASE_SECONDS,
    REFRESH_POINTS,
    REMOVE_POINTS,
    Backend,
    Observer,
    ServerProcess,
    padded,
    run_add,
    run_create,
    run_export,
    run_refresh,
    run_remove,
    server_process,
)
from tests.e2e.helpers import create_ok, error_reason, http_get, unique_name
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.embedded import free_port
from trainingfiles_dev.generator import generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.db import SWEEPER_JOB
from trainingfiles_server.storage import Storage

OWNER = uuid.UUID("00000000-0000-4000-8000-00000000c4a5")
# A replica that sweeps only when it starts: frozen in a sweep, it would hold the others'
# sweeps back for a lease.
ONCE = {"SWEEP_INTERVAL_SECONDS": "3600"}


@pytest.fixture(scope="module")
def backend(stack: Stack) -> Backend:
    return Backend(
        stack.database_url,
        stack.seaweed.endpoint_url,
        stack.seaweed.access_key,
        stack.seaweed.secret_key,
    )


@pytest.fixture(scope="module")
async def crash_ids(server: RunningServer, storage: Storage) -> list[str]:
    """Padded conversations: 30 make ~12 MiB per object, several multipart parts."""
    conversations = [padded(c) for c in generate(9090, 40, owners=[OWNER])]
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    return [str(c.conversation_id) for c in conversations]


@pytest.fixture
def observer(server: RunningServer, storage: Storage) -> Observer:
    return Observer(server.database.pool, storage)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize("fault", CREATE_POINTS)
async def test_a_create_killed_at_any_stage_is_repaired_after_a_restart(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    crash_ids: list[str],
    fault: str,
) -> None:
    outcome = await run_create(backend, observer, workdir, token, crash_ids[:30], fault)
    assert outcome.died, "the failpoint was not reached"
    assert outcome.problems == []
    assert outcome.file_id is not None
    if fault == "build.committed":
        assert outcome.final_status == "TRAINING_FILE_STATUS_ACTIVE"
    else:
        assert outcome.final_status == "TRAINING_FILE_STATUS_FAILED"
    # Repaired within the lease, a restart and a few sweeps, not 15 minutes.
    assert outcome.repair_seconds < 60


@pytest.mark.parametrize("fault", ADD_POINTS)
async def test_an_add_killed_at_any_stage_leaves_a_complete_version(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
    fault: str,
) -> None:
    base = await create_ok(stub, unique_name("crash-add"), crash_ids[:20])
    outcome = await run_add(backend, observer, workdir, token, base.id, crash_ids[20:35], fault)
    assert outcome.died, "the failpoint was not reached"
    assert outcome.problems == []
    assert outcome.final_status == "TRAINING_FILE_STATUS_ACTIVE"
    assert outcome.version == (base.version + 1 if fault == "build.committed" else base.version)
    # And the next Add works: the dead build's lease does not hold the file.
    again = await _add(stub, base.id, crash_ids[35:37])
    assert again.version == outcome.version + 1


@pytest.mark.parametrize("operation", ["create", "add"])
async def test_a_build_killed_before_its_commit_leaves_no_staged_member(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
    operation: str,
) -> None:
    """A Create or an Add killed once its members are staged (`build.uploaded`: every
    row written, none moved): the restarted server's sweeper deletes the dead build's
    staged rows (`Observer.problems` counts any left as a problem)."""
    if operation == "create":
        outcome = await run_create(
            backend, observer, workdir, token, crash_ids[:30], "build.uploaded"
        )
        staged = 30
    else:
        base = await create_ok(stub, unique_name("crash-staged"), crash_ids[:20])
        outcome = await run_add(
            backend, observer, workdir, token, base.id, crash_ids[20:35], "build.uploaded"
        )
        staged = 15
    assert outcome.died, "the failpoint was not reached"
    assert outcome.staged_at_death == staged
    assert outcome.problems == []
    assert outcome.file_id is not None
    assert await observer.staged(outcome.file_id) == 0


TRAINER = (resources_pb2.FILE_FORMAT_PARQUET, resources_pb2.FILE_FORMAT_OPENAI_CHAT)


async def test_a_create_with_trainer_formats_killed_before_its_commit_is_repaired(
    backend: Backend, observer: Observer, workdir: Path, token: str, crash_ids: list[str]
) -> None:
    """Every output's object and intent is cleaned up, not only the v4 ones'."""
    outcome = await run_create(
        backend, observer, workdir, token, crash_ids[:30], "build.uploaded", formats=TRAINER
    )
    assert outcome.died and outcome.problems == []
    assert outcome.final_status == "TRAINING_FILE_STATUS_FAILED"


@pytest.mark.parametrize("fault", EXPORT_POINTS)
async def test_an_export_killed_at_any_stage_leaves_complete_outputs(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
    fault: str,
) -> None:
    base = await create_ok(stub, unique_name("crash-export"), crash_ids[:20])
    before = {(o.format, o.split) for o in base.outputs}
    outcome = await run_export(backend, observer, workdir, token, base.id, TRAINER, fault)
    assert outcome.died, "the failpoint was not reached"
    assert outcome.problems == []  # every output row's object exists with its checksum
    after = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=base.id), timeout=30
    )
    formats = {(o.format, o.split) for o in after.outputs}
    exported = {(f, resources_pb2.SPLIT_ALL) for f in TRAINER}
    assert formats == (before | exported if fault == "build.committed" else before)
    # The file is free: an export now succeeds.
    last = None
    async for message in stub.ExportTrainingFile(
        service_pb2.ExportTrainingFileRequest(training_file_id=base.id, formats=TRAINER),
        timeout=60,
    ):
        last = message
    assert last is not None and exported <= {
        (o.format, o.split) for o in last.training_file.outputs
    }


@pytest.mark.parametrize("fault", REMOVE_POINTS)
async def test_a_remove_killed_at_any_stage_leaves_a_complete_version(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
    fault: str,
) -> None:
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("crash-remove"), conversation_ids=crash_ids[:20], formats=TRAINER
    )
    request.split.validation_count = 3
    last = None
    async for message in stub.CreateTrainingFile(request, timeout=60):
        last = message
    assert last is not None
    base = last.training_file
    gone = [crash_ids[3], crash_ids[11]]
    outcome = await run_remove(backend, observer, workdir, token, base.id, gone, fault)
    assert outcome.died, "the failpoint was not reached"
    assert outcome.problems == []  # every kept version's objects exist with their checksums
    assert outcome.version == base.version + (1 if fault == "build.committed" else 0)
    if fault == "build.committed":
        return  # removed already: a retry is refused (CONVERSATIONS_NOT_IN_FILE)
    # The file is free: the Remove now succeeds.
    last = None
    async for message in stub.RemoveConversations(
        service_pb2.RemoveConversationsRequest(training_file_id=base.id, conversation_ids=gone),
        timeout=60,
    ):
        last = message
    assert last is not None and last.training_file.conversation_count == 18


@pytest.mark.parametrize("fault", REFRESH_POINTS)
async def test_a_refresh_killed_at_any_stage_leaves_a_complete_version(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    server: RunningServer,
    crash_ids: list[str],
    fault: str,
) -> None:
    ids = crash_ids[20:32]
    base = await create_ok(stub, unique_name("crash-refresh"), ids)
    # Two conversations re-enriched in place, as the pipeline does.
    for status in ("enrichment_in_progress", "completed"):
        await server.database.pool.execute(
            "UPDATE conversations SET enrichment_status = $2 "
            "WHERE conversation_id = ANY($1::uuid[])",
            [uuid.UUID(ids[2]), uuid.UUID(ids[7])],
            status,
        )
    outcome = await run_refresh(backend, observer, workdir, token, base.id, fault)
    assert outcome.died, "the failpoint was not reached"
    assert outcome.problems == []
    assert outcome.version == base.version + (1 if fault == "build.committed" else 0)
    if fault == "build.committed":
        return
    # The file is free and still stale: the Refresh now succeeds.
    last = None
    async for message in stub.RefreshTrainingFile(
        service_pb2.RefreshTrainingFileRequest(training_file_id=base.id), timeout=60
    ):
        last = message
    assert last is not None and last.training_file.version == base.version + 1
    assert last.training_file.stale_conversation_count == 0


@pytest.mark.parametrize("fault", ["build.fetched:5", "build.uploaded"])
async def test_an_add_to_a_file_with_trainer_formats_killed_leaves_its_outputs_complete(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
    fault: str,
) -> None:
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("crash-add-formats"),
        conversation_ids=crash_ids[:20],
        formats=TRAINER,
    )
    request.split.validation_count = 3
    last = None
    async for message in stub.CreateTrainingFile(request, timeout=60):
        last = message
    assert last is not None
    base = last.training_file
    outcome = await run_add(backend, observer, workdir, token, base.id, crash_ids[20:30], fault)
    assert outcome.died and outcome.problems == []
    assert outcome.version == base.version


async def _add(
    stub: service_pb2_grpc.TrainingFileServiceStub, file_id: str, ids: list[str]
) -> resources_pb2.TrainingFile:
    last = None
    async for message in stub.AddConversations(
        service_pb2.AddConversationsRequest(training_file_id=file_id, conversation_ids=ids),
        timeout=60,
    ):
        last = message
    assert last is not None and last.HasField("training_file")
    finished: resources_pb2.TrainingFile = last.training_file
    return finished


async def _wait(condition: Any, timeout: float = 60) -> None:
    """Poll `condition` (bounded): the processes and the store announce nothing."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _start_create(
    channel: grpc.aio.Channel, name: str, ids: list[str]
) -> tuple[Any, uuid.UUID]:
    """A Create under way: its call, and the file's id from its first message."""
    stub = service_pb2_grpc.TrainingFileServiceStub(channel)
    call = stub.CreateTrainingFile(
        service_pb2.CreateTrainingFileRequest(name=name, conversation_ids=ids), timeout=60
    )
    return call, uuid.UUID((await call.read()).training_file_id)


async def _drain(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


@pytest.mark.parametrize("point", ["build.uploaded", "build.upload_recorded"])
async def test_a_frozen_build_that_lost_its_lease_can_never_activate(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    crash_ids: list[str],
    point: str,
) -> None:
    """Replica A freezes between upload and commit (`build.uploaded`), or with its
    multipart upload open (`build.upload_recorded`); replica B's sweeper fails the build,
    deletes its objects and aborts its uploads; A then resumes: its commit, or its next
    part into the aborted upload, is refused (ABORTED, LEASE_LOST: never INTERNAL), the
    file stays FAILED and nothing points at the deleted objects. (Which of the lease's
    renewal and the next part notices first is a race; `test_stores.py::
    test_an_upload_aborted_under_a_writer_is_told_as_a_lost_lease` holds the part's
    side.)"""
    name = unique_name("frozen")
    async with (
        server_process(backend, workdir / "b.log"),
        # A sweeps only when it starts: frozen in the middle of a sweep, it would hold B's
        # sweeps back for a lease.
        server_process(backend, workdir / "a.log", failpoint=f"{point}=stop", extra_env=ONCE) as a,
        authorized_channel(a.port, token) as channel,
    ):
        call, file_id = await _start_create(channel, name, crash_ids[:30])

        async def frozen() -> bool:
            return a.frozen()

        await _wait(frozen)
        row = await observer.pool.fetchrow(
            "SELECT status FROM training_files WHERE id = $1", file_id
        )
        assert row is not None and row["status"] == "processing"

        async def failed() -> bool:
            status = await observer.pool.fetchval(
                "SELECT status FROM training_files WHERE id = $1", file_id
            )
            return bool(status == "failed") and not await observer.problems(file_id)

        await _wait(failed, LEASE_SECONDS + 30)
        a.process.send_signal(signal.SIGCONT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _drain(call)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert "lease" in (refused.value.details() or "")
        assert error_reason(refused.value) == "LEASE_LOST"
        status = await observer.pool.fetchval(
            "SELECT status FROM training_files WHERE id = $1", file_id
        )
        assert status == "failed"
        await observer.repaired(file_id)


async def test_a_frozen_add_that_lost_its_lease_changes_nothing(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
) -> None:
    """Replica A freezes an Add between upload and commit; replica B's sweeper frees the
    file; A resumes: its commit is refused (ABORTED, LEASE_LOST) and the file stays on
    its previous version, free for the next Add."""
    base = await create_ok(stub, unique_name("frozen-add"), crash_ids[:10])
    async with (
        server_process(backend, workdir / "b.log"),
        server_process(
            backend, workdir / "a.log", failpoint="build.uploaded=stop", extra_env=ONCE
        ) as a,
        authorized_channel(a.port, token) as channel,
    ):
        call = service_pb2_grpc.TrainingFileServiceStub(channel).AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=base.id, conversation_ids=crash_ids[10:25]
            ),
            timeout=60,
        )
        file_id = uuid.UUID(base.id)

        async def frozen() -> bool:
            return a.frozen()

        await _wait(frozen)

        async def freed() -> bool:
            lease = await observer.pool.fetchval(
                "SELECT lease_token FROM training_files WHERE id = $1", file_id
            )
            return lease is None and not await observer.problems(file_id)

        await _wait(freed, LEASE_SECONDS + 30)
        a.process.send_signal(signal.SIGCONT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _drain(call)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert error_reason(refused.value) == "LEASE_LOST"
    await observer.repaired(file_id)
    after = await stub.GetTrainingFile(service_pb2.GetTrainingFileRequest(training_file_id=base.id))
    assert (after.version, after.jsonl_file_path) == (base.version, base.jsonl_file_path)
    assert (await _add(stub, base.id, crash_ids[25:26])).version == base.version + 1


async def test_a_build_that_outlived_its_lease_logs_lease_lost(
    backend: Backend, observer: Observer, workdir: Path, token: str, crash_ids: list[str]
) -> None:
    """A build stalled on its own is alive and renews its lease; frozen past the lease
    while replica B fails it, it finds the lease gone when it wakes and says so. The
    caller, its stream stuck on A, looks the file up on B by the id of the first
    message."""
    log = workdir / "a.log"
    async with (
        server_process(backend, workdir / "b.log") as b,
        server_process(backend, log, failpoint="build.fetched:5=stall") as a,
        authorized_channel(a.port, token) as channel,
        authorized_channel(b.port, token) as other,
    ):
        call = service_pb2_grpc.TrainingFileServiceStub(channel).CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=unique_name("outlived"), conversation_ids=crash_ids[:10]
            ),
            timeout=60,
        )
        file_id = uuid.UUID((await call.read()).training_file_id)

        async def stalled() -> bool:
            recorded = await observer.pool.fetchval(
                "SELECT count(*) FROM storage_intents WHERE training_file_id = $1", file_id
            )
            return bool(recorded)

        await _wait(stalled)
        a.process.send_signal(signal.SIGSTOP)

        async def failed() -> bool:
            status = await observer.pool.fetchval(
                "SELECT status FROM training_files WHERE id = $1", file_id
            )
            return bool(status == "failed")

        try:
            await _wait(failed, LEASE_SECONDS + 30)
            looked_up = await service_pb2_grpc.TrainingFileServiceStub(other).GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=str(file_id)), timeout=30
            )
            assert looked_up.status == resources_pb2.TRAINING_FILE_STATUS_FAILED
            assert "interrupted" in looked_up.error_message
        finally:
            a.process.send_signal(signal.SIGCONT)

        def lost() -> list[dict[str, Any]]:
            lines = [
                orjson.loads(line) for line in log.read_bytes().splitlines() if line[:1] == b"{"
            ]
            return [
                line
                for line in lines
                if line["msg"] == "lease lost" and line.get("training_file_id") == str(file_id)
            ]

        async def logged() -> bool:
            return bool(lost())

        await _wait(logged)
        assert lost()[0]["level"] == "warning"
        call.cancel()
    await observer.repaired(file_id)


async def test_sigterm_past_the_grace_cleans_up_before_the_pool_closes(
    backend: Backend, observer: Observer, workdir: Path, token: str, crash_ids: list[str]
) -> None:
    """A build that does not finish within the grace is cancelled, and its cleanup runs
    to the end before the pool and the S3 client close: no sweep is needed."""
    name = unique_name("sigterm")
    log = workdir / "sigterm.log"
    # Stalled after ~6 MiB: the JSONL's multipart upload is open.
    server = ServerProcess(backend, log, failpoint="build.fetched:15=stall")
    try:
        await server.wait_serving()
        async with authorized_channel(server.port, token) as channel:
            call, file_id = await _start_create(channel, name, crash_ids[:30])

            async def uploads_open() -> bool:
                uploads = await observer.storage.open_uploads(observer.storage.training_bucket)
                return any(u.key.startswith(f"{file_id}/") for u in uploads)

            await _wait(uploads_open)  # the build is stalled with its uploads open
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit(30) == 0
            took = time.monotonic() - started
            with pytest.raises(grpc.aio.AioRpcError):
                await _drain(call)
    finally:
        server.stop()
    # Right after the exit, before any other process could sweep:
    assert await observer.problems(file_id) == []
    status = await observer.pool.fetchval(
        "SELECT status FROM training_files WHERE id = $1", file_id
    )
    assert status == "failed"
    # The grace (1 s), the cleanup bound (10 s), and closing the pool and the client.
    assert took < 1 + 10 + 5, f"the process took {took:.1f} s to exit"
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line[:1] == b"{"]
    assert "Traceback" not in log.read_text()
    assert [line["msg"] for line in lines][-1] == "stopped"
    assert not [line for line in lines if line.get("level") == "ERROR"]


async def test_a_sweeper_never_touches_the_live_build_of_another_replica(
    backend: Backend, observer: Observer, workdir: Path, token: str, crash_ids: list[str]
) -> None:
    """A build stalled on storage (alive, renewing its lease) keeps its file and uploads
    through many sweeps of another replica."""
    name = unique_name("alive")
    async with (
        # Stalled after ~11 MiB: both multipart uploads are open.
        server_process(backend, workdir / "a.log", failpoint="build.fetched:28=stall") as a,
        authorized_channel(a.port, token) as channel,
    ):
        call, file_id = await _start_create(channel, name, crash_ids[:30])

        async def uploads_open() -> bool:
            uploads = await observer.storage.open_uploads(observer.storage.training_bucket)
            return sum(u.key.startswith(f"{file_id}/") for u in uploads) == 2

        await _wait(uploads_open)
        async with server_process(backend, workdir / "b.log"):
            await asyncio.sleep(LEASE_SECONDS * 3)  # several leases' worth of B's sweeps
            status = await observer.pool.fetchval(
                "SELECT status FROM training_files WHERE id = $1", file_id
            )
            assert status == "processing"
            assert await uploads_open()
        call.cancel()
    await observer.repaired(file_id)


async def _expired_build(observer: Observer) -> uuid.UUID:
    """A Create's row whose lease ran out a second ago: what a sweep fails."""
    file_id = uuid.uuid4()
    await observer.pool.execute(
        "INSERT INTO training_files (id, name, status, lease_token, lease_expires_at) "
        "VALUES ($1, $2, 'processing', $3, now() - interval '1 second')",
        file_id,
        unique_name("lock"),
        uuid.uuid4(),
    )
    return file_id


async def test_one_sweeper_at_a_time_across_replicas(
    backend: Backend, observer: Observer, workdir: Path
) -> None:
    """While another holder keeps the sweeper's turn no replica sweeps; once it lets go,
    one does."""
    file_id = await _expired_build(observer)
    holder = uuid.uuid4()
    await observer.pool.execute(
        "INSERT INTO job_leases (job, holder, expires_at) "
        "VALUES ($1, $2, now() + interval '1 hour')",
        SWEEPER_JOB,
        holder,
    )
    try:
        async with (
            server_process(backend, workdir / "a.log"),
            server_process(backend, workdir / "b.log"),
        ):
            await asyncio.sleep(LEASE_SECONDS)  # both replicas tried several times
            status = await observer.pool.fetchval(
                "SELECT status FROM training_files WHERE id = $1", file_id
            )
            assert status == "processing"
            await observer.pool.execute(
                "DELETE FROM job_leases WHERE job = $1 AND holder = $2", SWEEPER_JOB, holder
            )
            await observer.repaired(file_id, deadline=15)
    finally:
        await observer.pool.execute(
            "DELETE FROM job_leases WHERE job = $1 AND holder = $2", SWEEPER_JOB, holder
        )


async def test_a_replica_frozen_in_the_middle_of_a_sweep_holds_the_others_back_one_lease(
    backend: Backend, observer: Observer, workdir: Path
) -> None:
    """Replica A freezes (SIGSTOP) right after it took the sweeper's turn. Its turn runs
    out one lease later and replica B sweeps: an expired build is failed and cleaned up.
    A, resumed, finds its turn lost, finishes its round and serves on; its next sweeps
    take turns again."""
    a_metrics = f"127.0.0.1:{free_port()}"
    a = ServerProcess(
        backend,
        workdir / "a.log",
        failpoint="sweep.started=stop",
        extra_env={"METRICS_ADDRESS": a_metrics},
    )
    try:

        async def frozen() -> bool:
            return a.frozen()

        await _wait(frozen)  # in its start-up sweep
        # A's turn (a sweep that ends gives it back; nobody else sweeps yet).
        held = await observer.pool.fetchrow(
            "SELECT holder FROM job_leases WHERE job = $1", SWEEPER_JOB
        )
        assert held is not None
        file_id = await _expired_build(observer)
        async with server_process(backend, workdir / "b.log"):
            await observer.repaired(file_id, deadline=LEASE_SECONDS + 15)
            taken = await observer.pool.fetchval(
                "SELECT holder FROM job_leases WHERE job = $1", SWEEPER_JOB
            )
            assert taken != held["holder"]
            a.process.send_signal(signal.SIGCONT)
            await a.wait_serving()
            again = await _expired_build(observer)
            await observer.repaired(again, deadline=LEASE_SECONDS + 15)
        # A alone sweeps again once B has gone.
        last = await _expired_build(observer)
        await observer.repaired(last, deadline=LEASE_SECONDS + 15)
        assert b"lease lost" in (workdir / "a.log").read_bytes()
        scraped = (await http_get(f"http://{a_metrics}/metrics")).body.decode()
        assert 'trainingfiles_leases_lost_total{holder="sweeper"} 1.0' in scraped
    finally:
        a.stop()


async def test_two_replicas_share_page_tokens_and_serialise_adds(
    backend: Backend,
    workdir: Path,
    token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
    crash_ids: list[str],
) -> None:
    base = await create_ok(stub, unique_name("replicas"), crash_ids[:2])
    async with (
        server_process(backend, workdir / "a.log") as a,
        server_process(backend, workdir / "b.log") as b,
        authorized_channel(a.port, token) as channel_a,
        authorized_channel(b.port, token) as channel_b,
    ):
        stub_a = service_pb2_grpc.TrainingFileServiceStub(channel_a)
        stub_b = service_pb2_grpc.TrainingFileServiceStub(channel_b)
        # A page token issued by one replica is valid on the other.
        first = await stub_a.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(training_file_id=base.id, page_size=1)
        )
        second = await stub_b.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=base.id, page_size=1, page_token=first.next_page_token
            )
        )
        assert [c.conversation_id for c in [*first.conversations, *second.conversations]] == (
            crash_ids[:2]
        )
        # Adds on one file through both replicas at once: each succeeds, none is lost.
        rest = crash_ids[2:14]
        results = await asyncio.gather(
            *(
                _add(stub_a if i % 2 else stub_b, base.id, [conversation])
                for i, conversation in enumerate(rest)
            )
        )
        assert sorted(r.version for r in results) == list(range(2, 2 + len(rest)))
        final = await stub_a.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=base.id)
        )
        members = await stub_b.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=base.id, page_size=100
            )
        )
        assert sorted(c.conversation_id for c in members.conversations) == sorted(crash_ids[:14])
        assert final.conversation_count == 14


async def test_start_up_sweeps_at_once(
    backend: Backend, observer: Observer, workdir: Path, token: str, crash_ids: list[str]
) -> None:
    """A server that starts after a crash repairs it in its first sweep, at start-up,
    without waiting for its sweep interval (an hour here)."""
    name = unique_name("startup")
    async with (
        server_process(backend, workdir / "a.log", failpoint="build.fetched:15") as dying,
        authorized_channel(dying.port, token) as channel,
    ):
        _, file_id = await _start_create(channel, name, crash_ids[:30])
        assert await dying.wait_exit() == -signal.SIGKILL

    async def lease_expired() -> bool:
        expired = await observer.pool.fetchval(
            "SELECT lease_expires_at < now() FROM training_files WHERE id = $1", file_id
        )
        return bool(expired)

    await _wait(lease_expired, LEASE_SECONDS + 5)
    assert await observer.problems(file_id) != []  # nothing has repaired it yet
    async with server_process(
        backend, workdir / "b.log", extra_env={"SWEEP_INTERVAL_SECONDS": "3600"}
    ):
        await observer.repaired(file_id, deadline=15)
