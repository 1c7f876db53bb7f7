"""The builds: Create and Add, one pipeline from validation to the commit.

Create and Add are async generators of `Progress`. Their shape:

    validate (one query) ─► record intent ─► fetch ∥ transform ─► aggregate ─► upload ─► commit
                                   │                                                       │
                                   └──────────── any failure: delete objects, ◄────────────┘
                                                 mark the file failed / leave it unchanged

Memory does not grow with the number of conversations: each document is parsed,
validated and turned into JSONL lines by one of `fetch_concurrency` workers, and only a
small summary per conversation stays in memory. The lines are written, in add order, to
both objects while later documents are still being fetched: parts of the JSONL and of
the JSON go up as they fill (the JSON's first part last, behind the header that needs
every conversation's metrics). Workers run a bounded distance ahead of the oldest
conversation not yet written, so one slow document holds the others back rather than
letting lines pile up. An Add has the store copy the file's current content
(UploadPartCopy) instead of streaming it through the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from . import aggregate, failpoints
from .aggregate import ConsistencyCheck, ConversationSummary
from .config import Settings
from .db import Database, LeaseLost
from .errors import ResourceExhausted, ServiceError
from .fetching import Targets, fetch_all
from .leases import FileQueue, Lease, claim_with_retry, lease_lost
from .models import Caller, Progress, Stage, Status, TrainingFileRecord
from .outputs import Outputs
from .rules import (
    check_ids,
    check_name,
    ineligible,
    not_active,
    object_keys,
    reject_ineligible,
    uuid_violations,
    visible,
)
from .storage import Storage, UploadHook

log = logging.getLogger("trainingfiles.operations")


@dataclass
class _Build:
    """One Create or Add in progress: what it writes, under which lease, from what."""

    file_id: UUID
    name: str
    bucket: str
    json_key: str
    jsonl_key: str
    moment: datetime
    lease: Lease
    # The status the file must still have at commit ('processing' for a Create).
    from_status: Status
    # An Add: the version it extends, and its conversations' summaries.
    stored: TrainingFileRecord | None = None
    existing: list[ConversationSummary] = field(default_factory=list)
    added_by: UUID | None = None
    result: TrainingFileRecord | None = None
    replaced_due: bool = False

    @property
    def keys(self) -> list[str]:
        return [self.json_key, self.jsonl_key]

    @property
    def replaced_keys(self) -> list[str]:
        if self.stored is None:
            return []
        assert self.stored.json_file_path and self.stored.jsonl_file_path
        return [self.stored.json_file_path, self.stored.jsonl_file_path]


class Builds:
    """Create and Add: one pipeline, with the leases, the cleanup and the shutdown drain."""

    def __init__(self, settings: Settings, database: Database, storage: Storage) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage
        self._queue = FileQueue()
        # Builds running in this process, whose cleanup shutdown waits for (`drain`).
        self._builds = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ----------------------------------------------------------------- create / add

    async def create(
        self,
        caller: Caller,
        name: str,
        description: str | None,
        ids: Sequence[str],
        on_behalf_of: str = "",
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids, self.settings.max_conversations_per_request, check_name(name, description)
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        owner = caller.owner_for(on_behalf_of)
        candidates = await self.database.check_conversations(conversation_ids, None)
        del conversation_ids
        reject_ineligible(ineligible(candidates, owner))
        targets = Targets(candidates)
        del candidates
        # The name is taken by the insert itself: its unique index answers ALREADY_EXISTS.
        file_id = uuid.uuid4()
        moment = datetime.now(UTC)
        json_key, jsonl_key = object_keys(file_id, name, moment)
        token = uuid.uuid4()
        await self.database.insert_processing_file(
            file_id=file_id,
            name=name,
            description=description,
            bucket=self.storage.training_bucket,
            json_key=json_key,
            jsonl_key=jsonl_key,
            created_by=owner,
            lease_token=token,
            lease_seconds=self.settings.lease_seconds,
        )
        build = _Build(
            file_id=file_id,
            name=name,
            bucket=self.storage.training_bucket,
            json_key=json_key,
            jsonl_key=jsonl_key,
            moment=moment,
            lease=self._lease(file_id, token),
            from_status=Status.PROCESSING,
            added_by=caller.user_id,
        )
        with self._tracked():
            async with build.lease.kept():
                try:
                    await failpoints.reach("build.leased")
                    async for event in self._run(build, targets):
                        yield event
                except BaseException as exc:
                    await _shielded(self._abandon(build, exc))
                    raise
        assert build.result is not None
        yield Progress(Stage.SAVING, 0, 0, file_id, training_file=build.result)

    async def add(
        self, caller: Caller, training_file_id: str, ids: Sequence[str]
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids,
            self.settings.max_conversations_per_request,
            uuid_violations(training_file_id, "training_file_id"),
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        file_id = UUID(training_file_id)
        record = visible(caller, await self.database.get_file(file_id), file_id)
        if record.status is not Status.ACTIVE:
            raise not_active(record, "only active files can be extended")
        # Adds of one file run one at a time, in order of arrival in this process; waiting
        # holds no database connection. Across replicas the lease is the lock.
        async with self._queue.turn(file_id):
            token = uuid.uuid4()
            build = await claim_with_retry(lambda: self._claim(caller, record, token))
            with self._tracked():
                async with build.lease.kept():
                    try:
                        await failpoints.reach("build.leased")
                        candidates = await self.database.check_conversations(
                            conversation_ids, file_id
                        )
                        del conversation_ids
                        # Added conversations must belong to the file's owner (any, for a
                        # system file extended by a service), and to a calling user.
                        owner = build.stored.created_by if build.stored else None
                        reject_ineligible(ineligible(candidates, owner or caller.user_id))
                        targets = Targets(candidates)
                        del candidates
                        build.existing = await self.database.file_summaries(file_id)
                        async for event in self._run(build, targets):
                            yield event
                    except BaseException as exc:
                        await _shielded(self._abandon(build, exc))
                        raise
        if build.replaced_due:
            # No link to the replaced objects is outstanding: they can go now (else the
            # sweeper deletes them once the last link has expired).
            await _shielded(self._discard(build.bucket, file_id, build.replaced_keys))
        assert build.result is not None
        yield Progress(Stage.SAVING, 0, 0, file_id, training_file=build.result)

    async def _claim(
        self, caller: Caller, record: TrainingFileRecord, token: UUID
    ) -> _Build | None:
        """The Add's build if it got the file's lease; None while another build holds it.

        `record` (as read before queueing) gives the name and bucket, which never change;
        the claim itself returns the version the build extends.
        """
        file_id = record.id
        moment = datetime.now(UTC)
        json_key, jsonl_key = object_keys(file_id, record.name, moment)
        bucket = record.storage_bucket
        claimed = await self.database.claim_file(
            file_id, token, self.settings.lease_seconds, bucket, [json_key, jsonl_key]
        )
        if claimed is None:
            current = visible(caller, await self.database.get_file(file_id), file_id)
            if current.status is not Status.ACTIVE:
                raise not_active(current, "only active files can be extended")
            return None
        return _Build(
            file_id=file_id,
            name=claimed.name,
            bucket=bucket,
            json_key=json_key,
            jsonl_key=jsonl_key,
            moment=moment,
            lease=self._lease(file_id, token),
            from_status=Status.ACTIVE,
            stored=claimed,
            added_by=caller.user_id,
        )

    async def _run(self, build: _Build, targets: Targets) -> AsyncIterator[Progress]:
        """The build itself, the same for a Create and an Add: fetch, write, commit.

        An Add starts from the file's stored pairs, which the store copies into the new
        objects while the new documents are fetched.
        """
        file_id, stored, total = build.file_id, build.stored, len(targets)
        yield Progress(Stage.VALIDATING, total, total, file_id)
        outputs = Outputs(
            self.storage,
            build.bucket,
            build.json_key,
            build.jsonl_key,
            self.settings.max_object_bytes,
            on_upload=self._upload_recorder(build),
        )
        try:
            if stored is None:
                consistency = ConsistencyCheck()
            else:
                consistency = ConsistencyCheck(stored.vertical, _profile_bytes(stored))
                assert stored.json_file_path and stored.jsonl_file_path
                outputs.append_stored(
                    stored.json_file_path,
                    stored.json_file_size,
                    stored.jsonl_file_path,
                    stored.jsonl_file_size,
                )
            added = aggregate.Summaries()
            async for event in fetch_all(
                self.settings,
                self.storage,
                file_id,
                targets,
                outputs,
                consistency,
                added,
                build.lease,
            ):
                yield event
            metrics = aggregate.summarize([*build.existing, *added])
            assert consistency.vertical is not None and consistency.consultant_profile is not None
            header = aggregate.json_header(
                build.name,
                build.moment,
                consistency.vertical,
                metrics,
                consistency.consultant_profile,
            )
            yield Progress(Stage.AGGREGATING, total, total, file_id)
            jsonl_size = outputs.jsonl_size
            json_size = self._check_sizes(header, jsonl_size)
            yield Progress(Stage.UPLOADING, 0, 0, file_id)
            build.lease.check()
            await self._finish(outputs, header, json_size, jsonl_size)
        except BaseException:
            await _shielded(outputs.abort())
            raise
        await failpoints.reach("build.uploaded")
        yield Progress(Stage.SAVING, 0, 0, file_id)
        build.lease.check()
        try:
            build.result, build.replaced_due = await self.database.activate(
                file_id=file_id,
                lease_token=build.lease.token,
                from_status=build.from_status,
                bucket=build.bucket,
                json_key=build.json_key,
                jsonl_key=build.jsonl_key,
                json_size=json_size,
                jsonl_size=jsonl_size,
                metrics=metrics,
                vertical=consistency.vertical,
                consultant_profile=consistency.consultant_profile,
                new_conversations=list(added),
                first_position=len(build.existing),
                added_by=build.added_by,
                replaced_keys=build.replaced_keys,
            )
        except LeaseLost:
            raise await self._why_not_committed(build) from None
        await failpoints.reach("build.committed")

    async def _why_not_committed(self, build: _Build) -> ServiceError:
        """The commit found the lease gone: the file was archived meanwhile, or it expired."""
        current = await self.database.get_file(build.file_id)
        if build.stored is not None and current is not None and current.status is not Status.ACTIVE:
            return not_active(current, "it was archived while conversations were being added")
        return lease_lost(build.file_id)

    def _upload_recorder(self, build: _Build) -> UploadHook:
        async def record(key: str, upload_id: str) -> None:
            await failpoints.reach("build.upload_started")
            try:
                await self.database.record_upload(build.bucket, key, upload_id, build.lease.token)
            except LeaseLost:
                raise lease_lost(build.file_id) from None
            await failpoints.reach("build.upload_recorded")

        return record

    def _lease(self, file_id: UUID, token: UUID) -> Lease:
        return Lease(self.database, file_id, token, self.settings.lease_seconds)

    async def _abandon(self, build: _Build, exc: BaseException) -> None:
        """Give the file back as it was and remove what the build stored.

        A Create's file becomes FAILED with the reason; an Add's file keeps its version and
        is free for the next Add. Each step is independent, so storage being down does not
        keep the file from being released (storage calls give up after their retries),
        nor the database the objects from going. What does not finish here, the sweeper
        finishes once the lease has expired.
        """
        reason = _failure_reason(exc)
        fields = {"training_file_id": str(build.file_id), "reason": reason}
        # Objects first: whoever sees the file FAILED (or free again) sees it clean.
        await self._discard(build.bucket, build.file_id, build.keys)
        try:
            if build.stored is None:
                await self.database.mark_failed(build.file_id, build.lease.token, reason)
            else:
                await self.database.release_lease(build.file_id, build.lease.token)
        except Exception as error:
            log.warning(
                "could not release the file",
                exc_info=_unexpected(error),
                extra={"fields": {**fields, "error": _failure_reason(error)}},
            )
        log.info("build failed", extra={"fields": fields})

    async def _discard(self, bucket: str, file_id: UUID, keys: list[str]) -> None:
        """Delete objects. They are handed to the sweeper first, in case this stops half-way."""
        try:
            await self.database.condemn(bucket, file_id, keys)
            await self.storage.delete(bucket, keys)
            await self.database.clear_intents(bucket, keys)
        except Exception as error:
            log.warning(
                "could not delete objects; the sweeper will",
                exc_info=_unexpected(error),
                extra={"fields": {"keys": keys, "error": _failure_reason(error)}},
            )

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        self._builds += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._builds -= 1
            if not self._builds:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until every build of this process has cleaned up."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning(
                "builds still cleaning up at shutdown; the sweeper will finish them",
                extra={"fields": {"builds": self._builds}},
            )
            return False
        return True

    def _check_sizes(self, header: bytes, jsonl_size: int) -> int:
        json_size = aggregate.json_size(header, jsonl_size)
        limit = self.settings.max_object_bytes
        if max(json_size, jsonl_size) > limit:
            raise ResourceExhausted(
                f"the training file would be {max(json_size, jsonl_size)} bytes, above the "
                f"per-object limit of {limit} bytes",
                "max_object_bytes",
                reason="OBJECT_TOO_LARGE",
            )
        return json_size

    async def _finish(
        self, outputs: Outputs, header: bytes, json_size: int, jsonl_size: int
    ) -> None:
        """Store both objects; what was stored must be what the metadata will say."""
        stored_json, stored_jsonl = await outputs.close(header)
        if (stored_json, stored_jsonl) != (json_size, jsonl_size):
            raise ServiceError(
                f"stored sizes {stored_json}/{stored_jsonl} differ from "
                f"computed {json_size}/{jsonl_size}"
            )


def _profile_bytes(record: TrainingFileRecord) -> bytes | None:
    """The profile exactly as the JSON document holds it (a `json` column keeps the text)."""
    profile = record.consultant_profile
    return profile.encode() if profile is not None else None


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ServiceError) and type(exc) is not ServiceError:
        return exc.message
    # GeneratorExit: the stream was closed while waiting at a `yield`, which happens when
    # the call is cancelled while a progress message is being sent.
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled: the caller cancelled the call or its deadline passed"
    return "internal error"


def _unexpected(exc: BaseException) -> BaseException | None:
    """What to log with its traceback: not a domain error (an outage says all in its message)."""
    if isinstance(exc, ServiceError) and type(exc) is not ServiceError:
        return None
    return exc


async def _shielded(cleanup: Awaitable[None]) -> None:
    """Run cleanup to the end even when the call is being cancelled."""
    task = asyncio.ensure_future(cleanup)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)
    if not task.done():
        await asyncio.wait({task})
