"""Leases of builds in progress, and the queue of Adds waiting for a file.

A build (a Create or an Add) holds a lease on its file: a token and an expiry in the
file's row, renewed every third of its length while the build runs — also while it waits
on storage, because renewal runs in its own task. Every state change of the build is
conditional on the lease (`db.py`: `ACTIVATE_FILE`, `RECORD_UPLOAD`, `MARK_FAILED`); a
lease that expired is never renewed, so once the sweeper may act on it the build can
only give up. Adds on one file wait for each other without holding a database
connection: in this process in arrival order (`FileQueue`), across replicas by retrying
the claim with a growing pause.

Background jobs (the sweeper, the refresher) take turns across replicas the same way: a
lease on a row of `job_leases` (`job_turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Self, TypeVar
from uuid import UUID

from . import metrics
from .db import Database
from .errors import Aborted, Unavailable

log = logging.getLogger("trainingfiles.leases")

# Pauses between claims of a file another replica's build holds.
_FIRST_PAUSE, _MAX_PAUSE = 0.05, 1.0
_T = TypeVar("_T")


def lease_lost(file_id: UUID) -> Aborted:
    return Aborted(
        f"the build of training file {file_id} lost its lease (it stalled, or the database "
        "was unreachable, for longer than the lease); nothing was changed, retry the call",
        reason="LEASE_LOST",
    )


class _Renewed:
    """A lease renewed every third of its length, in a task of its own, while the block
    runs; `lost` once a renewal finds it expired or taken over (never renewed again)."""

    def __init__(self, seconds: float, name: str, holder: str) -> None:
        self.seconds = seconds
        self.lost = False
        self._name = name
        self._holder = holder  # its metrics label
        self._task: asyncio.Task[None] | None = None

    async def _renew_once(self) -> bool:
        raise NotImplementedError

    def _fields(self) -> dict[str, object]:
        raise NotImplementedError

    def _lose(self) -> None:
        self.lost = True
        metrics.LEASES_LOST.labels(self._holder).inc()
        log.warning("lease lost", extra={"fields": self._fields()})

    async def _renew(self) -> None:
        pause = self.seconds / 3
        while True:
            await asyncio.sleep(pause)
            try:
                if not await self._renew_once():
                    self._lose()
                    return
                pause = self.seconds / 3
            except Unavailable:
                pause = min(1.0, self.seconds / 10)  # try again soon: the lease runs out
            except Exception:
                log.exception("lease renewal failed")
                pause = min(1.0, self.seconds / 10)

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[Self]:
        self._task = asyncio.create_task(self._renew(), name=self._name)
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Lease(_Renewed):
    """A build's lease on its file."""

    def __init__(self, database: Database, file_id: UUID, token: UUID, seconds: float) -> None:
        super().__init__(seconds, f"lease {file_id}", "build")
        self.database = database
        self.file_id = file_id
        self.token = token

    def check(self) -> None:
        """Raise `Aborted` if the lease is lost: the build must stop and clean up."""
        if self.lost:
            raise lease_lost(self.file_id)

    async def _renew_once(self) -> bool:
        return await self.database.renew_lease(self.file_id, self.token, self.seconds)

    def _fields(self) -> dict[str, object]:
        return {"training_file_id": str(self.file_id)}


class JobLease(_Renewed):
    """One replica's turn at a background job (`db.SWEEPER_JOB`, `db.REFRESHER_JOB`).

    A replica that freezes while it holds the turn (SIGSTOP, a paused VM, a long pause)
    stops renewing it, so another replica takes it one lease later. If the frozen one
    resumes, its renewal finds the lease lost and its round finishes alongside the other
    replica's: each step of a sweep or a refresh is conditional on the state it changes
    (a build's lease, an intent still due, an upload no live build accounts for), so two
    at once only repeat work, and one at a time is what the lease buys.
    """

    def __init__(self, database: Database, job: str, holder: UUID, seconds: float) -> None:
        super().__init__(seconds, f"{job} turn", job)
        self.database = database
        self.job = job
        self.holder = holder

    async def _renew_once(self) -> bool:
        return await self.database.renew_job_lease(self.job, self.holder, self.seconds)

    def _fields(self) -> dict[str, object]:
        return {"job": self.job}


@contextlib.asynccontextmanager
async def job_turn(database: Database, job: str, seconds: float) -> AsyncIterator[JobLease | None]:
    """This replica's turn at `job`, kept while the block runs; None while another
    replica holds it (tried, never waited for)."""
    holder = uuid.uuid4()
    if not await database.take_job_lease(job, holder, seconds):
        yield None
        return
    lease = JobLease(database, job, holder, seconds)
    try:
        async with lease.kept():
            yield lease
    finally:
        # If this fails, the turn runs out by itself one lease later.
        with contextlib.suppress(Exception):
            if not await database.drop_job_lease(job, holder) and not lease.lost:
                # Lost before a renewal noticed: this process stalled for a lease.
                lease._lose()


class FileQueue:
    """Adds of one file in this process, one at a time in arrival order.

    Waiting here costs no database connection; the entry disappears with its last user.
    """

    def __init__(self) -> None:
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, file_id: UUID) -> AsyncIterator[None]:
        lock, users = self._locks.get(file_id, (asyncio.Lock(), 0))
        self._locks[file_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[file_id]
            if users == 1:
                del self._locks[file_id]
            else:
                self._locks[file_id] = (lock, users - 1)


async def claim_with_retry(claim: Callable[[], Awaitable[_T | None]]) -> _T:
    """Call `claim` until it answers, pausing longer each time (the call's deadline ends it)."""
    pause = _FIRST_PAUSE
    while (claimed := await claim()) is None:
        await asyncio.sleep(pause * (0.5 + random.random()))
        pause = min(_MAX_PAUSE, pause * 2)
    return claimed
