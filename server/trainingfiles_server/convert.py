"""Conversions between protobuf messages and domain records: the only place that does it."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from google.protobuf import timestamp_pb2

from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2

from . import analytics, formats
from .errors import InvalidArgument, Violation
from .filters import DocumentFilter, PairFilter
from .formats import Format
from .models import (
    DownloadUrl,
    EligibleConversation,
    FileConversation,
    OutputRecord,
    Progress,
    Selector,
    Split,
    Stage,
    Status,
    TrainingFileRecord,
    VersionReason,
    VersionRecord,
)
from .plans import split_from_json
from .splits import SplitError, SplitSpec, Stratify

_STATUS_TO_PROTO = {
    Status.PROCESSING: resources_pb2.TRAINING_FILE_STATUS_PROCESSING,
    Status.ACTIVE: resources_pb2.TRAINING_FILE_STATUS_ACTIVE,
    Status.ARCHIVED: resources_pb2.TRAINING_FILE_STATUS_ARCHIVED,
    Status.FAILED: resources_pb2.TRAINING_FILE_STATUS_FAILED,
}
_STATUS_FROM_PROTO: dict[int, Status] = {int(v): k for k, v in _STATUS_TO_PROTO.items()}
_STAGE_TO_PROTO = {
    Stage.VALIDATING: service_pb2.TrainingFileProgress.STAGE_VALIDATING,
    Stage.FETCHING: service_pb2.TrainingFileProgress.STAGE_FETCHING,
    Stage.AGGREGATING: service_pb2.TrainingFileProgress.STAGE_AGGREGATING,
    Stage.UPLOADING: service_pb2.TrainingFileProgress.STAGE_UPLOADING,
    Stage.SAVING: service_pb2.TrainingFileProgress.STAGE_SAVING,
    Stage.RENDERING: service_pb2.TrainingFileProgress.STAGE_RENDERING,
}
_SPLIT_TO_PROTO = {
    Split.ALL: resources_pb2.SPLIT_ALL,
    Split.TRAIN: resources_pb2.SPLIT_TRAIN,
    Split.VALIDATION: resources_pb2.SPLIT_VALIDATION,
}
_SPLIT_FROM_PROTO: dict[int, Split] = {int(v): k for k, v in _SPLIT_TO_PROTO.items()}
_STRATIFY_TO_PROTO = {
    Stratify.NONE: resources_pb2.SplitOptions.STRATIFY_UNSPECIFIED,
    Stratify.PERSONA: resources_pb2.SplitOptions.STRATIFY_PERSONA,
    Stratify.TRAINING_TOPIC: resources_pb2.SplitOptions.STRATIFY_TRAINING_TOPIC,
}
_STRATIFY_FROM_PROTO: dict[int, Stratify] = {int(v): k for k, v in _STRATIFY_TO_PROTO.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """`Timestamp.FromDatetime`'s value at a third of its cost (a List converts hundreds);
    a naive moment is UTC, as there."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since = moment - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000
    )


def _score(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


def _quality(value: float) -> float:
    """A conversation's quality score as the contract gives it: rounded half-up to 2
    places, like the file's quality summary (the exact mean is kept for the metrics)."""
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def training_file(record: TrainingFileRecord) -> resources_pb2.TrainingFile:
    message = resources_pb2.TrainingFile(
        id=str(record.id),
        name=record.name,
        status=_STATUS_TO_PROTO[record.status],
        storage_bucket=record.storage_bucket,
        # A file being created already has its keys recorded, but no content yet.
        json_file_path=(record.json_file_path or "") if record.version > 0 else "",
        jsonl_file_path=(record.jsonl_file_path or "") if record.version > 0 else "",
        conversation_count=record.conversation_count,
        total_training_pairs=record.total_training_pairs,
        json_file_size=record.json_file_size,
        jsonl_file_size=record.jsonl_file_size,
        created_by=str(record.created_by) if record.created_by else "",
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        error_message=record.error_message or "",
        version=record.version,
        outputs=[output(o, record.name) for o in _in_registry_order(record.outputs)],
        duplicate_pair_count=record.duplicate_pair_count,
        duplicates_dropped=record.drop_duplicates,
        untrainable_pair_count=record.untrainable_pair_count,
        excluded_pair_count=record.excluded_pair_count,
        filtered_out_conversation_count=record.filtered_out_conversation_count,
    )
    kept = PairFilter.from_json(record.pair_filter)
    if kept.active:
        message.pair_filter.CopyFrom(
            resources_pb2.PairFilter(min_quality=kept.min_quality, reviewed_only=kept.reviewed_only)
        )
    spec = split_from_json(record.split_spec)
    if spec is not None:
        message.split.CopyFrom(split_options(spec))
    if record.description is not None:
        message.description = record.description
    if record.stale_conversation_count is not None:
        message.stale_conversation_count = record.stale_conversation_count
    message.auto_refresh = record.auto_refresh
    message.refresh_attempts = record.refresh_attempts
    message.refresh_error = record.refresh_error or ""
    if record.refresh_after is not None:
        message.next_refresh_time.CopyFrom(timestamp(record.refresh_after))
    if record.version > 0:
        message.quality_summary.CopyFrom(
            resources_pb2.QualitySummary(
                avg_quality_score=_score(record.avg_quality_score),
                min_quality_score=_score(record.min_quality_score),
                max_quality_score=_score(record.max_quality_score),
                human_reviewed_count=record.human_reviewed_count,
            )
        )
        distribution = record.scaffolding_distribution
        message.scaffolding_distribution.CopyFrom(
            resources_pb2.ScaffoldingDistribution(
                personas=distribution.get("personas", {}),
                emotional_arcs=distribution.get("emotional_arcs", {}),
                training_topics=distribution.get("training_topics", {}),
            )
        )
    return message


# Converted rows kept by row version (as bytes: a message put into a reply is copied).
_KEPT: OrderedDict[tuple[UUID, int, bool], bytes] = OrderedDict()
_KEPT_CAPACITY = 1024


def kept_file(record: TrainingFileRecord) -> resources_pb2.TrainingFile:
    """`training_file` of a row read from the database, converted once per row version
    (its migration; reads.py, `ListedRows`): parsing the kept bytes costs a fifth of
    converting the row. The stale count, computed for each Get, is set afterwards."""
    if record.row_version is None:
        return training_file(record)
    key = (record.id, record.row_version, bool(record.outputs))
    data = _KEPT.get(key)
    if data is None:
        as_stored = dataclasses.replace(record, stale_conversation_count=None)
        data = training_file(as_stored).SerializeToString()
        _KEPT[key] = data
        if len(_KEPT) > _KEPT_CAPACITY:
            _KEPT.popitem(last=False)
    else:
        _KEPT.move_to_end(key)
    message = resources_pb2.TrainingFile.FromString(data)
    if record.stale_conversation_count is not None:
        message.stale_conversation_count = record.stale_conversation_count
    return message


def progress(event: Progress) -> service_pb2.TrainingFileProgress:
    message = service_pb2.TrainingFileProgress(
        stage=_STAGE_TO_PROTO[event.stage],
        done=event.done,
        total=event.total,
        training_file_id=str(event.training_file_id),
        warnings=[
            service_pb2.ProgressWarning(
                code=w.code, message=w.message, conversation_ids=list(w.conversation_ids)
            )
            for w in event.warnings
        ],
    )
    if event.training_file is not None:
        message.training_file.CopyFrom(training_file(event.training_file))
    return message


def status_filter(value: int) -> Status | None:
    if value == resources_pb2.TRAINING_FILE_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_FROM_PROTO:
        raise InvalidArgument.field("status", f"unknown status value {value}", "UNKNOWN_ENUM_VALUE")
    return _STATUS_FROM_PROTO[value]


def file_format(value: int) -> Format | None:
    if value == resources_pb2.FILE_FORMAT_UNSPECIFIED:
        return None
    fmt = formats.by_proto(value)
    if fmt is None:
        raise InvalidArgument.field("format", f"unknown format value {value}", "UNKNOWN_ENUM_VALUE")
    return fmt


def full_view(value: int) -> bool:
    """Whether a list returns the FULL view (outputs included); BASIC by default."""
    if value not in (
        resources_pb2.TRAINING_FILE_VIEW_UNSPECIFIED,
        resources_pb2.TRAINING_FILE_VIEW_BASIC,
        resources_pb2.TRAINING_FILE_VIEW_FULL,
    ):
        raise InvalidArgument.field("view", f"unknown view value {value}", "UNKNOWN_ENUM_VALUE")
    return value == resources_pb2.TRAINING_FILE_VIEW_FULL


def split(value: int) -> Split | None:
    if value == resources_pb2.SPLIT_UNSPECIFIED:
        return None
    if value not in _SPLIT_FROM_PROTO:
        raise InvalidArgument.field("split", f"unknown split value {value}", "UNKNOWN_ENUM_VALUE")
    return _SPLIT_FROM_PROTO[value]


def requested_formats(values: Sequence[int], *, export: bool = False) -> list[Format]:
    """The formats a build or export asks for; every problem is reported at once.

    An export needs at least one, and only trainer formats: the v4 outputs are the
    file itself, which it renders from.
    """
    if export and not values:
        raise InvalidArgument.field("formats", "name at least one format", "REQUIRED")
    chosen: list[Format] = []
    violations = []
    first: dict[int, int] = {}
    for index, value in enumerate(values):
        where = f"formats[{index}]"
        fmt = formats.by_proto(value)
        if value in first:
            violations.append(
                Violation(where, "DUPLICATE_FORMAT", f"duplicate of formats[{first[value]}]")
            )
        elif fmt is None:
            reason = "REQUIRED" if value == 0 else "UNKNOWN_ENUM_VALUE"
            violations.append(Violation(where, reason, f"not a format one can ask for: {value}"))
        elif fmt is formats.CARD:
            violations.append(
                Violation(where, "NOT_REQUESTABLE", "the dataset card is always produced")
            )
        elif export and not fmt.splittable:
            violations.append(
                Violation(where, "NOT_REQUESTABLE", "the v4 outputs are what exports read")
            )
        else:
            chosen.append(fmt)
        first.setdefault(value, index)
    if violations:
        raise InvalidArgument(
            f"{len(violations)} problem(s) with formats: "
            + "; ".join(f"{v.subject}: {v.description}" for v in violations[:5]),
            violations,
        )
    return chosen


def split_spec(options: resources_pb2.SplitOptions | None) -> SplitSpec | None:
    """A requested split, checked (INVALID_ARGUMENT names the field at fault)."""
    if options is None:
        return None
    size = options.WhichOneof("size")
    if size is None:
        raise InvalidArgument.field(
            "split.validation_fraction",
            "a split needs validation_fraction or validation_count",
            "REQUIRED",
        )
    stratify = _STRATIFY_FROM_PROTO.get(options.stratify)
    if stratify is None:
        raise InvalidArgument.field(
            "split.stratify", f"unknown value {options.stratify}", "UNKNOWN_ENUM_VALUE"
        )
    try:
        return SplitSpec(
            validation_fraction=options.validation_fraction
            if size == "validation_fraction"
            else None,
            validation_count=options.validation_count if size == "validation_count" else None,
            seed=options.seed,
            stratify=stratify,
        )
    except SplitError as exc:
        raise InvalidArgument.field(exc.field, str(exc), "INVALID_SPLIT") from None


def selector(message: service_pb2.ConversationSelector | None) -> Selector | None:
    """A requested selector, checked: every malformed field is named at once."""
    if message is None:
        return None
    problems: list[Violation] = []

    def ids(field: str, values: Sequence[str]) -> tuple[UUID, ...]:
        parsed = []
        for index, value in enumerate(values):
            try:
                parsed.append(UUID(value))
            except ValueError:
                problems.append(
                    Violation(f"selector.{field}[{index}]", "MALFORMED_ID", f"{value[:64]!r}")
                )
        return tuple(parsed)

    owner = None
    if message.owner:
        try:
            owner = UUID(message.owner)
        except ValueError:
            problems.append(Violation("selector.owner", "MALFORMED_ID", "not a UUID"))
    document_filter = None
    try:
        document_filter = DocumentFilter(
            message.min_average_quality, message.human_reviewed_only, frozenset(message.emotions)
        )
    except ValueError:
        problems.append(
            Violation("selector.min_average_quality", "INVALID_FIELD", "a finite number, 0 or more")
        )
    for index, emotion in enumerate(message.emotions):
        if not emotion:
            problems.append(Violation(f"selector.emotions[{index}]", "INVALID_FIELD", "empty"))
    chosen = Selector(
        persona_ids=ids("persona_ids", message.persona_ids),
        emotional_arc_ids=ids("emotional_arc_ids", message.emotional_arc_ids),
        training_topic_ids=ids("training_topic_ids", message.training_topic_ids),
        created_after=message.created_after.ToDatetime(tzinfo=UTC)
        if message.HasField("created_after")
        else None,
        created_before=message.created_before.ToDatetime(tzinfo=UTC)
        if message.HasField("created_before")
        else None,
        owner=owner,
        limit=message.limit,
        document_filter=document_filter if document_filter and document_filter.active else None,
    )
    if message.limit < 0:
        problems.append(Violation("selector.limit", "INVALID_FIELD", "0 or more"))
    if problems:
        raise InvalidArgument(f"{len(problems)} invalid selector field(s)", problems)
    return chosen


def pair_filter(message: resources_pb2.PairFilter | None) -> PairFilter | None:
    """A requested pair filter, checked; None when none was sent."""
    if message is None:
        return None
    try:
        return PairFilter(message.min_quality, message.reviewed_only)
    except ValueError:
        raise InvalidArgument.field(
            "pair_filter.min_quality", "a finite number, 0 or more", "INVALID_FIELD"
        ) from None


def split_options(spec: SplitSpec) -> resources_pb2.SplitOptions:
    message = resources_pb2.SplitOptions(seed=spec.seed, stratify=_STRATIFY_TO_PROTO[spec.stratify])
    if spec.validation_fraction is not None:
        message.validation_fraction = spec.validation_fraction
    if spec.validation_count is not None:
        message.validation_count = spec.validation_count
    return message


_OUTPUT_ORDER = {name: i for i, name in enumerate([*formats.FORMATS, formats.CARD.name])}
_SPLIT_ORDER = {split: i for i, split in enumerate(Split)}


def _in_registry_order(outputs: Sequence[OutputRecord]) -> list[OutputRecord]:
    return sorted(
        outputs,
        key=lambda o: (_OUTPUT_ORDER.get(o.format, len(_OUTPUT_ORDER)), _SPLIT_ORDER[o.split]),
    )


def output(record: OutputRecord, name: str) -> resources_pb2.TrainingFileOutput:
    fmt = formats.by_name(record.format)
    assert fmt is not None
    return resources_pb2.TrainingFileOutput(
        format=fmt.proto_value,  # type: ignore[arg-type]
        split=_SPLIT_TO_PROTO[record.split],
        object_key=record.object_key,
        size_bytes=record.size_bytes,
        record_count=record.record_count,
        content_type=record.content_type,
        sha256=record.sha256 or "",
        file_name=formats.file_name(name, fmt, record.split.value),
    )


def file_conversation(row: FileConversation) -> resources_pb2.TrainingFileConversation:
    return resources_pb2.TrainingFileConversation(
        conversation_id=str(row.conversation_id),
        added_at=timestamp(row.added_at),
        added_by=str(row.added_by) if row.added_by else "",
        training_pair_count=row.training_pair_count,
        quality_score=_quality(row.quality_score),
        human_reviewed=row.human_reviewed,
        persona_key=row.persona_key,
        emotional_arc_key=row.emotional_arc_key,
        training_topic_key=row.training_topic_key,
    )


def _id(value: object) -> str:
    return str(value) if value is not None else ""


def eligible_conversation(row: EligibleConversation) -> resources_pb2.EligibleConversation:
    message = resources_pb2.EligibleConversation(
        conversation_id=str(row.conversation_id),
        persona_id=_id(row.persona_id),
        emotional_arc_id=_id(row.emotional_arc_id),
        training_topic_id=_id(row.training_topic_id),
        created_by=_id(row.created_by),
        created_at=timestamp(row.created_at),
    )
    if row.quality_score is not None:
        message.quality_score = _quality(row.quality_score)
    if row.training_pair_count is not None:
        message.training_pair_count = row.training_pair_count
    return message


def download_url(url: DownloadUrl) -> service_pb2.GetDownloadUrlResponse:
    return service_pb2.GetDownloadUrlResponse(
        url=url.url,
        expire_time=timestamp(url.expire_time),
        format=_format_proto(url.format),
        size_bytes=url.size_bytes,
        file_name=url.file_name,
        split=_SPLIT_TO_PROTO[url.split],
        sha256=url.sha256 or "",
        version=url.version,
    )


_REASON_TO_PROTO = {
    VersionReason.CREATED: resources_pb2.VERSION_REASON_CREATED,
    VersionReason.ADDED: resources_pb2.VERSION_REASON_ADDED,
    VersionReason.RECORDED: resources_pb2.VERSION_REASON_RECORDED,
    VersionReason.REMOVED: resources_pb2.VERSION_REASON_REMOVED,
    VersionReason.REFRESHED: resources_pb2.VERSION_REASON_REFRESHED,
}


def training_file_version(
    record: VersionRecord, name: str, current: int
) -> resources_pb2.TrainingFileVersion:
    message = resources_pb2.TrainingFileVersion(
        version=record.version,
        reason=_REASON_TO_PROTO[record.reason],
        change_count=record.change_count,
        created_by=_id(record.created_by),
        create_time=timestamp(record.created_at),
        conversation_count=record.conversation_count,
        total_training_pairs=record.total_training_pairs,
        human_reviewed_count=record.human_reviewed_count,
        duplicate_pair_count=record.duplicate_pair_count,
        untrainable_pair_count=record.untrainable_pair_count,
        outputs=[output(o, name) for o in _in_registry_order(record.outputs)],
        pruned=record.pruned_at is not None,
        current=record.version == current,
        excluded_pair_count=record.excluded_pair_count,
        filtered_out_conversation_count=record.filtered_out_conversation_count,
    )
    if record.avg_quality_score is not None:
        message.avg_quality_score = _score(record.avg_quality_score)
    if record.min_quality_score is not None:
        message.min_quality_score = _score(record.min_quality_score)
    if record.max_quality_score is not None:
        message.max_quality_score = _score(record.max_quality_score)
    if record.pruned_at is not None:
        message.prune_time.CopyFrom(timestamp(record.pruned_at))
    return message


def _format_proto(name: str) -> resources_pb2.FileFormat.ValueType:
    fmt = formats.by_name(name)
    assert fmt is not None
    return resources_pb2.FileFormat.ValueType(fmt.proto_value)


def conversation_problem(violation: Violation) -> service_pb2.ConversationProblem:
    return service_pb2.ConversationProblem(
        subject=violation.subject, reason=violation.reason, description=violation.description
    )


_DIMENSION_TO_PROTO = {
    analytics.PERSONA: analytics_pb2.ANALYTICS_DIMENSION_PERSONA,
    analytics.EMOTIONAL_ARC: analytics_pb2.ANALYTICS_DIMENSION_EMOTIONAL_ARC,
    analytics.TRAINING_TOPIC: analytics_pb2.ANALYTICS_DIMENSION_TRAINING_TOPIC,
    analytics.EMOTION: analytics_pb2.ANALYTICS_DIMENSION_EMOTION,
}


def training_file_analytics(
    file_id: UUID, version: int, figures: analytics.Analytics
) -> analytics_pb2.TrainingFileAnalytics:
    message = analytics_pb2.TrainingFileAnalytics(
        training_file_id=str(file_id),
        version=version,
        conversation_count=figures.conversation_count,
        total_training_pairs=figures.total_training_pairs,
        distributions=[
            analytics_pb2.Distribution(
                dimension=_DIMENSION_TO_PROTO[d.dimension],
                buckets=[
                    analytics_pb2.DistributionBucket(key=b.key, count=b.count, share=b.share)
                    for b in d.buckets
                ],
                total=d.total,
                normalized_entropy=d.normalized_entropy,
                largest_to_smallest_ratio=d.largest_to_smallest_ratio,
            )
            for d in figures.distributions
        ],
        quality=analytics_pb2.QualityHistogram(
            bins=[
                analytics_pb2.HistogramBin(lower=b.lower, upper=b.upper, count=b.count)
                for b in figures.quality_bins
            ],
            reviewed_count=figures.reviewed_count,
            reviewed_share=figures.reviewed_share,
        ),
        pairs_per_conversation=[
            analytics_pb2.PairCountBucket(pair_count=pairs, conversation_count=count)
            for pairs, count in figures.pairs_per_conversation
        ],
    )
    stats = figures.tokens
    if stats is not None:
        message.tokens.CopyFrom(
            analytics_pb2.TokenStatistics(
                tokenizer=stats.tokenizer,
                counted_pairs=stats.counted_pairs,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                total_tokens=stats.total_tokens,
                mean_pair_tokens=stats.mean_pair_tokens,
                p5_pair_tokens=stats.p5_pair_tokens,
                p50_pair_tokens=stats.p50_pair_tokens,
                p95_pair_tokens=stats.p95_pair_tokens,
                max_pair_tokens=stats.max_pair_tokens,
                pairs_over_context=[
                    analytics_pb2.ContextLengthCount(context_length=length, pair_count=count)
                    for length, count in stats.pairs_over_context
                ],
                training_tokens_per_epoch=stats.training_tokens_per_epoch,
            )
        )
    return message
