"""The passes over a version's pairs: what a Create, an Add or an export stores.

A pass writes every output of its build (`outputs.py`) and stages what it stored for
the commit, which `builds.py` makes under the build's lease:

    Create, Add   validate ─► fetch ∥ transform ─► every output, in one pass ─► card ─► staged
    export        the stored v4 JSONL ─► the requested formats ─► card ─► staged
    Remove        the stored v4 JSONL, less the removed conversations ─► every output ─► staged

Memory does not grow with the number of conversations: each document is parsed,
validated and turned into lines by one of `fetch_concurrency` workers (`fetching.py`);
a Create's or an Add's new members are staged in the database as they are written and
its figures counted as they arrive (`staging.py`), so what stays per conversation is its
target (~20 bytes). An Add starts from the stored version: the store copies its v4
content while the new documents are fetched. A Remove and a Refresh splice the stored
v4 objects (`splice.py`): kept ranges copied by the store, the stored JSONL streamed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from . import aggregate, analytics, card, formats, splice
from .aggregate import ConsistencyCheck, ConversationSummary, FileMetrics, Warning
from .config import Settings
from .errors import FailedPrecondition, ResourceExhausted, ServiceError, Violation
from .fetching import KeptMembers, Targets, fetch_all
from .filters import DocumentFilter, FilterTally
from .leases import Lease
from .models import (
    CandidateConversation,
    OutputRecord,
    Progress,
    Provenance,
    Split,
    Stage,
    Status,
    StoredConversation,
    TrainingFileRecord,
)
from .outputs import OutputSet, Replacements, V4Outputs, together
from .plans import OutputPlan
from .splits import Stratify
from .staging import Figures, SplitSides, StagedMembers, Staging
from .storage import MAX_PARTS, Storage, UploadHook, parts_in_flight

# Multipart parts in flight per build, over all its outputs: what a v4-only build always
# had (two objects, two parts each); more outputs share it rather than multiply memory.
BUILD_PARTS_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class Staged:
    """What a pass stored, for the commit to make live. No metrics: an export (the
    version's content is unchanged, only outputs are added)."""

    records: list[OutputRecord]
    metrics: FileMetrics | None = None
    analytics: analytics.Analytics | None = None
    vertical: str = ""
    consultant_profile: bytes = b""
    # A Create's or an Add's new members: how many it staged (`staging.py`), which the
    # commit moves into the members table.
    added_count: int = 0
    duplicate_pair_count: int = 0
    untrainable_pair_count: int = 0
    removed: list[UUID] = field(default_factory=list)
    # A Refresh: the stale members' new summaries, digests and documents, in file order.
    refreshed: list[ConversationSummary] = field(default_factory=list)
    refreshed_digests: list[bytes] = field(default_factory=list)
    refreshed_provenance: Provenance = field(default_factory=Provenance)
    # What the filters left out of the documents this build read.
    excluded_pair_count: int = 0
    filtered_out_conversation_count: int = 0


@dataclass
class Build:
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
    # A selector's document filters, for the conversations it chose.
    document_filter: DocumentFilter | None = None
    # Where a Create or an Add stages its new members (its lease's rows).
    staging: Staging | None = None
    result: TrainingFileRecord | None = None
    # What the pass stored, for the commit; then what the commit replaced.
    staged: Staged | None = None
    replaced: list[str] = field(default_factory=list)
    replaced_due: bool = False

    @property
    def all_keys(self) -> list[str]:
        return list(self.keys.values())


class Passes:
    """The passes, over the process's one object store."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage

    def _output_set(
        self,
        build: Build,
        validation: frozenset[UUID] | None,
        v4: V4Outputs | None,
        on_upload: UploadHook,
        slots: asyncio.Semaphore,
        count_duplicates: bool = True,
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
            on_upload=on_upload,
            slots=slots,
            count_duplicates=count_duplicates,
        )

    def _v4_outputs(
        self, build: Build, on_upload: UploadHook, slots: asyncio.Semaphore
    ) -> V4Outputs:
        return V4Outputs(
            self.storage,
            build.bucket,
            build.keys[("v4_json", Split.ALL)],
            build.keys[("v4_jsonl", Split.ALL)],
            self.settings.max_object_bytes,
            on_upload=on_upload,
            slots=slots,
        )

    async def build(
        self,
        build: Build,
        targets: Targets,
        validation: frozenset[UUID] | None,
        on_upload: UploadHook,
    ) -> AsyncGenerator[Progress, None]:
        """A Create's or an Add's pass: fetch, write every output, stage it for the commit.

        An Add starts from the file's stored version, which the store copies into the new
        v4 objects while the new documents are fetched.
        """
        file_id, stored, total = build.file_id, build.stored, len(targets)
        yield Progress(Stage.VALIDATING, total, total, file_id)
        slots = parts_in_flight(BUILD_PARTS_IN_FLIGHT)
        v4 = self._v4_outputs(build, on_upload, slots)
        # Duplicates decide something per pair only when a trainer format drops them (and,
        # for an Add rendering trainer formats, name stored pairs among the first ones):
        # otherwise they are counted from the staged digests once all are staged, and no
        # structure of every pair's digest is kept in memory.
        in_sql = not build.plan.trainer_formats or not (
            build.plan.drop_duplicates or stored is not None
        )
        outputs = self._output_set(build, validation, v4, on_upload, slots, not in_sql)
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
            assert build.staging is not None
            figures = Figures(self.settings.context_length, validation)
            figures.extend(c.summary for c in build.existing)
            added = StagedMembers(build.staging, figures)
            tally = FilterTally()
            fetched = fetch_all(
                self.settings,
                self.storage,
                file_id,
                targets,
                outputs,
                consistency,
                added,
                build.lease,
                document_filter=build.document_filter,
                pair_filter=build.plan.pair_filter,
                tally=tally,
            )
            async with contextlib.aclosing(fetched):
                async for event in fetched:
                    yield event
            if not added:
                raise all_filtered_out(len(tally.filtered_out))
            await added.flush()
            if in_sql:
                outputs.settle_duplicates(*await build.staging.duplicates(stored is not None))
            metrics = figures.file_metrics()
            stats = figures.analytics.result()
            assert consistency.vertical is not None and consistency.consultant_profile is not None
            header = aggregate.json_header(
                build.name,
                build.moment,
                consistency.vertical,
                metrics,
                consistency.consultant_profile,
            )
            warnings = [
                *_filter_warnings(tally),
                *_content_warnings(outputs),
                *_over_context(figures.over_context, stats),
            ]
            yield Progress(Stage.AGGREGATING, total, total, file_id, warnings=warnings)
            json_size = self._check_sizes(header, v4.jsonl_size)
            yield Progress(Stage.UPLOADING, 0, 0, file_id)
            build.lease.check()
            # The v4 JSON is checksummed (its spooled bytes) while the others finish.
            v4_records, trainer_records = await together(
                v4.close(header, metrics.total_training_pairs), outputs.close_trainers()
            )
            if v4_records[0].size_bytes != json_size:
                raise ServiceError(
                    f"stored JSON size {v4_records[0].size_bytes} differs from computed {json_size}"
                )
            records = [*v4_records, *trainer_records]
            records.append(
                await outputs.store_card(
                    _card(
                        build,
                        metrics,
                        consistency.vertical,
                        records,
                        figures.sides(),
                        outputs,
                        stats,
                    )
                )
            )
        except BaseException:
            await shielded(outputs.abort())
            raise
        build.staged = Staged(
            records,
            metrics,
            stats,
            consistency.vertical,
            consistency.consultant_profile,
            added_count=added.staged,
            duplicate_pair_count=outputs.duplicates.count,
            untrainable_pair_count=outputs.untrainable,
            excluded_pair_count=tally.excluded_pairs,
            filtered_out_conversation_count=len(tally.filtered_out),
        )

    async def render(
        self, build: Build, validation: frozenset[UUID] | None, on_upload: UploadHook
    ) -> AsyncGenerator[Progress, None]:
        """An export's pass: the stored JSONL through the requested formats, staged."""
        stored = build.stored
        assert stored is not None and stored.jsonl_file_path
        file_id, total = build.file_id, stored.total_training_pairs
        yield Progress(Stage.VALIDATING, 0, 0, file_id)
        outputs = self._output_set(
            build, validation, None, on_upload, parts_in_flight(BUILD_PARTS_IN_FLIGHT)
        )
        try:
            stored_digests = [c.digests for c in build.existing]
            replay = outputs.replay(stored.jsonl_file_path, stored_digests)
            async with contextlib.aclosing(replay):
                async for done in replay:
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
            figures = Figures(self.settings.context_length, validation)
            figures.extend(c.summary for c in build.existing)
            card_text = _card(
                build,
                metrics,
                stored.vertical or "",
                [*kept, *records],
                figures.sides(),
                outputs,
                figures.analytics.result(),
            )
            records.append(await outputs.store_card(card_text))
        except BaseException:
            await shielded(outputs.abort())
            raise
        build.staged = Staged(records)

    async def remove(
        self,
        build: Build,
        leave_out: frozenset[str],
        validation: frozenset[UUID] | None,
        on_upload: UploadHook,
    ) -> AsyncGenerator[Progress, None]:
        """A Remove's pass: the stored JSONL, less the removed conversations' lines (kept
        byte for byte), through every output; metrics from the remaining members' stored
        summaries. No document is fetched. The file keeps its vertical and consultant
        profile (the first conversation's when the file was created)."""
        assert build.stored is not None
        yield Progress(Stage.VALIDATING, len(leave_out), len(leave_out), build.file_id)
        rewrite = self._rewrite(build, leave_out, None, validation, on_upload)
        async with contextlib.aclosing(rewrite):
            async for event in rewrite:
                yield event

    async def refresh(
        self,
        build: Build,
        targets: Targets,
        leave_out: frozenset[str],
        validation: frozenset[UUID] | None,
        on_upload: UploadHook,
    ) -> AsyncGenerator[Progress, None]:
        """A Refresh's pass: the stale members' current documents fetched (`targets`, in
        file order) and spooled, then the stored JSONL with their new lines in their
        places (and `leave_out`, members no longer eligible, left out) through every
        output. Only the stale members' documents are fetched."""
        stored = build.stored
        assert stored is not None
        replacements = Replacements([targets.take(i)[0] for i in range(len(targets))])
        try:
            consistency = ConsistencyCheck(stored.vertical, _profile_bytes(stored))
            fresh = KeptMembers()
            tally = FilterTally()
            yield Progress(Stage.VALIDATING, len(targets), len(targets), build.file_id)
            fetched = fetch_all(
                self.settings,
                self.storage,
                build.file_id,
                targets,
                replacements,
                consistency,
                fresh,
                build.lease,
                pair_filter=build.plan.pair_filter,
                tally=tally,
            )
            async with contextlib.aclosing(fetched):
                async for event in fetched:
                    yield event
            # A member left with no pair by the file's pair filter leaves the file.
            leave_out = leave_out | frozenset(tally.filtered_out)
            if len(leave_out) == len(build.existing):
                raise all_filtered_out(len(tally.filtered_out))
            warnings = [*consistency.drain(), *_filter_warnings(tally)]
            rewrite = self._rewrite(
                build, leave_out, replacements, validation, on_upload, list(fresh.summaries)
            )
            async with contextlib.aclosing(rewrite):
                async for event in rewrite:
                    if warnings and event.stage is Stage.AGGREGATING:
                        event = dataclasses.replace(event, warnings=[*warnings, *event.warnings])
                    yield event
        finally:
            replacements.close()
        assert build.staged is not None
        build.staged = dataclasses.replace(
            build.staged,
            refreshed_provenance=fresh.provenance,
            excluded_pair_count=tally.excluded_pairs,
            filtered_out_conversation_count=len(tally.filtered_out),
        )

    async def _rewrite(
        self,
        build: Build,
        leave_out: frozenset[str],
        replacements: Replacements | None,
        validation: frozenset[UUID] | None,
        on_upload: UploadHook,
        fresh: Sequence[ConversationSummary] = (),
    ) -> AsyncGenerator[Progress, None]:
        """A new version from the stored one: its JSONL, less `leave_out`, with the
        `replacements`' lines in their conversations' places, through every output."""
        stored = build.stored
        assert stored is not None and stored.jsonl_file_path and stored.json_file_path
        file_id, total = build.file_id, stored.total_training_pairs
        slots = parts_in_flight(BUILD_PARTS_IN_FLIGHT)
        members = splice.members_of(build.existing)
        v4: V4Outputs
        if members is None:  # a member's lines can only be found by decoding them
            v4 = self._v4_outputs(build, on_upload, slots)
        else:
            v4 = splice.SplicedV4(
                self.storage,
                build.bucket,
                build.keys[("v4_json", Split.ALL)],
                build.keys[("v4_jsonl", Split.ALL)],
                self.settings.max_object_bytes,
                stored_json=(stored.json_file_path, stored.json_file_size),
                stored_jsonl=(stored.jsonl_file_path, stored.jsonl_file_size),
                small_parts=await self._small_parts(members, leave_out, replacements, stored),
                on_upload=on_upload,
                slots=slots,
            )
        outputs = self._output_set(build, validation, v4, on_upload, slots)
        try:
            if isinstance(v4, splice.SplicedV4):
                assert members is not None
                replay = splice.splice(
                    outputs,
                    v4,
                    self.storage,
                    build.bucket,
                    stored.jsonl_file_path,
                    members,
                    leave_out,
                    replacements,
                    stored.untrainable_pair_count,
                )
            else:
                stored_digests = [c.digests for c in build.existing]
                replay = outputs.replay(
                    stored.jsonl_file_path,
                    stored_digests,
                    leave_out=leave_out,
                    replace=replacements,
                )
            async with contextlib.aclosing(replay):
                async for done in replay:
                    build.lease.check()
                    yield Progress(Stage.RENDERING, done, total, file_id)
            by_id = {summary.conversation_id: summary for summary in fresh}
            kept = [
                by_id.get(c.summary.conversation_id, c.summary)
                for c in build.existing
                if c.summary.conversation_id not in leave_out
            ]
            tallied = Figures(self.settings.context_length, validation).extend(kept)
            metrics = tallied.file_metrics()
            figures = tallied.analytics.result()
            vertical, profile = stored.vertical or "", _profile_bytes(stored) or b"{}"
            header = aggregate.json_header(build.name, build.moment, vertical, metrics, profile)
            warnings = [*_content_warnings(outputs), *_over_context(tallied.over_context, figures)]
            yield Progress(Stage.AGGREGATING, total, total, file_id, warnings=warnings)
            json_size = self._check_sizes(header, v4.jsonl_size)
            yield Progress(Stage.UPLOADING, 0, 0, file_id)
            build.lease.check()
            v4_records, trainer_records = await together(
                v4.close(header, metrics.total_training_pairs), outputs.close_trainers()
            )
            if v4_records[0].size_bytes != json_size:
                raise ServiceError(
                    f"stored JSON size {v4_records[0].size_bytes} differs from computed {json_size}"
                )
            records = [*v4_records, *trainer_records]
            records.append(
                await outputs.store_card(
                    _card(build, metrics, vertical, records, tallied.sides(), outputs, figures)
                )
            )
        except BaseException:
            await shielded(outputs.abort())
            raise
        build.staged = Staged(
            records,
            metrics,
            figures,
            vertical,
            profile,
            duplicate_pair_count=outputs.duplicates.count,
            untrainable_pair_count=outputs.untrainable,
            removed=[UUID(c) for c in sorted(leave_out)],
            refreshed=list(fresh),
            refreshed_digests=outputs.new_digests,
        )

    async def _small_parts(
        self,
        members: Sequence[splice.Member],
        leave_out: frozenset[str],
        replacements: Replacements | None,
        stored: TrainingFileRecord,
    ) -> bool:
        """Whether a spliced version's objects may have a part per kept range: the store
        accepts small parts and the objects stay within S3's part count."""
        if not self.storage.copy_supported or not await self.storage.accepts_small_parts():
            return False
        size = stored.json_file_size + (replacements.size if replacements is not None else 0)
        parts = splice.parts_needed(members, leave_out, replacements, size, self.storage.part_size)
        return parts <= MAX_PARTS

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


async def shielded(cleanup: Awaitable[None]) -> None:
    """Run cleanup to the end even when the call is being cancelled."""
    task = asyncio.ensure_future(cleanup)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)
    if not task.done():
        await asyncio.wait({task})


def _profile_bytes(record: TrainingFileRecord) -> bytes | None:
    """The profile exactly as the JSON document holds it (a `json` column keeps the text)."""
    profile = record.consultant_profile
    return profile.encode() if profile is not None else None


def strata(
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


def all_filtered_out(filtered_out: int) -> FailedPrecondition:
    """Nothing the build read passes the filters: no version is made."""
    return FailedPrecondition(
        f"every conversation read failed the filters ({filtered_out} left out); nothing "
        "would be in the training file",
        [Violation("filters", "ALL_CONVERSATIONS_FILTERED_OUT", f"{filtered_out} left out")],
        reason="ALL_CONVERSATIONS_FILTERED_OUT",
    )


def _filter_warnings(tally: FilterTally) -> list[Warning]:
    """What the filters left out, told once, at the end of the fetch."""
    return [Warning(code, message, tuple(ids)) for code, message, ids in tally.warnings()]


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


def _over_context(over: Sequence[str], figures: analytics.Analytics) -> list[Warning]:
    """Pairs of the version with more tokens than the configured context length: a
    trainer truncates or drops them. Told once, with the conversations that have them
    (`over`, as `staging.Figures` found them)."""
    stats = figures.tokens
    if stats is None or not stats.pairs_over(stats.context_length):
        return []
    limit = stats.context_length
    return [
        Warning(
            "PAIRS_OVER_CONTEXT",
            f"{stats.pairs_over(limit)} pair(s) have more than {limit} tokens (the "
            f"configured context length, counted with {stats.tokenizer}); a trainer "
            "truncates or drops them",
            tuple(over),
        )
    ]


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
    build: Build,
    metrics: FileMetrics,
    vertical: str,
    records: Sequence[OutputRecord],
    sides: SplitSides | None,
    outputs: OutputSet,
    figures: analytics.Analytics | None = None,
) -> bytes:
    """The version's dataset card (`card.py`), describing `records`."""
    stored = build.stored
    split = build.plan.split
    card_split = None
    if split is not None and sides is not None:
        card_split = card.CardSplit(
            seed=split.seed,
            train_conversations=sides.train_conversations,
            train_pairs=sides.train_pairs,
            validation_conversations=sides.validation_conversations,
            validation_pairs=sides.validation_pairs,
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
            analytics=figures,
        )
    )


def _requested_order(records: Sequence[OutputRecord], plan: OutputPlan) -> list[OutputRecord]:
    """Trainer outputs first, in the plan's order (the first is the card's default)."""
    order = {name: i for i, name in enumerate(plan.format_names)}
    return sorted(records, key=lambda r: order.get(r.format, len(order)))
