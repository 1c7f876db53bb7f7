"""The builds: Create, Add and export, from the request to the commit, under a lease.

Each is an async generator of `Progress`. Its shape:

    validate (one query) ─► record intents ─► the pass (passes.py) ─► commit
                                  │                                      │
                                  └── any failure: delete objects, ◄─────┘
                                      mark the file failed / leave it unchanged

A Create takes its file's name and lease with the insert; an Add or an export waits for
the file's lease (one build per file at a time, in order of arrival in this process;
across replicas by claiming with backoff). What a build leaves when it fails, `_abandon`
removes; what it leaves when its process dies, the sweeper does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    Callable,
    Iterator,
    Sequence,
)
from datetime import UTC, datetime
from uuid import UUID

from . import failpoints, metrics, tracing
from .config import Settings
from .db import Database, LeaseLost
from .duplicates import MAX_FIRST_DUPLICATES
from .errors import FailedPrecondition, InvalidArgument, ResourceExhausted, ServiceError, Violation
from .fetching import Targets, TargetsBuilder
from .filters import PairFilter
from .formats import Format
from .leases import FileQueue, Lease, claim_with_retry, lease_lost
from .models import (
    Caller,
    CandidateConversation,
    Progress,
    Selector,
    Split,
    Stage,
    StagedMember,
    Status,
    TrainingFileRecord,
    VersionReason,
)
from .passes import Build, Passes, shielded, strata
from .plans import OutputPlan, split_to_json
from .rules import (
    check_ids,
    check_name,
    ineligible,
    not_active,
    nothing_selected,
    parse_uuid,
    reject_ineligible,
    reject_pair_filter,
    reject_removal,
    removal_violations,
    selection_owner,
    uuid_violations,
    visible,
)
from .splits import SplitSpec
from .storage import Storage, UploadHook, UploadVanished

log = logging.getLogger("trainingfiles.operations")


class Builds:
    """Create and Add: one pipeline, with the leases, the cleanup and the shutdown drain."""

    def __init__(self, settings: Settings, database: Database, storage: Storage) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage
        self.passes = Passes(settings, storage)
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
        auto_refresh: bool = False,
        selector: Selector | None = None,
        pair_filter: PairFilter | None = None,
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids,
            self.settings.max_conversations_per_request,
            check_name(name, description),
            required=selector is None,
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        owner = caller.owner_for(on_behalf_of)
        targets, triples = await self._targets(
            caller, owner, conversation_ids, selector, None, keep_strata=split is not None
        )
        del conversation_ids
        plan = OutputPlan.of(requested, split, drop_duplicates, pair_filter)
        validation = plan.validation(triples)
        del triples
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
            auto_refresh=auto_refresh,
            pair_filter=plan.pair_filter.to_json(),
        )
        build = Build(
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
            document_filter=selector.document_filter if selector else None,
        )
        pass_ = self.passes.build(build, targets, validation, self._upload_recorder(build))
        async with contextlib.aclosing(self._guarded(build, pass_)) as events:
            async for event in events:
                yield event

    async def add(
        self,
        caller: Caller,
        training_file_id: str,
        ids: Sequence[str],
        requested: Sequence[Format] = (),
        selector: Selector | None = None,
        pair_filter: PairFilter | None = None,
    ) -> AsyncGenerator[Progress, None]:
        conversation_ids = check_ids(
            ids,
            self.settings.max_conversations_per_request,
            uuid_violations(training_file_id, "training_file_id"),
            required=selector is None,
        )
        del ids  # nothing per conversation is kept longer than needed (memory)
        file_id = UUID(training_file_id)
        record = await self._active(caller, file_id, "only active files can be extended")

        async def build_it(build: Build) -> AsyncGenerator[Progress, None]:
            reject_pair_filter(pair_filter, build.plan.pair_filter)
            # Added conversations must belong to the file's owner (any, for a system file
            # extended by a service), and to a calling user.
            owner = build.stored.created_by if build.stored else None
            targets, triples = await self._targets(
                caller,
                owner or caller.user_id,
                conversation_ids,
                selector,
                file_id,
                keep_strata=build.plan.split is not None,
            )
            conversation_ids.clear()
            if selector is not None:
                build.document_filter = selector.document_filter
            build.existing = await self.database.stored_conversations(file_id)
            validation = build.plan.validation([*strata(build.existing), *triples])
            del triples
            pass_ = self.passes.build(build, targets, validation, self._upload_recorder(build))
            async with contextlib.aclosing(pass_):
                async for event in pass_:
                    yield event

        # The plan is the claimed version's: an export may add formats while this waits.
        def plan_for(claimed: TrainingFileRecord) -> OutputPlan:
            return OutputPlan.stored(claimed, requested)

        async with contextlib.aclosing(
            self._extend(caller, record, plan_for, build_it, v4=True)
        ) as events:
            async for event in events:
                yield event

    async def remove(
        self, caller: Caller, training_file_id: str, ids: Sequence[str]
    ) -> AsyncGenerator[Progress, None]:
        """A new version without the named conversations, from the stored JSONL."""
        conversation_ids = check_ids(
            ids,
            self.settings.max_conversations_per_request,
            uuid_violations(training_file_id, "training_file_id"),
        )
        del ids
        file_id = UUID(training_file_id)
        record = await self._active(
            caller, file_id, "only active files can have conversations removed"
        )

        async def build_it(build: Build) -> AsyncGenerator[Progress, None]:
            build.existing = await self.database.stored_conversations(file_id)
            members = {c.summary.conversation_id for c in build.existing}
            reject_removal(removal_violations(conversation_ids, members))
            leave_out = frozenset(str(c) for c in conversation_ids)
            remaining = [c for c in build.existing if c.summary.conversation_id not in leave_out]
            validation = build.plan.validation(strata(remaining))
            pass_ = self.passes.remove(build, leave_out, validation, self._upload_recorder(build))
            async with contextlib.aclosing(pass_):
                async for event in pass_:
                    yield event

        def plan_for(claimed: TrainingFileRecord) -> OutputPlan:
            return OutputPlan.stored(claimed)

        async with contextlib.aclosing(
            self._extend(caller, record, plan_for, build_it, v4=True)
        ) as events:
            async for event in events:
                yield event

    async def refresh(
        self, caller: Caller, training_file_id: str, remove_ineligible: bool = False
    ) -> AsyncGenerator[Progress, None]:
        """A new version whose stale members are rebuilt from their current documents.

        Nothing stale: the file as it is, and no new version. A stale member that is no
        longer eligible fails the call (every one listed), or with `remove_ineligible`
        is left out of the new version.
        """
        file_id = parse_uuid(training_file_id, "training_file_id")
        record = await self._active(caller, file_id, "only active files can be refreshed")
        record = await self.database.with_staleness(record)
        if not record.stale_conversation_count:
            yield Progress(Stage.VALIDATING, 0, 0, file_id)
            yield Progress(Stage.SAVING, 0, 0, file_id, training_file=record)
            return

        async def build_it(build: Build) -> AsyncGenerator[Progress, None]:
            build.existing = await self.database.stored_conversations(file_id)
            stale = await self.database.stale_members(file_id)
            if not stale:
                raise FailedPrecondition(
                    f"no conversation of training file {file_id} is stale any more "
                    "(another refresh took them)",
                    reason="NOTHING_STALE",
                )
            owner = build.stored.created_by if build.stored else None
            unusable = ineligible(stale, owner or caller.user_id)
            if not remove_ineligible:
                reject_ineligible(unusable)
            leave_out = frozenset(v.subject for v in unusable)
            reject_removal(
                removal_violations(
                    [UUID(c) for c in leave_out],
                    {c.summary.conversation_id for c in build.existing},
                )
            )
            usable = [c for c in stale if str(c.conversation_id) not in leave_out]
            remaining = [c for c in build.existing if c.summary.conversation_id not in leave_out]
            validation = build.plan.validation(strata(remaining))
            pass_ = self.passes.refresh(
                build, Targets(usable), leave_out, validation, self._upload_recorder(build)
            )
            async with contextlib.aclosing(pass_):
                async for event in pass_:
                    yield event

        def plan_for(claimed: TrainingFileRecord) -> OutputPlan:
            return OutputPlan.stored(claimed)

        async with contextlib.aclosing(
            self._extend(caller, record, plan_for, build_it, v4=True)
        ) as events:
            async for event in events:
                yield event

    async def export(
        self, caller: Caller, training_file_id: str, requested: Sequence[Format]
    ) -> AsyncGenerator[Progress, None]:
        """Render formats of the current version from its stored JSONL (no document fetched)."""
        file_id = parse_uuid(training_file_id, "training_file_id")
        record = await self._active(caller, file_id, "only active files can be exported")

        def plan_for(claimed: TrainingFileRecord) -> OutputPlan:
            stored = OutputPlan.stored(claimed)
            return OutputPlan.of(
                requested, stored.split, stored.drop_duplicates, stored.pair_filter
            )

        async def build_it(build: Build) -> AsyncGenerator[Progress, None]:
            build.existing = await self.database.stored_conversations(file_id)
            validation = build.plan.validation(strata(build.existing))
            pass_ = self.passes.render(build, validation, self._upload_recorder(build))
            async with contextlib.aclosing(pass_):
                async for event in pass_:
                    yield event

        async with contextlib.aclosing(
            self._extend(caller, record, plan_for, build_it, v4=False)
        ) as events:
            async for event in events:
                yield event

    async def _targets(
        self,
        caller: Caller,
        owner: UUID | None,
        listed: Sequence[UUID],
        selector: Selector | None,
        file_id: UUID | None,
        *,
        keep_strata: bool,
    ) -> tuple[Targets, list[tuple[UUID, UUID | None, UUID | None]]]:
        """The conversations to fetch: the listed ones (validated), then those the
        selector chooses that are not listed (nor in the file `file_id`, an Add's),
        within the server's limit per selector.

        Both are read from the database a page at a time (`selector_page_size`): the
        listed ids' eligibility, every offender reported in request order, and the
        selector's choice, straight into the compact `Targets`: no record of every
        conversation is ever held. Only a split keeps more per conversation, what it is
        stratified by (the triples returned; none without a split).
        """
        builder = TargetsBuilder()
        triples: list[tuple[UUID, UUID | None, UUID | None]] = []

        def keep(c: CandidateConversation) -> None:
            builder.add(c.conversation_id, c.enriched_file_path or "")
            if keep_strata:
                triples.append((c.conversation_id, c.persona_id, c.training_topic_id))

        page_size = self.settings.selector_page_size
        offenders: list[Violation] = []
        for start in range(0, len(listed), page_size):
            page = await self.database.check_conversations(
                listed[start : start + page_size], file_id
            )
            offenders.extend(ineligible(page, owner))
            if not offenders:  # once one is found, only the offenders matter
                for c in page:
                    keep(c)
        reject_ineligible(offenders)
        if selector is not None:
            cap = self.settings.max_conversations_per_selector
            if selector.limit > cap:
                raise InvalidArgument.field(
                    "selector.limit", f"at most {cap} (the server's limit per selector)"
                )
            seen = set(listed)
            builder.selecting()
            chosen = 0
            pages = self.database.select_conversations(
                selector,
                selection_owner(caller, owner, selector),
                file_id,
                selector.limit or cap + 1,
                self.settings.selector_page_size,
            )
            async with contextlib.aclosing(pages):
                async for page in pages:
                    chosen += len(page)
                    if chosen > cap:
                        raise ResourceExhausted(
                            f"the selector matches more than {cap} conversations; narrow "
                            "it or set a limit",
                            "selector",
                            reason="TOO_MANY_CONVERSATIONS",
                        )
                    for c in page:
                        if c.conversation_id not in seen:
                            keep(c)
            if not listed and not chosen:
                raise nothing_selected()
        return builder.build(), triples

    async def _active(self, caller: Caller, file_id: UUID, why: str) -> TrainingFileRecord:
        record = visible(caller, await self.database.get_file(file_id), file_id)
        if record.status is not Status.ACTIVE:
            raise not_active(record, why)
        return record

    async def _extend(
        self,
        caller: Caller,
        record: TrainingFileRecord,
        plan_for: Callable[[TrainingFileRecord], OutputPlan],
        build_it: Callable[[Build], AsyncGenerator[Progress, None]],
        *,
        v4: bool,
    ) -> AsyncGenerator[Progress, None]:
        """An Add or an export: one at a time per file, under the file's lease.

        Builds of one file run one at a time, in order of arrival in this process; waiting
        holds no database connection. Across replicas the lease is the lock.
        """
        async with self._queue.turn(record.id):
            token = uuid.uuid4()
            build = await claim_with_retry(
                lambda: self._claim(caller, record, token, plan_for, v4=v4)
            )
            async with contextlib.aclosing(self._guarded(build, build_it(build))) as events:
                async for event in events:
                    yield event

    def _guarded(
        self, build: Build, work: AsyncGenerator[Progress, None]
    ) -> AsyncGenerator[Progress, None]:
        """Run a build under its lease; on any failure give everything back (`_abandon`)."""
        build.staging = _Staging(self.database, build.file_id, build.lease.token)
        return _in_stages(self._leased(build, work))

    async def _leased(
        self, build: Build, work: AsyncGenerator[Progress, None]
    ) -> AsyncGenerator[Progress, None]:
        with self._tracked():
            async with build.lease.kept():
                try:
                    await failpoints.reach("build.leased")
                    # Closed here, inside the `try`: a stream closed at a `yield` (a call
                    # that ends while a message is sent) cleans up the pass (its open
                    # uploads aborted) before `_abandon` shows the file failed or free.
                    async with contextlib.aclosing(work):
                        async for event in work:
                            yield event
                    async with contextlib.aclosing(self._commit(build)) as committing:
                        async for event in committing:
                            yield event
                except BaseException as exc:
                    await shielded(self._abandon(build, exc))
                    if isinstance(exc, UploadVanished):
                        raise lease_lost(build.file_id) from None
                    raise
        if build.replaced and build.replaced_due:
            # No link to the replaced objects is outstanding: they can go now (else the
            # sweeper deletes them once the last link has expired).
            await shielded(self._discard(build.bucket, build.file_id, build.replaced))
        assert build.result is not None
        result = await self.database.with_staleness(build.result)
        yield Progress(Stage.SAVING, 0, 0, build.file_id, training_file=result)

    async def _claim(
        self,
        caller: Caller,
        record: TrainingFileRecord,
        token: UUID,
        plan_for: Callable[[TrainingFileRecord], OutputPlan],
        *,
        v4: bool,
    ) -> Build | None:
        """The build if it got the file's lease; None while another build holds it.

        `record` (as read before queueing) gives the name and bucket, which never change;
        the claim itself returns the version the build starts from, whose build settings
        (`plan_for`) decide what it writes.
        """
        file_id = record.id
        moment = datetime.now(UTC)
        bucket = record.storage_bucket
        planned: list[tuple[OutputPlan, dict[tuple[str, Split], str]]] = []

        def keys_for(claimed: TrainingFileRecord) -> list[str]:
            plan = plan_for(claimed)
            keys = plan.keys(file_id, record.name, moment, v4=v4)
            planned.append((plan, keys))
            return list(keys.values())

        claimed = await self.database.claim_file(
            file_id, token, self.settings.lease_seconds, bucket, keys_for
        )
        if claimed is None:
            current = visible(caller, await self.database.get_file(file_id), file_id)
            if current.status is not Status.ACTIVE:
                raise not_active(current, "it is no longer active")
            return None
        return Build(
            file_id=file_id,
            name=claimed.name,
            bucket=bucket,
            moment=moment,
            lease=self._lease(file_id, token),
            from_status=Status.ACTIVE,
            plan=planned[-1][0],
            keys=planned[-1][1],
            description=claimed.description,
            stored=claimed,
            added_by=caller.user_id,
        )

    async def _commit(self, build: Build) -> AsyncGenerator[Progress, None]:
        """The pass's outputs are stored: make them live in one transaction, while the
        build holds its lease (and the file is still in the status it started from)."""
        staged = build.staged
        assert staged is not None
        await failpoints.reach("build.uploaded")
        yield Progress(Stage.SAVING, 0, 0, build.file_id)
        build.lease.check()
        try:
            if staged.metrics is None:
                assert build.stored is not None
                committed = await self.database.record_export(
                    file_id=build.file_id,
                    lease_token=build.lease.token,
                    bucket=build.bucket,
                    outputs=staged.records,
                    output_formats=OutputPlan.stored(
                        build.stored, build.plan.trainer_formats
                    ).format_names,
                )
            else:
                committed = await self.database.activate(
                    file_id=build.file_id,
                    lease_token=build.lease.token,
                    from_status=build.from_status,
                    bucket=build.bucket,
                    outputs=staged.records,
                    metrics=staged.metrics,
                    vertical=staged.vertical,
                    consultant_profile=staged.consultant_profile,
                    staged_count=staged.added_count,
                    first_position=len(build.existing),
                    added_by=build.added_by,
                    output_formats=build.plan.format_names,
                    duplicate_pair_count=staged.duplicate_pair_count,
                    untrainable_pair_count=staged.untrainable_pair_count,
                    reason=_reason(build),
                    change_count=len(staged.refreshed) + len(staged.removed) or staged.added_count,
                    retention=self.settings.version_retention,
                    removed=staged.removed,
                    built_at=build.moment,
                    refreshed=staged.refreshed,
                    refreshed_digests=staged.refreshed_digests,
                    refreshed_provenance=staged.refreshed_provenance,
                    excluded_pair_count=staged.excluded_pair_count,
                    filtered_out_conversation_count=staged.filtered_out_conversation_count,
                    analytics=staged.analytics,
                )
        except LeaseLost:
            raise await self._why_not_committed(build) from None
        build.result, build.replaced, build.replaced_due = committed
        await failpoints.reach("build.committed")

    async def _why_not_committed(self, build: Build) -> ServiceError:
        """The commit found the lease gone: the file was archived meanwhile, or it expired."""
        current = await self.database.get_file(build.file_id)
        if build.stored is not None and current is not None and current.status is not Status.ACTIVE:
            return not_active(current, "it was archived while the build was running")
        return lease_lost(build.file_id)

    def _upload_recorder(self, build: Build) -> UploadHook:
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

    async def _abandon(self, build: Build, exc: BaseException) -> None:
        """Give the file back as it was and remove what the build stored.

        A Create's file becomes FAILED with the reason; an Add's file keeps its version and
        is free for the next Add; the members it staged are deleted. Each step is
        independent, so storage being down does not keep the file from being released
        (storage calls give up after their retries), nor the database the objects from
        going. What does not finish here, the sweeper
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
        try:
            await self.database.drop_staged_members(build.file_id, build.lease.token)
        except Exception as error:
            log.warning(
                "could not delete the staged members; the sweeper will",
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


class _Staging:
    """A build's staged members (`staging.Staging`), in the database under its lease."""

    def __init__(self, database: Database, file_id: UUID, lease_token: UUID) -> None:
        self._database = database
        self._file_id = file_id
        self._token = lease_token

    async def write(self, first: int, rows: Sequence[StagedMember]) -> None:
        await self._database.stage_members(self._file_id, self._token, first, rows)

    async def duplicates(self, after_members: bool) -> tuple[int, list[str]]:
        return await self._database.staged_duplicates(
            self._file_id, self._token, after_members, MAX_FIRST_DUPLICATES
        )


async def _in_stages(events: AsyncGenerator[Progress, None]) -> AsyncGenerator[Progress, None]:
    """A build's progress, passed on; each stage timed, counted in flight and spanned.

    A stage starts with its first progress message and ends with the next stage's (or
    the build's end); only stage changes cost anything, never a message.
    """
    stage: Stage | None = None
    started = 0.0
    span: tracing.StageSpan | None = None
    error: BaseException | None = None

    def end() -> None:
        if stage is None:
            return
        name = stage.name.lower()
        metrics.BUILDS_IN_FLIGHT.labels(name).dec()
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)
        if span is not None:
            span.end(error)

    try:
        # Closed here, at once, when this stream is closed: its cleanup runs as before.
        async with contextlib.aclosing(events):
            async for event in events:
                if event.stage is not stage:
                    end()
                    stage, started = event.stage, time.perf_counter()
                    metrics.BUILDS_IN_FLIGHT.labels(stage.name.lower()).inc()
                    span = tracing.StageSpan(stage.name.lower())
                yield event
    except BaseException as exc:
        error = exc
        raise
    finally:
        end()


def _reason(build: Build) -> VersionReason:
    """Why the build's version is made."""
    assert build.staged is not None
    if build.stored is None:
        return VersionReason.CREATED
    if build.staged.refreshed:
        return VersionReason.REFRESHED
    return VersionReason.REMOVED if build.staged.removed else VersionReason.ADDED


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
