"""Domain records exchanged between the database module, the operations and the servicer."""

from __future__ import annotations

import dataclasses
import enum
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from .aggregate import ConversationSummary, Warning
from .errors import InvalidArgument, PermissionDenied
from .filters import DocumentFilter

Role = Literal["authenticated", "service_role"]


class Status(enum.StrEnum):
    PROCESSING = "processing"
    ACTIVE = "active"
    ARCHIVED = "archived"
    FAILED = "failed"


class Stage(enum.Enum):
    VALIDATING = enum.auto()
    FETCHING = enum.auto()
    AGGREGATING = enum.auto()
    UPLOADING = enum.auto()
    SAVING = enum.auto()
    RENDERING = enum.auto()


class Split(enum.StrEnum):
    """The part of a file an output holds."""

    ALL = "all"
    TRAIN = "train"
    VALIDATION = "validation"


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One `training_file_outputs` row: a stored object of one version of a file."""

    format: str  # a registry name (formats.FORMATS, or the card)
    split: Split
    object_key: str
    size_bytes: int
    record_count: int
    content_type: str
    sha256: str | None


@dataclass(frozen=True, slots=True)
class TrainingFileRecord:
    """One `training_files` row."""

    id: UUID
    name: str
    description: str | None
    status: Status
    storage_bucket: str
    json_file_path: str | None
    jsonl_file_path: str | None
    conversation_count: int
    total_training_pairs: int
    json_file_size: int
    jsonl_file_size: int
    avg_quality_score: Decimal | None
    min_quality_score: Decimal | None
    max_quality_score: Decimal | None
    human_reviewed_count: int
    scaffolding_distribution: dict[str, dict[str, int]]
    vertical: str | None
    consultant_profile: str | None  # JSON text, exactly as written into the document
    error_message: str | None
    version: int
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    # The build settings every version keeps, and what the current version's build found.
    output_formats: list[str]
    split_spec: dict[str, Any] | None
    drop_duplicates: bool
    duplicate_pair_count: int
    untrainable_pair_count: int
    outputs: tuple[OutputRecord, ...] = ()
    # Automatic refresh: opted in, failed attempts in a row, the last one's reason, and
    # when the next one may start.
    auto_refresh: bool = False
    refresh_attempts: int = 0
    refresh_error: str | None = None
    refresh_after: datetime | None = None
    # The pair filter of every version (`filters.PairFilter.to_json`), and what the
    # current version's build left out of the documents it read.
    pair_filter: dict[str, Any] | None = None
    excluded_pair_count: int = 0
    filtered_out_conversation_count: int = 0
    # Current members whose conversation changed since their build; set by a Get only.
    stale_conversation_count: int | None = None
    # Moves on with every change of the row or its outputs (its migration); None for a
    # record not read from the database.
    row_version: int | None = None

    def output(self, format_name: str, split: Split) -> OutputRecord | None:
        return next((o for o in self.outputs if o.format == format_name and o.split is split), None)


class VersionReason(enum.StrEnum):
    CREATED = "created"
    ADDED = "added"
    REMOVED = "removed"
    REFRESHED = "refreshed"
    RECORDED = "recorded"  # existed before versions were recorded


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One `training_file_versions` row, with its outputs: a version as it was built."""

    training_file_id: UUID
    version: int
    reason: VersionReason
    change_count: int
    created_by: UUID | None
    created_at: datetime
    conversation_count: int
    total_training_pairs: int
    avg_quality_score: Decimal | None
    min_quality_score: Decimal | None
    max_quality_score: Decimal | None
    human_reviewed_count: int
    scaffolding_distribution: dict[str, dict[str, int]]
    duplicate_pair_count: int
    untrainable_pair_count: int
    pruned_at: datetime | None
    outputs: tuple[OutputRecord, ...] = ()
    excluded_pair_count: int = 0
    filtered_out_conversation_count: int = 0

    def describe(self, file: TrainingFileRecord) -> TrainingFileRecord:
        """`file` as it was at this version: its counts, metrics, outputs and paths."""
        json_output = next((o for o in self.outputs if o.format == "v4_json"), None)
        jsonl_output = next((o for o in self.outputs if o.format == "v4_jsonl"), None)
        return dataclasses.replace(
            file,
            version=self.version,
            conversation_count=self.conversation_count,
            total_training_pairs=self.total_training_pairs,
            avg_quality_score=self.avg_quality_score,
            min_quality_score=self.min_quality_score,
            max_quality_score=self.max_quality_score,
            human_reviewed_count=self.human_reviewed_count,
            scaffolding_distribution=self.scaffolding_distribution,
            duplicate_pair_count=self.duplicate_pair_count,
            untrainable_pair_count=self.untrainable_pair_count,
            excluded_pair_count=self.excluded_pair_count,
            filtered_out_conversation_count=self.filtered_out_conversation_count,
            json_file_path=json_output.object_key if json_output else None,
            jsonl_file_path=jsonl_output.object_key if jsonl_output else None,
            json_file_size=json_output.size_bytes if json_output else 0,
            jsonl_file_size=jsonl_output.size_bytes if jsonl_output else 0,
            outputs=self.outputs,
            row_version=None,  # not the row as it is: nothing may keep it as such
        )


class Provenance:
    """Which document each fetched conversation was built from, in add order: its key,
    ETag and Last-Modified time. Stored by column (~90 bytes each) for the commit."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.etags: list[str | None] = []
        self._modified = array("d")  # POSIX seconds; NaN: unknown

    def append(self, key: str, etag: str | None, modified: datetime | None) -> None:
        self.keys.append(key)
        self.etags.append(etag)
        self._modified.append(modified.timestamp() if modified else float("nan"))

    @property
    def modified(self) -> list[datetime | None]:
        return [
            None if m != m else datetime.fromtimestamp(m, UTC)  # NaN is unknown
            for m in self._modified
        ]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class Selector:
    """Conversations chosen by what the `conversations` table says of them."""

    persona_ids: tuple[UUID, ...] = ()
    emotional_arc_ids: tuple[UUID, ...] = ()
    training_topic_ids: tuple[UUID, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    owner: UUID | None = None
    limit: int = 0
    # Judged on each selected conversation's document by the build (`filters.py`).
    document_filter: DocumentFilter | None = None

    def key(self) -> str:
        """A stable text of the selector (page tokens are tied to it)."""
        return "|".join(
            [
                ",".join(map(str, self.persona_ids)),
                ",".join(map(str, self.emotional_arc_ids)),
                ",".join(map(str, self.training_topic_ids)),
                self.created_after.isoformat() if self.created_after else "",
                self.created_before.isoformat() if self.created_before else "",
                str(self.owner or ""),
            ]
        )


@dataclass(frozen=True, slots=True)
class CandidateConversation:
    """A requested conversation as the database knows it (None fields: unknown id)."""

    conversation_id: UUID
    known: bool
    enrichment_status: str | None
    enriched_file_path: str | None
    created_by: UUID | None
    in_file: bool
    persona_id: UUID | None = None
    training_topic_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class FileConversation:
    """One `training_file_conversations` row."""

    conversation_id: UUID
    position: int
    added_at: datetime
    added_by: UUID | None
    training_pair_count: int
    quality_score: float
    human_reviewed: bool
    persona_key: str
    emotional_arc_key: str
    training_topic_key: str


@dataclass(frozen=True, slots=True)
class EligibleConversation:
    conversation_id: UUID
    persona_id: UUID | None
    emotional_arc_id: UUID | None
    training_topic_id: UUID | None
    created_by: UUID | None
    created_at: datetime
    # Known once a build (without a pair filter) has read its current document.
    quality_score: float | None = None
    training_pair_count: int | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress event of a Create or Add stream."""

    stage: Stage
    done: int
    total: int
    training_file_id: UUID
    warnings: list[Warning] = field(default_factory=list)
    training_file: TrainingFileRecord | None = None


@dataclass(frozen=True, slots=True)
class DownloadUrl:
    url: str
    expire_time: datetime
    format: str  # a registry name
    split: Split
    size_bytes: int
    file_name: str
    sha256: str | None
    version: int


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified caller. `user_id` is None only for a service acting for the system."""

    role: Role = "service_role"
    user_id: UUID | None = None

    @property
    def is_service(self) -> bool:
        return self.role == "service_role"

    def owner_for(self, on_behalf_of: str) -> UUID | None:
        """Whom a new file belongs to: the user, or the user a service names."""
        if not on_behalf_of:
            return self.user_id
        try:
            named = UUID(on_behalf_of)
        except ValueError:
            raise InvalidArgument.field(
                "on_behalf_of", "must be a user id (UUID)", "MALFORMED_ID"
            ) from None
        if self.is_service or named == self.user_id:
            return named
        raise PermissionDenied(
            "only service_role callers may act on behalf of another user",
            reason="ON_BEHALF_OF_NOT_ALLOWED",
        )

    def sees_everything(self) -> bool:
        return self.is_service


@dataclass(frozen=True, slots=True)
class StagedMember:
    """One new member as the commit inserts it: its summary, digests and provenance."""

    summary: ConversationSummary
    digests: bytes
    pair_ids: str  # one a line, in pair order (to name the first duplicates)
    document_key: str
    document_etag: str | None
    document_modified: datetime | None


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """A conversation of a file as an Add or an export needs it: no document is read."""

    summary: ConversationSummary
    digests: bytes | None  # its pairs' duplicate digests; None if added before they were kept
    persona_id: UUID | None
    training_topic_id: UUID | None
