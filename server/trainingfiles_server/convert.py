"""Conversions between protobuf messages and domain records: the only place that does it."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from google.protobuf import timestamp_pb2

from trainingfiles.v1 import resources_pb2, service_pb2

from .errors import InvalidArgument, Violation
from .models import (
    DownloadUrl,
    EligibleConversation,
    FileConversation,
    FileFormat,
    Progress,
    Stage,
    Status,
    TrainingFileRecord,
)

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
}
_FORMAT_TO_PROTO = {
    FileFormat.JSON: resources_pb2.FILE_FORMAT_JSON,
    FileFormat.JSONL: resources_pb2.FILE_FORMAT_JSONL,
}
_FORMAT_FROM_PROTO: dict[int, FileFormat] = {int(v): k for k, v in _FORMAT_TO_PROTO.items()}


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


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
    )
    if record.description is not None:
        message.description = record.description
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


def file_format(value: int) -> FileFormat | None:
    if value == resources_pb2.FILE_FORMAT_UNSPECIFIED:
        return None
    if value not in _FORMAT_FROM_PROTO:
        raise InvalidArgument.field("format", f"unknown format value {value}", "UNKNOWN_ENUM_VALUE")
    return _FORMAT_FROM_PROTO[value]


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
    return resources_pb2.EligibleConversation(
        conversation_id=str(row.conversation_id),
        persona_id=_id(row.persona_id),
        emotional_arc_id=_id(row.emotional_arc_id),
        training_topic_id=_id(row.training_topic_id),
        created_by=_id(row.created_by),
        created_at=timestamp(row.created_at),
    )


def download_url(url: DownloadUrl) -> service_pb2.GetDownloadUrlResponse:
    return service_pb2.GetDownloadUrlResponse(
        url=url.url,
        expire_time=timestamp(url.expire_time),
        format=_FORMAT_TO_PROTO[url.format],
        size_bytes=url.size_bytes,
        file_name=url.file_name,
    )


def conversation_problem(violation: Violation) -> service_pb2.ConversationProblem:
    return service_pb2.ConversationProblem(
        subject=violation.subject, reason=violation.reason, description=violation.description
    )
