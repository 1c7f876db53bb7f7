"""Leases of builds in progress, and the queue of Adds waiting for a file.

A build (a Create or an Add) holds a lease on its file: a token and an expiry in the
file's row, renewed every third of its length while the build runs — also while it waits
on storage, because renewal runs in its own task. Every state change of the build is
conditional on the lease (`db.py`: `ACTIVATE_FILE`, `RECORD_UPLOAD`, `MARK_FAILED`); a
lease that expired is never renewed, so once the sweeper may act on it the build can
only give up. Adds on one file wait for each other without holding a database
connection: in this process in arrival order (`FileQueue`), across replicas by retrying
the claim with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from uuid import UUID

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


class Lease:
    """A build's lease, renewed in the background while the block runs."""

    def __init__(self, database: Database, file_id: UUID, token: UUID, seconds: float) -> None:
        self.database = database
        self.file_id = file_id
        self.token = token
        self.seconds = seconds
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raise `Aborted` if the lease is lost: the build must stop and clean up."""
        if self.lost:
            raise lease_lost(self.file_id)

    async def _renew(self) -> None:
        pause = self.seconds / 3
        while True:
            await asyncio.sleep(pause)
            try:
                if not await self.database.renew_lease(self.file_id, self.token, self.seconds):
                    self.lost = True
                    log.warning(
                        "lease lost", extra={"fields": {"training_file_id": str(self.file_id)}}
                    )
                    return
                pause = self.seconds / 3
            except Unavailable:
                pause = min(1.0, self.seconds / 10)  # try again soon: the lease runs out
            except Exception:
                log.exception("lease renewal failed")
                pause = min(1.0, self.seconds / 10)

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[Lease]:
        self._task = asyncio.create_task(self._renew(), name=f"lease {self.file_id}")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


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
