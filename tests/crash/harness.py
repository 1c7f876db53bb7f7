"""The crash harness: server processes killed, frozen and restarted, and the invariants.

Shared by the crash suite (`tests/crash/test_crash.py`, part of `make test`) and `make
chaos` (`python -m tests.crash.chaos`, 100+ scenarios with database and storage stalls).

A scenario starts the server as its own process with a failpoint armed
(`trainingfiles_server.failpoints`), runs a Create or an Add through gRPC until the
process dies there, starts a fresh process on the same database and store, and waits
(bounded) for the invariants to hold for the file the build was working on:

* no PROCESSING row without a live lease, and no lease left on the row;
* no object under the file's prefix that no kept version references, other than pruned
  objects kept for a download link still within its lifetime;
* every object the row references exists, with the size the row says;
* no open multipart upload under the file's prefix, and no intent of a dead build;
* no call answered INTERNAL (the server's log has no "unhandled error").

Then it checks what the caller cares about: a failed Create's name can be used again, an
Add's file is on a complete version (the previous one, or the new one if the kill came
after the commit) whose JSONL has as many lines as the row has pairs, and the next Add
works. Every process the harness starts is stopped by it (by pid), also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import orjson
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_JWT_SECRET, authorized_channel
from tests.e2e.helpers import http_get
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.embedded import free_port
from trainingfiles_dev.generator import GeneratedConversation
from trainingfiles_server.storage import Storage

# Short leases and frequent sweeps, so a scenario is repaired in seconds.
LEASE_SECONDS = 2.0
SWEEP_INTERVAL_SECONDS = 0.5
# Conversations are padded to ~400 KiB, so a Create of 30 writes ~12 MiB per object:
# several 5 MiB parts, with multipart uploads open for most of the build.
PADDING_PER_CONVERSATION = 400 * 1024
# Generous for a loaded machine: repairs take a few seconds (docs/chaos.md); the promise
# is within a minute.
REPAIR_DEADLINE = 30.0
PAGE_TOKEN_SECRET = "crash-suite-page-token-secret-0123456789abcdef"

CREATE_POINTS = (
    "build.leased",
    "build.upload_started",
    "build.upload_recorded",
    "build.fetched:1",
    "build.fetched:20",
    "build.uploaded",
    "build.committed",
)
ADD_POINTS = (
    "build.leased",
    "build.upload_recorded",
    "build.fetched:5",
    "build.uploaded",
    "build.committed",
)
# An export fetches no document: it renders the stored JSONL, then uploads and commits.
EXPORT_POINTS = ("build.leased", "build.uploaded", "build.committed")
# A Remove neither: it streams the stored JSONL into every output, then commits.
REMOVE_POINTS = ("build.leased", "build.upload_recorded", "build.uploaded", "build.committed")
# A Refresh fetches the stale documents first, then does what a Remove does.
REFRESH_POINTS = ("build.leased", "build.fetched:1", "build.uploaded", "build.committed")


@dataclass(frozen=True)
class Backend:
    """Where the server processes store things, and how to reach them from outside."""

    database_url: str
    s3_endpoint_url: str
    access_key: str
    secret_key: str
    postgres_pid: int | None = None  # for stalls (SIGSTOP/SIGCONT of the whole tree)
    seaweed_pid: int | None = None

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
        }


class ServerProcess:
    """`python -m trainingfiles_server` on a free port, as production runs it."""

    def __init__(
        self,
        backend: Backend,
        log_path: Path,
        *,
        failpoint: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {
            **os.environ,
            **backend.env(),
            "LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "JWT_SECRET": TEST_JWT_SECRET,
            "PAGE_TOKEN_SECRET": PAGE_TOKEN_SECRET,
            "LEASE_SECONDS": str(LEASE_SECONDS),
            "SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL_SECONDS),
            "S3_MAX_ATTEMPTS": "2",
            "FETCH_CONCURRENCY": "4",
            "SHUTDOWN_GRACE_SECONDS": "1",
            "DATABASE_COMMAND_TIMEOUT_SECONDS": "5",
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
            **(extra_env or {}),
        }
        env.pop("TRAININGFILES_FAILPOINT", None)
        if failpoint:
            env["TRAININGFILES_FAILPOINT"] = failpoint
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainingfiles_server"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    async def wait_serving(self, timeout: float = 60) -> ServerProcess:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(timeout):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"server exited with {self.process.returncode}")
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return self
                    await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float = 60) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; resumes a frozen process first."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def frozen(self) -> bool:
        with contextlib.suppress(psutil.NoSuchProcess):
            return bool(psutil.Process(self.process.pid).status() == psutil.STATUS_STOPPED)
        return False


@contextlib.asynccontextmanager
async def server_process(
    backend: Backend, log_path: Path, **kwargs: Any
) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(backend, log_path, **kwargs)
    try:
        yield await server.wait_serving()
    finally:
        server.stop()


def stop_tree(pid: int) -> list[psutil.Process]:
    """SIGSTOP a server we started and all its children; returns them for `resume`."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.suspend()
    return processes


def resume(processes: Sequence[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.resume()


def padded(conversation: GeneratedConversation) -> GeneratedConversation:
    """The conversation with an unknown field in each pair (kept in the output)."""
    assert conversation.document is not None
    document = orjson.loads(conversation.document)
    pairs = document["training_pairs"]
    size = PADDING_PER_CONVERSATION // len(pairs)
    for pair in pairs:
        pair["x_padding"] = f"{conversation.conversation_id}:" + "p" * size
    return dataclasses.replace(conversation, document=orjson.dumps(document))


# ----------------------------------------------------------------- the invariants


@dataclass
class Observer:
    """Looks at the database and the bucket from outside the servers."""

    pool: asyncpg.Pool[Any]
    storage: Storage

    async def problems(self, file_id: uuid.UUID) -> list[str]:
        """Every invariant the file and its objects break right now."""
        found: list[str] = []
        row = await self.pool.fetchrow(
            "SELECT status, json_file_path, jsonl_file_path, json_file_size, "
            "jsonl_file_size, lease_token FROM training_files WHERE id = $1",
            file_id,
        )
        if row is None:
            return [f"no row for {file_id}"]
        if row["status"] == "processing":
            found.append("the file is still PROCESSING")
        if row["lease_token"] is not None:
            found.append("the file still has a lease")
        bucket = self.storage.training_bucket
        listed = await self.storage.client.list_objects_v2(Bucket=bucket, Prefix=f"{file_id}/")
        sizes = {item["Key"]: item["Size"] for item in listed.get("Contents", [])}
        referenced: dict[str, int] = {}
        checksums: dict[str, str] = {}
        if row["status"] in ("active", "archived"):
            # Every version whose objects are kept (not pruned) references them.
            outputs = await self.pool.fetch(
                "SELECT o.format, o.object_key, o.size_bytes, o.sha256, "
                "o.version = f.version AS current "
                "FROM training_file_outputs o "
                "JOIN training_files f ON f.id = o.training_file_id "
                "JOIN training_file_versions v "
                "  ON v.training_file_id = o.training_file_id AND v.version = o.version "
                "WHERE o.training_file_id = $1 AND v.pruned_at IS NULL",
                file_id,
            )
            referenced = {o["object_key"]: o["size_bytes"] for o in outputs}
            checksums = {o["object_key"]: o["sha256"] for o in outputs}
            v4 = {o["format"]: (o["object_key"], o["size_bytes"]) for o in outputs if o["current"]}
            if v4.get("v4_json") != (row["json_file_path"], row["json_file_size"]) or v4.get(
                "v4_jsonl"
            ) != (row["jsonl_file_path"], row["jsonl_file_size"]):
                found.append("the file's v4 columns and its v4 output rows disagree")
            if "dataset_card" not in v4:
                found.append("the version has no dataset card")
        retained = {
            r["object_key"]
            for r in await self.pool.fetch(
                "SELECT object_key FROM storage_intents WHERE training_file_id = $1 "
                "AND lease_token IS NULL AND delete_after > now()",
                file_id,
            )
        }
        for key in sorted(set(sizes) - set(referenced) - retained):
            found.append(f"object {key} is referenced by nothing")
        for key, size in referenced.items():
            if key not in sizes:
                found.append(f"the row points at missing object {key}")
            elif sizes[key] != size:
                found.append(f"object {key} is {sizes[key]} bytes, the row says {size}")
            elif checksums[key] != await self.storage.sha256(bucket, key):
                found.append(f"object {key} does not have the checksum its row says")
        uploads = [
            u for u in await self.storage.open_uploads(bucket) if u.key.startswith(f"{file_id}/")
        ]
        if uploads:
            found.append(f"{len(uploads)} multipart upload(s) still open")
        dead = await self.pool.fetchval(
            "SELECT count(*) FROM storage_intents WHERE training_file_id = $1 "
            "AND (lease_token IS NOT NULL OR delete_after <= now())",
            file_id,
        )
        if dead:
            found.append(f"{dead} intent(s) of a dead build or overdue")
        staged = await self.staged(file_id)
        if staged and row["lease_token"] is None:
            found.append(f"{staged} staged member row(s) of a dead build")
        return found

    async def staged(self, file_id: uuid.UUID) -> int:
        """The file's rows in `staged_members` (a build's, until it commits or fails)."""
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM staged_members WHERE training_file_id = $1", file_id
        )
        return count

    async def repaired(self, file_id: uuid.UUID, deadline: float = REPAIR_DEADLINE) -> float:
        """Wait until no invariant is broken; returns when (`time.monotonic`), or raises."""
        started = time.monotonic()
        while True:
            problems = await self.problems(file_id)
            if not problems:
                return time.monotonic()
            if time.monotonic() - started > deadline:
                raise InvariantViolation(problems)
            await asyncio.sleep(0.1)

    async def file_id_by_name(self, name: str) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.pool.fetchval(
            "SELECT id FROM training_files WHERE name = $1 ORDER BY created_at DESC LIMIT 1",
            name,
        )
        return found


def unhandled_errors(log: Path) -> list[str]:
    """Calls a server answered INTERNAL (an exception the service did not expect): the
    last line of each traceback. Database and storage failures must never be among them."""
    found = []
    for line in log.read_bytes().splitlines():
        if b'"unhandled error"' in line:
            record = orjson.loads(line)
            found.append("INTERNAL: " + str(record.get("exc", "")).strip().splitlines()[-1])
    return found


class InvariantViolation(AssertionError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# ----------------------------------------------------------------- scenarios


@dataclass
class Outcome:
    """What happened in one scenario, for the assertions and the chaos table."""

    operation: str
    fault: str
    file_id: uuid.UUID | None = None
    died: bool = False
    call_code: str = ""
    final_status: str = ""
    version: int = 0
    # From the dying process's exit to the invariants holding (restart included).
    repair_seconds: float = 0.0
    exited_at: float = 0.0
    # Rows the dead build had staged (`staged_members`), seen before the restart.
    staged_at_death: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def _drive(stub: Any, call: Any) -> tuple[str, str]:
    """Read a Create/Add stream to its end: (training_file_id, status code name)."""
    file_id = ""
    try:
        async for message in call:
            file_id = message.training_file_id or file_id
        return file_id, "OK"
    except grpc.aio.AioRpcError as error:
        return file_id, error.code().name


async def run_create(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    ids: Sequence[str],
    fault: str,
    stall: str | None = None,
    formats: Sequence[int] = (),
) -> Outcome:
    """A Create killed (or frozen, stalled) at `fault`, then a restart and the checks."""
    outcome = Outcome("create", fault + (f" + {stall} stall" if stall else ""))
    name = f"crash-{uuid.uuid4().hex[:12]}"
    log = workdir / f"{name}.log"
    request = service_pb2.CreateTrainingFileRequest(
        name=name,
        conversation_ids=list(ids),
        formats=list(formats),  # type: ignore[arg-type]
    )
    await _until_it_dies(
        backend,
        log,
        fault,
        stall,
        token,
        outcome,
        lambda stub: stub.CreateTrainingFile(request, timeout=60),
    )
    outcome.file_id = await observer.file_id_by_name(name)
    if outcome.file_id is None:
        return outcome  # killed before the row was written: nothing to repair
    outcome.staged_at_death = await observer.staged(outcome.file_id)
    async with _restarted(backend, observer, log, token, outcome) as found:
        if found is not None and found[1].status != resources_pb2.TRAINING_FILE_STATUS_ACTIVE:
            # The name is free again: a Create with it succeeds.
            stub = found[0]
            again = service_pb2.CreateTrainingFileRequest(name=name, conversation_ids=ids[:1])
            _, code = await _drive(stub, stub.CreateTrainingFile(again, timeout=60))
            if code != "OK":
                outcome.problems.append(f"the name is not reusable: {code}")
    return outcome


async def run_add(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    base_file_id: str,
    ids: Sequence[str],
    fault: str,
    stall: str | None = None,
) -> Outcome:
    """An Add killed at `fault`: afterwards the file is on a complete version (and the
    Add renders the file's trainer formats again, if it has any)."""
    outcome = Outcome("add", fault + (f" + {stall} stall" if stall else ""))
    outcome.file_id = uuid.UUID(base_file_id)
    before = await observer.pool.fetchval(
        "SELECT version FROM training_files WHERE id = $1", outcome.file_id
    )
    log = workdir / f"add-{base_file_id}.log"
    request = service_pb2.AddConversationsRequest(
        training_file_id=base_file_id, conversation_ids=list(ids)
    )
    await _until_it_dies(
        backend,
        log,
        fault,
        stall,
        token,
        outcome,
        lambda stub: stub.AddConversations(request, timeout=60),
    )
    outcome.staged_at_death = await observer.staged(outcome.file_id)
    async with _restarted(backend, observer, log, token, outcome) as found:
        if found is not None:
            stub, record = found
            if record.version not in (before, before + 1):
                outcome.problems.append(f"version {record.version}, expected {before}(+1)")
            # The file is free for the next Add (the dead one's lease does not block it).
            members = await stub.ListTrainingFileConversations(
                service_pb2.ListTrainingFileConversationsRequest(
                    training_file_id=base_file_id, page_size=1000
                )
            )
            if len(members.conversations) != record.conversation_count:
                outcome.problems.append("membership and conversation_count disagree")
    return outcome


async def run_export(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    base_file_id: str,
    formats: Sequence[int],
    fault: str,
    stall: str | None = None,
) -> Outcome:
    """An export killed at `fault`: afterwards the file has its outputs of before, or
    those and the exported ones, each complete; its version never changes."""
    outcome = Outcome("export", fault)
    outcome.file_id = uuid.UUID(base_file_id)
    before = await observer.pool.fetchval(
        "SELECT version FROM training_files WHERE id = $1", outcome.file_id
    )
    log = workdir / f"export-{base_file_id}.log"
    request = service_pb2.ExportTrainingFileRequest(
        training_file_id=base_file_id,
        formats=list(formats),  # type: ignore[arg-type]
    )
    await _until_it_dies(
        backend,
        log,
        fault,
        stall,
        token,
        outcome,
        lambda stub: stub.ExportTrainingFile(request, timeout=60),
    )
    async with _restarted(backend, observer, log, token, outcome) as found:
        if found is not None and found[1].version != before:
            outcome.problems.append(f"version {found[1].version}, expected {before}")
    return outcome


async def run_remove(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    base_file_id: str,
    ids: Sequence[str],
    fault: str,
    stall: str | None = None,
) -> Outcome:
    """A Remove killed at `fault`: afterwards the file is on a complete version, the one
    before (every member still there) or the new one (none of `ids` left), and free."""
    outcome = Outcome("remove", fault)
    outcome.file_id = uuid.UUID(base_file_id)
    before = await observer.pool.fetchval(
        "SELECT version FROM training_files WHERE id = $1", outcome.file_id
    )
    log = workdir / f"remove-{base_file_id}.log"
    request = service_pb2.RemoveConversationsRequest(
        training_file_id=base_file_id, conversation_ids=list(ids)
    )
    await _until_it_dies(
        backend,
        log,
        fault,
        stall,
        token,
        outcome,
        lambda stub: stub.RemoveConversations(request, timeout=60),
    )
    async with _restarted(backend, observer, log, token, outcome) as found:
        if found is not None:
            stub, record = found
            members = await stub.ListTrainingFileConversations(
                service_pb2.ListTrainingFileConversationsRequest(
                    training_file_id=base_file_id, page_size=1000
                )
            )
            left = {m.conversation_id for m in members.conversations} & set(ids)
            if record.version == before and len(left) != len(ids):
                outcome.problems.append("the version before lost members")
            elif record.version == before + 1 and left:
                outcome.problems.append("the new version still has removed members")
            elif record.version not in (before, before + 1):
                outcome.problems.append(f"version {record.version}, expected {before}(+1)")
            if len(members.conversations) != record.conversation_count:
                outcome.problems.append("membership and conversation_count disagree")
    return outcome


async def run_refresh(
    backend: Backend,
    observer: Observer,
    workdir: Path,
    token: str,
    base_file_id: str,
    fault: str,
    stall: str | None = None,
) -> Outcome:
    """A Refresh killed at `fault`: afterwards the file is on a complete version, the one
    before (still stale) or the refreshed one (stale no more), and free."""
    outcome = Outcome("refresh", fault)
    outcome.file_id = uuid.UUID(base_file_id)
    before = await observer.pool.fetchval(
        "SELECT version FROM training_files WHERE id = $1", outcome.file_id
    )
    log = workdir / f"refresh-{base_file_id}.log"
    request = service_pb2.RefreshTrainingFileRequest(training_file_id=base_file_id)
    await _until_it_dies(
        backend,
        log,
        fault,
        stall,
        token,
        outcome,
        lambda stub: stub.RefreshTrainingFile(request, timeout=60),
    )
    async with _restarted(backend, observer, log, token, outcome) as found:
        if found is not None:
            _, record = found
            stale = await observer.pool.fetchval(
                "SELECT count(*) FROM training_file_conversations WHERE training_file_id = $1 "
                "AND removed_in_version IS NULL AND stale_since IS NOT NULL",
                outcome.file_id,
            )
            if record.version == before and not stale:
                outcome.problems.append("the version before is no longer stale")
            elif record.version == before + 1 and stale:
                outcome.problems.append("the refreshed version is still stale")
            elif record.version not in (before, before + 1):
                outcome.problems.append(f"version {record.version}, expected {before}(+1)")
    return outcome


async def _until_it_dies(
    backend: Backend,
    log: Path,
    fault: str,
    stall: str | None,
    token: str,
    outcome: Outcome,
    start: Callable[[Any], Any],
) -> None:
    """Run the call `start(stub)` on a server armed with `fault` until it ends; the
    server is then dead (by the failpoint) or killed."""
    async with server_process(backend, log, failpoint=fault) as dying:
        async with authorized_channel(dying.port, token) as channel:
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            async with _stalled(backend, stall):
                _, outcome.call_code = await _drive(stub, start(stub))
        # A call that ended OK on a live server never reached its failpoint: the kill
        # below is the harness's, and the scenario did not happen.
        reached = not (dying.process.poll() is None and outcome.call_code == "OK")
        if dying.process.poll() is None:
            dying.process.kill()
        outcome.died = await dying.wait_exit() == -signal.SIGKILL and reached
        outcome.exited_at = time.monotonic()


@contextlib.asynccontextmanager
async def _restarted(
    backend: Backend, observer: Observer, log: Path, token: str, outcome: Outcome
) -> AsyncIterator[tuple[Any, Any] | None]:
    """A fresh server; once the invariants hold, a stub and the file as it sees it
    (None if they never held: `outcome.problems` says why)."""
    assert outcome.file_id is not None
    async with server_process(backend, log) as restarted:
        try:
            outcome.repair_seconds = await observer.repaired(outcome.file_id) - outcome.exited_at
        except InvariantViolation as violation:
            outcome.problems = violation.problems + unhandled_errors(log)
            yield None
            return
        outcome.problems = unhandled_errors(log)
        async with authorized_channel(restarted.port, token) as channel:
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            record = await stub.GetTrainingFile(
                service_pb2.GetTrainingFileRequest(training_file_id=str(outcome.file_id))
            )
            outcome.final_status = resources_pb2.TrainingFileStatus.Name(record.status)
            outcome.version = record.version
            outcome.problems += await _content_problems(stub, record)
            yield stub, record


async def _content_problems(stub: Any, record: Any) -> list[str]:
    """An active file's JSONL has one line per pair and the size the row says."""
    if record.status != resources_pb2.TRAINING_FILE_STATUS_ACTIVE:
        return []
    reply = await stub.GetDownloadUrl(
        service_pb2.GetDownloadUrlRequest(
            training_file_id=record.id, format=resources_pb2.FILE_FORMAT_JSONL
        )
    )
    body = (await http_get(reply.url)).body
    problems = []
    if len(body) != record.jsonl_file_size:
        problems.append(f"JSONL is {len(body)} bytes, the row says {record.jsonl_file_size}")
    if body.count(b"\n") != record.total_training_pairs:
        problems.append("JSONL lines and total_training_pairs disagree")
    return problems


@contextlib.asynccontextmanager
async def _stalled(backend: Backend, stall: str | None) -> AsyncIterator[None]:
    """Freeze the database or the store for a while during the block (chaos only)."""
    if stall is None:
        yield
        return
    pid = backend.postgres_pid if stall == "postgres" else backend.seaweed_pid
    assert pid is not None, f"no process to stall for {stall}"

    async def freeze() -> None:
        await asyncio.sleep(0.2)
        processes = stop_tree(pid)
        try:
            await asyncio.sleep(LEASE_SECONDS * 1.5)
        finally:
            resume(processes)

    task = asyncio.create_task(freeze())
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
