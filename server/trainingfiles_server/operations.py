"""The service's operations, free of gRPC: validate, fetch, aggregate, store, commit.

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
import itertools
import logging
import time
import uuid
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from . import aggregate, failpoints
from .aggregate import ConsistencyCheck, ConversationSummary, JsonlToJsonPairs
from .auth import Caller
from .config import Settings
from .db import Database, LeaseLost
from .documents import DocumentError, decode_json_object, validate_enriched_document
from .errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Violation,
)
from .leases import FileQueue, Lease, claim_with_retry, lease_lost
from .models import (
    CandidateConversation,
    DownloadUrl,
    EligibleConversation,
    FileConversation,
    FileFormat,
    Progress,
    Stage,
    Status,
    TrainingFileRecord,
)
from .pagination import PageTokens, page_size
from .rules import (
    bad_document,
    check_count,
    check_ids,
    check_name,
    id_violations,
    ineligible,
    not_active,
    object_keys,
    parse_uuid,
    reject_ineligible,
    url_expiry,
    uuid_violations,
)
from .storage import ObjectMissing, ObjectTooLarge, Storage, UploadHook

log = logging.getLogger("trainingfiles.operations")

# Progress at least every 5 % of the conversations or every second, whichever is sooner.
PROGRESS_FRACTION = 0.05
PROGRESS_SECONDS = 1.0
# How many documents each fetch worker may run ahead of the oldest one not yet written.
_AHEAD_PER_WORKER = 8
_T = TypeVar("_T")


class _Targets:
    """The conversations to fetch, in add order, kept small for requests of any size.

    Three allocations in all: the ids (16 bytes each), the enriched paths joined into one
    string, and where each path starts. The validation's records (~440 bytes per
    conversation) are then all freed, and no small object of theirs survives to keep
    the allocator's arenas from going back to the system.
    """

    def __init__(self, candidates: Sequence[CandidateConversation]) -> None:
        self._ids = b"".join(c.conversation_id.bytes for c in candidates)
        paths = [c.enriched_file_path or "" for c in candidates]
        self._paths = "".join(paths)
        self._starts = array("q", itertools.accumulate((len(p) for p in paths), initial=0))

    def __len__(self) -> int:
        return len(self._starts) - 1

    def take(self, index: int) -> tuple[str, str]:
        """Conversation `index`: its id and its enriched document's key."""
        conversation_id = UUID(bytes=self._ids[16 * index : 16 * index + 16])
        return str(conversation_id), self._paths[self._starts[index] : self._starts[index + 1]]


class _Outputs:
    """The JSON and the JSONL of one version of a file, written as lines arrive in order.

    Each line goes to both objects at once (the JSON's copy with its newline turned into
    a comma), so both uploads proceed while documents are still being fetched. The JSON's
    first part waits for the header, which needs every conversation's metrics: `close`
    sends it last. Nothing is visible in the bucket before `close`; `abort` drops it all.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        max_bytes: int,
        on_upload: UploadHook | None = None,
    ) -> None:
        self.json = storage.writer(
            bucket, json_key, "application/json", hold_first=True, on_upload=on_upload
        )
        self.jsonl = storage.writer(bucket, jsonl_key, "application/x-ndjson", on_upload=on_upload)
        self._pairs = JsonlToJsonPairs()
        self._max_bytes = max_bytes
        self._stored: asyncio.Future[list[None]] | None = None

    @property
    def jsonl_size(self) -> int:
        return self.jsonl.size

    def append_stored(self, json_key: str, json_size: int, jsonl_key: str, jsonl_size: int) -> None:
        """Start appending a file's stored pairs; new lines wait until they are in place.

        The JSON holds the JSONL's lines joined by commas between its header and
        `JSON_FOOTER`, so the pairs are a byte range of each stored object, which the
        store copies itself where it can.
        """
        pairs = jsonl_size - 1
        start = json_size - len(aggregate.JSON_FOOTER) - pairs
        self._stored = asyncio.ensure_future(
            _together(
                self.jsonl.append_object(jsonl_key, 0, jsonl_size),
                self.json.append_object(json_key, start, start + pairs),
            )
        )
        self._pairs.feed(b"\n")  # the stored pairs ended a line: the next pair follows a comma

    async def write(self, lines: bytes) -> None:
        if self._stored is not None:
            await self._stored
        if self.jsonl.size + len(lines) > self._max_bytes:
            raise ResourceExhausted(
                f"the training file would exceed the per-object limit of {self._max_bytes} bytes",
                "max_object_bytes",
                reason="OBJECT_TOO_LARGE",
            )
        await self.jsonl.write(lines)
        body = self._pairs.feed(lines)
        if body:
            await self.json.write(body)

    async def close(self, header: bytes) -> tuple[int, int]:
        """Store both objects; returns their sizes, JSON and JSONL."""
        if self._stored is not None:
            await self._stored
        await self.json.write(self._pairs.close())
        json_size, jsonl_size = await _together(self.json.close(header), self.jsonl.close())
        return json_size, jsonl_size

    async def abort(self) -> None:
        if self._stored is not None:
            self._stored.cancel()
            await asyncio.gather(self._stored, return_exceptions=True)
        await asyncio.gather(self.json.abort(), self.jsonl.abort())


async def _together(*calls: Awaitable[_T]) -> list[_T]:
    """Like `gather`, but the first failure cancels the others before it propagates."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass(frozen=True, slots=True)
class _Fetched:
    index: int
    summary: ConversationSummary
    vertical: str
    consultant_profile: bytes
    lines: bytes


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


class Operations:
    """Every operation of the service over one database and one object store."""

    def __init__(
        self, settings: Settings, database: Database, storage: Storage, tokens: PageTokens
    ) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage
        self.tokens = tokens
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
        targets = _Targets(candidates)
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
        record = self._visible(caller, await self.database.get_file(file_id), file_id)
        if record.status is not Status.ACTIVE:
            raise not_active(record, "only active files can be extended")
        # Adds of one file run one at a time, in order of arrival in this process; waiting
        # holds no database connection. Across replicas the lease is the lock.
        async with self._queue.turn(file_id):
            token = uuid.uuid4()
            build = await claim_with_retry(lambda: self._claim(caller, file_id, token))
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
                        targets = _Targets(candidates)
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

    async def _claim(self, caller: Caller, file_id: UUID, token: UUID) -> _Build | None:
        """The Add's build if it got the file's lease; None while another build holds it."""
        moment = datetime.now(UTC)
        record = await self.database.get_file(file_id)
        record = self._visible(caller, record, file_id)
        json_key, jsonl_key = object_keys(file_id, record.name, moment)
        bucket = record.storage_bucket
        claimed = await self.database.claim_file(
            file_id, token, self.settings.lease_seconds, bucket, [json_key, jsonl_key]
        )
        if claimed is None:
            current = self._visible(caller, await self.database.get_file(file_id), file_id)
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

    async def _run(self, build: _Build, targets: _Targets) -> AsyncIterator[Progress]:
        """The build itself, the same for a Create and an Add: fetch, write, commit.

        An Add starts from the file's stored pairs, which the store copies into the new
        objects while the new documents are fetched.
        """
        file_id, stored, total = build.file_id, build.stored, len(targets)
        yield Progress(Stage.VALIDATING, total, total, file_id)
        outputs = _Outputs(
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
            async for event in self._fetch_all(
                file_id, targets, outputs, consistency, added, build.lease
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
        self, outputs: _Outputs, header: bytes, json_size: int, jsonl_size: int
    ) -> None:
        """Store both objects; what was stored must be what the metadata will say."""
        stored_json, stored_jsonl = await outputs.close(header)
        if (stored_json, stored_jsonl) != (json_size, jsonl_size):
            raise ServiceError(
                f"stored sizes {stored_json}/{stored_jsonl} differ from "
                f"computed {json_size}/{jsonl_size}"
            )

    async def _fetch_all(
        self,
        file_id: UUID,
        targets: _Targets,
        outputs: _Outputs,
        consistency: ConsistencyCheck,
        summaries: aggregate.Summaries,
        lease: Lease,
    ) -> AsyncIterator[Progress]:
        """Fetch, validate and transform every document with bounded concurrency.

        Results arrive in any order; summaries, the consistency check and the outputs
        advance in add order, so warnings name conversations deterministically. A worker
        takes a document only while fewer than `_AHEAD_PER_WORKER` per worker are fetched
        but not yet written.
        """
        total = len(targets)
        indices = iter(range(total))  # shared by the workers
        results: list[_Fetched | None] = [None] * total
        # What the loop below waits for: a result, a worker's failure, or a tick (None).
        finished: asyncio.Queue[_Fetched | BaseException | None] = asyncio.Queue()
        max_bytes = self.settings.max_object_bytes
        ahead = asyncio.Semaphore(_AHEAD_PER_WORKER * self.settings.fetch_concurrency)

        async def worker() -> None:
            try:
                await fetch()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                finished.put_nowait(exc)  # the loop raises it at once

        async def tick() -> None:
            while True:  # progress at least every PROGRESS_SECONDS, even when nothing arrives
                await asyncio.sleep(PROGRESS_SECONDS)
                finished.put_nowait(None)

        async def fetch() -> None:
            while True:
                await ahead.acquire()
                index = next(indices, None)
                if index is None:
                    ahead.release()
                    return
                conversation_id, path = targets.take(index)
                try:
                    data = await self.storage.get_document(path, max_bytes)
                    raw = decode_json_object(data)
                    del data
                    document = validate_enriched_document(raw)
                    transformed = aggregate.transform_conversation(conversation_id, raw, document)
                except ObjectMissing:
                    raise bad_document(
                        conversation_id,
                        f"enriched document {path!r} is missing from storage",
                    ) from None
                except ObjectTooLarge as exc:
                    raise bad_document(
                        conversation_id,
                        f"enriched document is {exc.size} bytes, above the limit of {max_bytes}",
                    ) from None
                except DocumentError as exc:
                    raise bad_document(conversation_id, exc.reason) from None
                finished.put_nowait(
                    _Fetched(
                        index,
                        transformed.summary,
                        transformed.vertical,
                        transformed.consultant_profile,
                        transformed.lines,
                    )
                )

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self.settings.fetch_concurrency, total))
        ]
        workers.append(asyncio.create_task(tick()))
        done = 0
        next_in_order = 0
        last_sent_done = 0
        last_sent_at = time.monotonic()
        step = max(1, int(total * PROGRESS_FRACTION))
        try:
            while done < total:
                # One plain wait per wake-up, then whatever else has arrived meanwhile;
                # progress is considered after each arrival, so a burst of arrivals
                # still reports every 5 %.
                arrived = [await finished.get()]
                while not finished.empty():
                    arrived.append(finished.get_nowait())
                for fetched in arrived:
                    if isinstance(fetched, BaseException):
                        raise fetched
                    if fetched is not None:
                        results[fetched.index] = fetched
                        done += 1
                    while next_in_order < total and (item := results[next_in_order]):
                        consistency.observe(
                            item.summary.conversation_id, item.vertical, item.consultant_profile
                        )
                        summaries.append(item.summary)
                        results[next_in_order] = None  # keep only the summary
                        next_in_order += 1
                        await outputs.write(item.lines)
                        ahead.release()
                        await failpoints.reach("build.fetched")
                    lease.check()
                    now = time.monotonic()
                    if (
                        done - last_sent_done >= step
                        or now - last_sent_at >= PROGRESS_SECONDS
                        or done == total
                    ):
                        yield Progress(
                            Stage.FETCHING, done, total, file_id, warnings=consistency.drain()
                        )
                        last_sent_done, last_sent_at = done, now
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # ----------------------------------------------------------------- validate

    async def validate(
        self, caller: Caller, ids: Sequence[str], training_file_id: str, on_behalf_of: str
    ) -> tuple[list[Violation], int]:
        """Every problem Create (or Add to `training_file_id`) would report, and the count
        of conversations without one; changes nothing."""
        check_count(ids, self.settings.max_conversations_per_request)
        parsed, problems = id_violations(ids)
        file_id: UUID | None = None
        if training_file_id:
            file_id = parse_uuid(training_file_id, "training_file_id")
            record = self._visible(caller, await self.database.get_file(file_id), file_id)
            owner = record.created_by or caller.user_id
            if record.status is not Status.ACTIVE:
                problems.append(
                    not_active(record, "only active files can be extended").violations[0]
                )
        else:
            owner = caller.owner_for(on_behalf_of)
        candidates = await self.database.check_conversations(parsed, file_id) if parsed else []
        unusable = ineligible(candidates, owner)
        problems.extend(unusable)
        return problems, len(candidates) - len(unusable)

    # ----------------------------------------------------------------- reads

    def _visible(
        self, caller: Caller, record: TrainingFileRecord | None, file_id: UUID
    ) -> TrainingFileRecord:
        """The file if the caller may see it; someone else's file is simply not found."""
        if record is None or (caller.user_id is not None and record.created_by != caller.user_id):
            raise NotFound("training_file", str(file_id))
        return record

    async def get(self, caller: Caller, training_file_id: str) -> TrainingFileRecord:
        file_id = parse_uuid(training_file_id, "training_file_id")
        return self._visible(caller, await self.database.get_file(file_id), file_id)

    async def archive(self, caller: Caller, training_file_id: str) -> TrainingFileRecord:
        record = await self.get(caller, training_file_id)
        if record.status is Status.ARCHIVED:
            return record
        archived = await self.database.archive(record.id)
        if archived is not None:
            return archived
        current = await self.get(caller, training_file_id)
        if current.status is Status.ARCHIVED:
            return current
        raise not_active(current, "only active files can be archived")

    async def list_files(
        self, caller: Caller, status: Status | None, include_archived: bool, size: int, token: str
    ) -> tuple[list[TrainingFileRecord], str]:
        limit = page_size(size)
        query = (
            f"files:{status.value if status else ''}:{int(include_archived)}:{caller.user_id or ''}"
        )
        position = self.tokens.position(query, token)
        after = (datetime.fromisoformat(position[0]), UUID(position[1])) if position else None
        rows = await self.database.list_files(
            status=status,
            include_archived=include_archived,
            after=after,
            limit=limit + 1,
            owner=caller.user_id,
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_token = self.tokens.issue(query, [last.created_at.isoformat(), str(last.id)])
        return rows, next_token

    async def list_file_conversations(
        self, caller: Caller, training_file_id: str, size: int, token: str
    ) -> tuple[list[FileConversation], str]:
        record = await self.get(caller, training_file_id)
        limit = page_size(size)
        query = f"members:{record.id}"
        position = self.tokens.position(query, token)
        after = int(position[0]) if position else -1
        rows = await self.database.list_file_conversations(record.id, after, limit + 1)
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = self.tokens.issue(query, [rows[-1].position])
        return rows, next_token

    async def list_eligible(
        self, caller: Caller, exclude_training_file_id: str, size: int, token: str
    ) -> tuple[list[EligibleConversation], str]:
        limit = page_size(size)
        exclude: UUID | None = None
        if exclude_training_file_id:
            # Parsed here so that a malformed id is reported under its own field name.
            file_id = parse_uuid(exclude_training_file_id, "exclude_training_file_id")
            exclude = self._visible(caller, await self.database.get_file(file_id), file_id).id
        query = f"eligible:{exclude or ''}:{caller.user_id or ''}"
        position = self.tokens.position(query, token)
        after = (datetime.fromisoformat(position[0]), UUID(position[1])) if position else None
        rows = await self.database.list_eligible(
            exclude_file=exclude, after=after, limit=limit + 1, owner=caller.user_id
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_token = self.tokens.issue(
                query, [last.created_at.isoformat(), str(last.conversation_id)]
            )
        return rows, next_token

    async def download_url(
        self,
        caller: Caller,
        training_file_id: str,
        file_format: FileFormat | None,
        expires_in: int | None,
    ) -> DownloadUrl:
        if file_format is None:
            raise InvalidArgument.field(
                "format", "must be FILE_FORMAT_JSON or FILE_FORMAT_JSONL", "REQUIRED"
            )
        seconds = url_expiry(expires_in)
        file_id = parse_uuid(training_file_id, "training_file_id")
        expire = datetime.now(UTC) + timedelta(seconds=seconds)
        # The link's expiry is noted on the file as its keys are read: objects an Add
        # replaces are kept until then (the sweeper deletes them afterwards).
        record = await self.database.note_link(file_id, expire, caller.user_id)
        if record is None:
            current = self._visible(caller, await self.database.get_file(file_id), file_id)
            raise not_active(current, "it has no content to download")
        key = record.json_file_path if file_format is FileFormat.JSON else record.jsonl_file_path
        size = record.json_file_size if file_format is FileFormat.JSON else record.jsonl_file_size
        assert key is not None
        file_name = f"{record.name}.{file_format.value}"
        url = await self.storage.presign(record.storage_bucket, key, file_name, seconds)
        return DownloadUrl(url, expire, file_format, size, file_name)


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
