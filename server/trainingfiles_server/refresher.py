"""Automatic refresh: files that opted in are refreshed when conversations they hold change.

A trigger on `conversations` records each change of a conversation's enrichment in
`conversation_changes` and notifies `trainingfiles_conversation_changed` (the refresh
migration). Every replica runs a refresher; one at a time across replicas works (a
turn of its own leased in PostgreSQL, `leases.job_turn`, tried, never waited for), like
the sweeper:

1. it wakes on a notification, when a file's back-off or debounce ends, or every
   `SWEEP_INTERVAL_SECONDS` (a notification lost while no replica listened, or while
   the database was away, costs one interval), and at start-up;
2. it asks which files are due (`db.DUE_REFRESHES`): opted in, active, free, with stale
   members, none of which changed within `REFRESH_DEBOUNCE_SECONDS` (a burst of changes,
   such as a re-enrichment run, makes one refresh), and not backing off;
3. it refreshes each, as RefreshTrainingFile would (a new version, reason REFRESHED);
   stale members that are no longer eligible fail the refresh, which the file shows.

Why a loop and not a job library: as for the sweeper, the work list is the state
(stale members of opted-in files), so nothing is enqueued and nothing is lost by a
restart between a change and its refresh; the change table is only the record of when
each conversation last changed, which staleness and the debounce read. A failed refresh
is counted on the file (`refresh_attempts`, `refresh_error`) and tried again after a
back-off (`refresh_after`: 2^attempts × REFRESH_RETRY_SECONDS, at most an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from uuid import UUID

from . import metrics
from .builds import Builds
from .config import Settings
from .db import REFRESHER_JOB, Database
from .errors import ServiceError, Unavailable
from .leases import job_turn
from .models import Caller

log = logging.getLogger("trainingfiles.refresher")

CHANNEL = "trainingfiles_conversation_changed"
_MAX_BACKOFF_SECONDS = 3600.0
_SYSTEM = Caller("service_role", None)


class Refresher:
    def __init__(self, settings: Settings, database: Database, builds: Builds) -> None:
        self.database = database
        self.builds = builds
        self.interval = settings.sweep_interval_seconds
        self.debounce = settings.refresh_debounce_seconds
        self.retry = settings.refresh_retry_seconds
        self.lease_seconds = settings.lease_seconds  # of the refresher's turn
        self.rounds = 0  # completed rounds of this process (tests wait on it)
        self.refreshed: list[UUID] = []  # files this process refreshed, in order
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def refresh_due(self) -> list[UUID]:
        """Refresh every file due now, if no other replica is; returns those refreshed."""
        refreshed: list[UUID] = []
        async with job_turn(self.database, REFRESHER_JOB, self.lease_seconds) as turn:
            if turn is None:
                return refreshed
            for file_id in await self.database.due_refreshes(self.debounce):
                if await self._refresh(file_id):
                    refreshed.append(file_id)
        self.rounds += 1
        self.refreshed.extend(refreshed)
        return refreshed

    async def _refresh(self, file_id: UUID) -> bool:
        fields: dict[str, object] = {"training_file_id": str(file_id)}
        try:
            result = None
            events = self.builds.refresh(_SYSTEM, str(file_id))
            async with contextlib.aclosing(events):
                async for event in events:
                    result = event.training_file or result
        except Unavailable:
            raise  # the round ends; the file is tried again next round, not counted
        except Exception as error:
            reason = (
                error.message
                if isinstance(error, ServiceError) and type(error) is not ServiceError
                else "internal error"
            )
            metrics.REFRESHES.labels("failed").inc()
            retry_in = await self.database.refresh_failed(
                file_id, reason, self.retry, _MAX_BACKOFF_SECONDS
            )
            log.warning(
                "automatic refresh failed; it is tried again later",
                exc_info=None if isinstance(error, ServiceError) else error,
                extra={"fields": {**fields, "reason": reason, "retry_in": retry_in}},
            )
            return False
        await self.database.refresh_succeeded(file_id)
        metrics.REFRESHES.labels("refreshed").inc()
        if result is not None:
            fields["version"] = result.version
        log.info("refreshed automatically", extra={"fields": fields})
        return True

    async def run(self) -> None:
        """Refresh what is due now, then whenever woken (debounced) or every interval."""
        while True:
            try:
                await self.refresh_due()
            except Unavailable:
                log.warning("refresh skipped: the database or storage is unavailable")
            except Exception:
                log.exception("refresh round failed")
            woken = False
            wait = self.interval
            with contextlib.suppress(Exception):  # the interval, if the database is away
                later = await self.database.next_refresh_check(self.debounce)
                if later is not None:  # up again when a back-off or a debounce ends
                    wait = min(wait, max(later, 0) + 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    woken = await self._wake.wait()
            if woken:
                # Let the burst settle: changes newer than the debounce keep their files
                # from being due; notifications meanwhile come back here at once.
                self._wake.clear()
                await asyncio.sleep(self.debounce)


@contextlib.asynccontextmanager
async def refreshing(refresher: Refresher) -> AsyncIterator[Refresher]:
    """Run the refresher in the background while the block runs, woken by notifications."""

    async def listen_and_run() -> None:
        while True:
            try:
                async with refresher.database.listening(CHANNEL, refresher.wake):
                    await refresher.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The listening connection failed: run on the interval until it is back.
                log.warning("cannot listen for conversation changes; retrying")
                await asyncio.sleep(refresher.interval)

    task = asyncio.create_task(listen_and_run(), name="refresher")
    try:
        yield refresher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
