"""The sweeper: every replica runs one, one at a time across replicas, forever.

It finishes what interrupted builds left and deletes what is no longer needed:

1. builds whose lease expired (the process died, stalled, or lost the database): a
   Create's file becomes FAILED, an Add's file keeps its previous version and is free
   for the next Add; the intents of both become due;
2. due intents — objects of dead builds, and objects replaced by an Add once no download
   link handed out for them can still be valid: their multipart uploads are aborted and
   their objects deleted, then the intents are forgotten;
3. multipart uploads in the training bucket that no live build accounts for and that are
   older than one lease (a process killed between starting an upload and recording it).

Why a loop and not a job library (procrastinate, pgqueuer): nothing is enqueued. The work
list is the state itself (expired leases, due intents, open uploads), so a sweep that
dies half-way loses nothing and the next one simply does the rest; what the libraries
would add is a schema, a worker and cron schedules with one-minute resolution, while a
crashed build must be repaired well within a minute (lease 30 s + one sweep interval).
One sweeper at a time: a turn leased in PostgreSQL (`leases.job_turn`), tried (never
waited for) each round, renewed while the sweep runs; a replica that freezes mid-sweep
holds the others back one lease at most.

No refusal stops a sweep: an upload that cannot be aborted or an object that cannot be
deleted keeps its intent (the next sweep tries again), is counted in the report and
logged (once per new reason), and the sweep goes on with the rest. A store that refuses
a call outright is also reported by health (`Storage.rejections`). Only a store that
does not answer at all (`Unavailable`, after botocore's retries) ends the sweep early:
every other call would wait for the same retries; the next round starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import failpoints, metrics
from .db import SWEEPER_JOB, Connection, Database
from .errors import ServiceError, Unavailable
from .leases import job_turn
from .storage import DeleteFailed, Storage

log = logging.getLogger("trainingfiles.sweeper")

# Due intents handled per round trip; a sweep goes on until none is left.
_BATCH = 500


@dataclass
class SweepReport:
    """What one sweep did; `swept` False: another replica had the sweeper's turn."""

    swept: bool = False
    failed_builds: list[str] = field(default_factory=list)
    deleted_objects: int = 0
    aborted_uploads: int = 0
    # Storage calls that failed (kept for the next sweep), and the first reason.
    failures: int = 0
    failure: str | None = None

    @property
    def acted(self) -> bool:
        return bool(self.failed_builds or self.deleted_objects or self.aborted_uploads)

    def failed(self, count: int, error: BaseException) -> None:
        self.failures += count
        if self.failure is None:
            self.failure = _reason(error)


def _reason(error: BaseException) -> str:
    if isinstance(error, ServiceError) and type(error) is not ServiceError:
        return error.message
    return f"{type(error).__name__}: {error}"


class Sweeper:
    def __init__(
        self,
        database: Database,
        storage: Storage,
        *,
        interval: float,
        orphan_upload_age: float,
        lease_seconds: float = 30.0,
    ) -> None:
        self.database = database
        self.storage = storage
        self.interval = interval
        self.lease_seconds = lease_seconds  # of the sweeper's turn
        self.orphan_upload_age = timedelta(seconds=orphan_upload_age)
        self.sweeps = 0  # completed sweeps of this process (tests wait on it)
        self._last_failure: str | None = None  # logged once until it changes

    async def sweep(self) -> SweepReport:
        """One sweep, if no other replica is sweeping right now."""
        report = SweepReport()
        async with job_turn(self.database, SWEEPER_JOB, self.lease_seconds) as turn:
            if turn is None:
                metrics.SWEEPS.labels("skipped").inc()
                return report
            await failpoints.reach("sweep.started")
            report.swept = True
            async with self.database.connection() as conn:
                report.failed_builds = [str(i) for i in await self.database.expire_builds(conn)]
                await self._delete_due(conn, report)
                await self._abort_orphan_uploads(conn, report)
        self.sweeps += 1
        metrics.SWEEPS.labels("swept").inc()
        for action, count in (
            ("build_failed", len(report.failed_builds)),
            ("object_deleted", report.deleted_objects),
            ("upload_aborted", report.aborted_uploads),
            ("cleanup_failed", report.failures),
        ):
            if count:
                metrics.SWEEPER_ACTIONS.labels(action).inc(count)
        fields = {
            "failed_builds": report.failed_builds,
            "deleted_objects": report.deleted_objects,
            "aborted_uploads": report.aborted_uploads,
        }
        if report.failures:
            fields |= {"failures": report.failures, "failure": report.failure}
        if report.acted or report.failures:
            log.info("swept", extra={"fields": fields})
        if report.failure != self._last_failure:
            if report.failure is not None:
                log.warning(
                    "the sweep could not remove everything; every sweep tries again",
                    extra={"fields": {"failures": report.failures, "failure": report.failure}},
                )
            else:
                log.info("the sweep removes everything again")
            self._last_failure = report.failure
        return report

    async def _delete_due(self, conn: Connection, report: SweepReport) -> None:
        """Abort the uploads and delete the objects of due intents, then forget them.

        What fails stays due and is skipped for the rest of this sweep; each round asks
        for that many more rows, so what fails never hides what comes after it.
        """
        failed: set[tuple[str, str]] = set()
        while True:
            limit = _BATCH + len(failed)
            intents = await self.database.due_intents(conn, limit)
            fresh = [i for i in intents if (i.bucket, i.object_key) not in failed]
            by_bucket: dict[str, list[str]] = {}
            for intent in fresh:
                if intent.upload_id is not None:
                    try:
                        await self.storage.abort_upload(
                            intent.bucket, intent.object_key, intent.upload_id
                        )
                    except Unavailable:
                        raise
                    except Exception as error:
                        report.failed(1, error)
                        failed.add((intent.bucket, intent.object_key))
                        continue
                    report.aborted_uploads += 1
                by_bucket.setdefault(intent.bucket, []).append(intent.object_key)
            for bucket, keys in by_bucket.items():
                try:
                    await self.storage.delete(bucket, keys)
                    deleted = keys
                except DeleteFailed as error:
                    report.failed(len(error.failures), error)
                    failed.update((bucket, key) for key in error.failures)
                    deleted = [key for key in keys if key not in error.failures]
                except Unavailable:
                    raise
                except Exception as error:
                    report.failed(len(keys), error)
                    failed.update((bucket, key) for key in keys)
                    continue
                if deleted:
                    await self.database.forget_due(conn, bucket, deleted)
                    report.deleted_objects += len(deleted)
            if len(intents) < limit:
                return

    async def _abort_orphan_uploads(self, conn: Connection, report: SweepReport) -> None:
        bucket = self.storage.training_bucket
        # Listed before the live ones are read: an upload started in between is live.
        try:
            uploads = await self.storage.open_uploads(bucket)
        except Unavailable:
            raise
        except Exception as error:
            report.failed(1, error)
            return
        if not uploads:
            return
        live = await self.database.live_uploads(conn, bucket)
        cutoff = datetime.now(UTC) - self.orphan_upload_age
        for upload in uploads:
            if upload.upload_id not in live and upload.initiated < cutoff:
                try:
                    await self.storage.abort_upload(bucket, upload.key, upload.upload_id)
                except Unavailable:
                    raise
                except Exception as error:
                    report.failed(1, error)
                    continue
                report.aborted_uploads += 1

    async def run(self) -> None:
        """Sweep now, then every `interval` seconds; failures wait for the next round."""
        while True:
            try:
                await self.sweep()
            except Unavailable:
                metrics.SWEEPS.labels("unavailable").inc()
                log.warning("sweep skipped: the database or storage is unavailable")
            except Exception:
                metrics.SWEEPS.labels("failed").inc()
                log.exception("sweep failed")
            await asyncio.sleep(self.interval)


@contextlib.asynccontextmanager
async def sweeping(sweeper: Sweeper) -> AsyncIterator[Sweeper]:
    """Run the sweeper in the background while the block runs."""
    task = asyncio.create_task(sweeper.run(), name="sweeper")
    try:
        yield sweeper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
