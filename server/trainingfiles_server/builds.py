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
letting lines pile up. Every output format is written in the same pass (`outputs.py`).
An Add is a Create that starts from the stored version: the store copies its v4 content
(UploadPartCopy) and its JSONL is streamed once to render the other formats again. An
export is that pass over the stored JSONL alone, for the formats it asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from . import aggregate, card, failpoints, formats
from .aggregate import ConsistencyCheck, ConversationSummary, FileMetrics, Warning
from .config import Settings
from .db import Database, LeaseLost, StoredConversation
from .errors import ResourceExhausted, ServiceError
from .fetching import Targets, fetch_all
from .formats import Format
from .leases import FileQueue, Lease, claim_with_retry, lease_lost
from .models import (
    Caller,
    CandidateConversation,
    OutputRecord,
    Progress,
    Split,
    Stage,
    Status,
    TrainingFileRecord,
)
from .outputs import OutputSet, V4Outputs
from .plans import OutputPlan, split_to_json
from .rules import (
    check_ids,
    check_name,
    ineligible,
    not_active,
    parse_uuid,
    reject_ineligible,
    uuid_violations,
    visible,
)
from .splits import SplitSpec, Stratify
from .storage import Storage, UploadHook

log = logging.getLogger("trainingfiles.operations")


@dataclass
class _Build:
    """One Create, Add or export in progress: what it writes, under which lease, from what."""

    file_id: UUID
    name: str
    bucket: str
    moment: datetime
    lease: Lease
    # The status the file must still have at commit ('processing' for a Create).
    from_status: Status
    plan: OutputPlan
    keys: dict[tuple[str, Split], str]
    description: str | None = None
    # An Add or export: the version it starts from, and its conversations.
    stored: TrainingFileRecord | None = None
    existing: list[StoredConversation] = field(default_factory=list)
    added_by: UUID | None = None
    result: TrainingFileRecord | None = None
    # The outputs the commit replaced, and whether they may be deleted at once.
    replaced: list[str] = field(default_factory=list)
    replaced_due: bool = False

    @property
    def all_keys(self) -> list[str]:
        return list(self.keys.values())


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
        requested: Sequence[Format] = (),
        split: SplitSpec | None = None,
        drop_duplicates: bool = False,
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids, self.settings.max_conversations_per_request, check_name(name, description)
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        owner = caller.owner_for(on_behalf_of)
        candidates = await self.database.check_conversations(conversation_ids, None)
        del conversation_ids
        reject_ineligible(ineligible(candidates, owner))
        plan = OutputPlan.of(requested, split, drop_duplicates)
        validation = plan.validation(_strata(candidates))
        targets = Targets(candidates)
        del candidates
        # The name is taken by the insert itself: its unique index answers ALREADY_EXISTS.
        file_id = uuid.uuid4()
        moment = datetime.now(UTC)
        keys = plan.keys(file_id, name, moment)
        token = uuid.uuid4()
        await self.database.insert_processing_file(
            file_id=file_id,
            name=name,
            description=description,
            bucket=self.storage.training_bucket,
            json_key=keys[("v4_json", Split.ALL)],
            jsonl_key=keys[("v4_jsonl", Split.ALL)],
            keys=list(keys.values()),
            created_by=owner,
            lease_token=token,
            lease_seconds=self.settings.lease_seconds,
            output_formats=plan.format_names,
            split_spec=split_to_json(split),
            drop_duplicates=drop_duplicates,
        )
        build = _Build(
            file_id=file_id,
            name=name,
            bucket=self.storage.training_bucket,
            moment=moment,
            lease=self._lease(file_id, token),
            from_status=Status.PROCESSING,
            plan=plan,
            keys=keys,
            description=description,
            added_by=caller.user_id,
        )
        async for event in self._guarded(build, self._run(build, targets, validation)):
            yield event

    async def add(
        self,
        caller: Caller,
        training_file_id: str,
        ids: Sequence[str],
        requested: Sequence[Format] = (),
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids,
            self.settings.max_conversations_per_request,
            uuid_violations(training_file_id, "training_file_id"),
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        file_id = UUID(training_file_id)
        record = await self._active(caller, file_id, "only active files can be extended")

        async def build_it(build: _Build) -> AsyncIterator[Progress]:
            candidates = await self.database.check_conversations(conversation_ids, file_id)
            conversation_ids.clear()
            # Added conversations must belong to the file's owner (any, for a system file
            # extended by a service), and to a calling user.
            owner = build.stored.created_by if build.stored else None
            reject_ineligible(ineligible(candidates, owner or caller.user_id))
            build.existing = await self.database.stored_conversations(file_id)
            validation = build.plan.validation([*_strata(build.existing), *_strata(candidates)])
            targets = Targets(candidates)
            del candidates
            async for event in self._run(build, targets, validation):
                yield event

        plan = OutputPlan.stored(record, requested)
        async for event in self._extend(caller, record, plan, build_it, v4=True):
            yield event

    async def export(
        self, caller: Caller, training_file_id: str, requested: Sequence[Format]
    ) -> AsyncGenerator[Progress, None]:
        """Render formats of the current version from its stored JSONL (no document fetched)."""
        file_id = parse_uuid(training_file_id, "training_file_id")
        record = await self._active(caller, file_id, "only active files can be exported")
        stored_plan = OutputPlan.stored(record)
        plan = OutputPlan.of(requested, stored_plan.split, stored_plan.drop_duplicates)

        async def build_it(build: _Build) -> AsyncIterator[Progress]:
            build.existing = await self.database.stored_conversations(file_id)
            async for event in self._render(build, build.plan.validation(_strata(build.existing))):
                yield event

        async for event in self._extend(caller, record, plan, build_it, v4=False):
            yield event

    async def _active(self, caller: Caller, file_id: UUID, why: str) -> TrainingFileRecord:
        record = visible(caller, await self.database.get_file(file_id), file_id)
        if record.status is not Status.ACTIVE:
            raise not_active(record, why)
        return record

    async def _extend(
        self,
        caller: Caller,
        record: TrainingFileRecord,
        plan: OutputPlan,
        build_it: Callable[[_Build], AsyncIterator[Progress]],
        *,
        v4: bool,
    ) -> AsyncIterator[Progress]:
        """An Add or an export: one at a time per file, under the file's lease.

        Builds of one file run one at a time, in order of arrival in this process; waiting
        holds no database connection. Across replicas the lease is the lock.
        """
        async with self._queue.turn(record.id):
            token = uuid.uuid4()
            build = await claim_with_retry(lambda: self._claim(caller, record, token, plan, v4=v4))
            async for event in self._guarded(build, build_it(build)):
                yield event

    async def _guarded(
        self, build: _Build, work: AsyncIterator[Progress]
    ) -> AsyncIterator[Progress]:
        """Run a build under its lease; on any failure give everything back (`_abandon`)."""
        with self._tracked():
            async with build.lease.kept():
                try:
                    await failpoints.reach("build.leased")
                    async for event in work:
                        yield event
                except BaseException as exc:
                    await _shielded(self._abandon(build, exc))
                    raise
        if build.replaced and build.replaced_due:
            # No link to the replaced objects is outstanding: they can go now (else the
            # sweeper deletes them once the last link has expired).
            await _shielded(self._discard(build.bucket, build.file_id, build.replaced))
        assert build.result is not None
        yield Progress(Stage.SAVING, 0, 0, build.file_id, training_file=build.result)

    async def _claim(
        self,
        caller: Caller,
        record: TrainingFileRecord,
        token: UUID,
        plan: OutputPlan,
        *,
        v4: bool,
    ) -> _Build | None:
        """The build if it got the file's lease; None while another build holds it.

        `record` (as read before queueing) gives the name and bucket, which never change;
        the claim itself returns the version the build starts from.
        """
        file_id = record.id
        moment = datetime.now(UTC)
        keys = plan.keys(file_id, record.name, moment, v4=v4)
        bucket = record.storage_bucket
        claimed = await self.database.claim_file(
            file_id, token, self.settings.lease_seconds, bucket, list(keys.values())
        )
        if claimed is None:
            current = visible(caller, await self.database.get_file(file_id), file_id)
            if current.status is not Status.ACTIVE:
                raise not_active(current, "it is no longer active")
            return None
        return _Build(
            file_id=file_id,
            name=claimed.name,
            bucket=bucket,
            moment=moment,
            lease=self._lease(file_id, token),
            from_status=Status.ACTIVE,
            plan=plan,
            keys=keys,
            description=claimed.description,
            stored=claimed,
            added_by=caller.user_id,
        )

    def _output_set(
        self, build: _Build, validation: frozenset[UUID] | None, v4: V4Outputs | None
    ) -> OutputSet:
        return OutputSet(
            self.storage,
            build.bucket,
            build.keys,
            build.plan.trainer_formats,
            validation,
            build.plan.drop_duplicates,
            self.settings.max_object_bytes,
            v4=v4,
            on_upload=self._upload_recorder(build),
        )

    async def _run(
        self, build: _Build, targets: Targets, validation: frozenset[UUID] | None
    ) -> AsyncIterator[Progress]:
        """The build itself, the same for a Create and an Add: fetch, write, commit.

        An Add starts from the file's stored version, which the store copies into the new
        v4 objects while the new documents are fetched.
        """
        file_id, stored, total = build.file_id, build.stored, len(targets)
        yield Progress(Stage.VALIDATING, total, total, file_id)
        v4 = V4Outputs(
            self.storage,
            build.bucket,
            build.keys[("v4_json", Split.ALL)],
            build.keys[("v4_jsonl", Split.ALL)],
            self.settings.max_object_bytes,
            on_upload=self._upload_recorder(build),
        )
        outputs = self._output_set(build, validation, v4)
        try:
            if stored is None:
                consistency = ConsistencyCheck()
            else:
                consistency = ConsistencyCheck(stored.vertical, _profile_bytes(stored))
                assert stored.json_file_path and stored.jsonl_file_path
                outputs.start_from_stored(
                    stored.jsonl_file_path,
                    stored.json_file_path,
                    stored.json_file_size,
                    stored.jsonl_file_size,
                    [c.digests for c in build.existing],
                    stored.untrainable_pair_count,
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
            metrics = aggregate.summarize([*(c.summary for c in build.existing), *added])
            assert consistency.vertical is not None and consistency.consultant_profile is not None
            header = aggregate.json_header(
                build.name,
                build.moment,
                consistency.vertical,
                metrics,
                consistency.consultant_profile,
            )
            yield Progress(
                Stage.AGGREGATING, total, total, file_id, warnings=_content_warnings(outputs)
            )
            json_size = self._check_sizes(header, v4.jsonl_size)
            yield Progress(Stage.UPLOADING, 0, 0, file_id)
            build.lease.check()
            records = await v4.close(header, metrics.total_training_pairs)
            if records[0].size_bytes != json_size:
                raise ServiceError(
                    f"stored JSON size {records[0].size_bytes} differs from computed {json_size}"
                )
            records += await outputs.close_trainers()
            summaries = [*(c.summary for c in build.existing), *added]
            records.append(
                await outputs.store_card(
                    _card(
                        build,
                        metrics,
                        consistency.vertical,
                        records,
                        validation,
                        summaries,
                        outputs,
                    )
                )
            )
        except BaseException:
            await _shielded(outputs.abort())
            raise
        commit = self.database.activate(
            file_id=file_id,
            lease_token=build.lease.token,
            from_status=build.from_status,
            bucket=build.bucket,
            outputs=records,
            metrics=metrics,
            vertical=consistency.vertical,
            consultant_profile=consistency.consultant_profile,
            new_conversations=list(added),
            new_digests=outputs.new_digests,
            first_position=len(build.existing),
            added_by=build.added_by,
            output_formats=build.plan.format_names,
            duplicate_pair_count=outputs.duplicates.count,
            untrainable_pair_count=outputs.untrainable,
        )
        async for event in self._commit(build, commit):
            yield event

    async def _render(
        self, build: _Build, validation: frozenset[UUID] | None
    ) -> AsyncIterator[Progress]:
        """An export: the stored JSONL through the requested formats, then the commit."""
        stored = build.stored
        assert stored is not None and stored.jsonl_file_path
        file_id, total = build.file_id, stored.total_training_pairs
        yield Progress(Stage.VALIDATING, 0, 0, file_id)
        outputs = self._output_set(build, validation, None)
        try:
            async for done in outputs.replay(stored.jsonl_file_path):
                build.lease.check()
                yield Progress(Stage.RENDERING, done, total, file_id)
            yield Progress(Stage.UPLOADING, 0, 0, file_id)
            records = await outputs.close_trainers()
            exported = {(r.format, r.split) for r in records}
            kept = [
                o
                for o in stored.outputs
                if (o.format, o.split) not in exported and o.format != "dataset_card"
            ]
            metrics = _stored_metrics(stored)
            card_text = _card(
                build,
                metrics,
                stored.vertical or "",
                [*kept, *records],
                validation,
                [c.summary for c in build.existing],
                outputs,
            )
            records.append(await outputs.store_card(card_text))
        except BaseException:
            await _shielded(outputs.abort())
            raise
        formats_now = OutputPlan.stored(stored, build.plan.trainer_formats).format_names
        commit = self.database.record_export(
            file_id=file_id,
            lease_token=build.lease.token,
            bucket=build.bucket,
            outputs=records,
            output_formats=formats_now,
        )
        async for event in self._commit(build, commit):
            yield event

    async def _commit(
        self,
        build: _Build,
        commit: Coroutine[Any, Any, tuple[TrainingFileRecord, list[str], bool]],
    ) -> AsyncIterator[Progress]:
        """The outputs are stored: make them live in one transaction, lease permitting."""
        try:
            await failpoints.reach("build.uploaded")
            yield Progress(Stage.SAVING, 0, 0, build.file_id)
            build.lease.check()
            try:
                build.result, build.replaced, build.replaced_due = await commit
            except LeaseLost:
                raise await self._why_not_committed(build) from None
        finally:
            commit.close()  # never awaited when the lease was already gone
        await failpoints.reach("build.committed")

    async def _why_not_committed(self, build: _Build) -> ServiceError:
        """The commit found the lease gone: the file was archived meanwhile, or it expired."""
        current = await self.database.get_file(build.file_id)
        if build.stored is not None and current is not None and current.status is not Status.ACTIVE:
            return not_active(current, "it was archived while the build was running")
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
        await self._discard(build.bucket, build.file_id, build.all_keys)
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
        """The JSON document's size, known from its header and the JSONL's before close."""
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


def _strata(
    conversations: Sequence[CandidateConversation] | Sequence[StoredConversation],
) -> list[tuple[UUID, UUID | None, UUID | None]]:
    """(conversation, persona, training topic) of each: what a split is stratified by."""
    return [
        (
            c.conversation_id
            if isinstance(c, CandidateConversation)
            else UUID(c.summary.conversation_id),
            c.persona_id,
            c.training_topic_id,
        )
        for c in conversations
    ]


def _content_warnings(outputs: OutputSet) -> list[Warning]:
    """Duplicates and pairs without a target: told once, at the end of the fetch."""
    warnings = []
    duplicates = outputs.duplicates
    if duplicates.count:
        what = "dropped from" if outputs.drops_duplicates else "kept in"
        warnings.append(
            Warning(
                "DUPLICATE_PAIRS",
                f"{duplicates.count} pair(s) repeat an earlier pair of the file; {what} the "
                f"trainer formats (first: {', '.join(duplicates.first_duplicates[:5])})",
                (),
            )
        )
    if outputs.untrainable:
        warnings.append(
            Warning(
                "PAIRS_WITHOUT_TARGET",
                f"{outputs.untrainable} pair(s) have no target response; they are left out "
                "of the trainer formats",
                (),
            )
        )
    return warnings


def _stored_metrics(record: TrainingFileRecord) -> FileMetrics:
    distribution = record.scaffolding_distribution
    assert record.avg_quality_score is not None
    assert record.min_quality_score is not None and record.max_quality_score is not None
    return FileMetrics(
        conversation_count=record.conversation_count,
        total_training_pairs=record.total_training_pairs,
        avg_quality_score=record.avg_quality_score,
        min_quality_score=record.min_quality_score,
        max_quality_score=record.max_quality_score,
        human_reviewed_count=record.human_reviewed_count,
        personas=distribution.get("personas", {}),
        emotional_arcs=distribution.get("emotional_arcs", {}),
        training_topics=distribution.get("training_topics", {}),
    )


def _card(
    build: _Build,
    metrics: FileMetrics,
    vertical: str,
    records: Sequence[OutputRecord],
    validation: frozenset[UUID] | None,
    summaries: Iterable[ConversationSummary],
    outputs: OutputSet,
) -> bytes:
    """The version's dataset card (`card.py`), describing `records`."""
    stored = build.stored
    split = build.plan.split
    card_split = None
    if split is not None and validation is not None:
        sides = {True: [0, 0], False: [0, 0]}  # conversations, pairs by "is validation"
        for summary in summaries:
            side = sides[UUID(summary.conversation_id) in validation]
            side[0] += 1
            side[1] += summary.training_pair_count
        card_split = card.CardSplit(
            seed=split.seed,
            train_conversations=sides[False][0],
            train_pairs=sides[False][1],
            validation_conversations=sides[True][0],
            validation_pairs=sides[True][1],
            validation_fraction=split.validation_fraction,
            validation_count=split.validation_count,
            stratify=None if split.stratify is Stratify.NONE else split.stratify.value,
        )
    exporting = stored is not None and build.keys.get(("v4_json", Split.ALL)) is None
    version = 1 if stored is None else stored.version + (0 if exporting else 1)
    return card.render_card(
        card.CardInfo(
            name=build.name,
            training_file_id=str(build.file_id),
            version=version,
            created=stored.updated_at if exporting and stored else build.moment,
            vertical=vertical,
            conversation_count=metrics.conversation_count,
            pair_count=metrics.total_training_pairs,
            avg_quality_score=metrics.avg_quality_score,
            min_quality_score=metrics.min_quality_score,
            max_quality_score=metrics.max_quality_score,
            human_reviewed_count=metrics.human_reviewed_count,
            scaffolding_distribution=metrics.scaffolding_distribution(),
            duplicate_pairs=outputs.duplicates.count,
            duplicates_dropped=build.plan.drop_duplicates,
            untrainable_pairs=outputs.untrainable,
            outputs=tuple(
                card.CardOutput(
                    r.format,
                    r.split.value,
                    formats.file_name(build.name, formats.FORMATS[r.format], r.split.value),
                    r.record_count,
                    r.size_bytes,
                )
                for r in _requested_order(records, build.plan)
            ),
            description=build.description,
            split=card_split,
        )
    )


def _requested_order(records: Sequence[OutputRecord], plan: OutputPlan) -> list[OutputRecord]:
    """Trainer outputs first, in the plan's order (the first is the card's default)."""
    order = {name: i for i, name in enumerate(plan.format_names)}
    return sorted(records, key=lambda r: order.get(r.format, len(order)))
