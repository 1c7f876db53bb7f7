"""The request rules: what a valid request is, and which conversations may be used.

Pure functions over plain values (no I/O): argument checks report every problem of a
request at once, eligibility checks every unusable conversation with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from .errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Violation,
)
from .filters import PairFilter
from .models import Caller, CandidateConversation, Selector, TrainingFileRecord

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
MAX_DESCRIPTION = 2000
DEFAULT_URL_EXPIRY = 3600
MIN_URL_EXPIRY, MAX_URL_EXPIRY = 60, 604_800


def parse_uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidArgument.field(
            field, f"{value[:64]!r} is not a UUID", "MALFORMED_ID"
        ) from None


def check_ids(
    ids: Sequence[str], limit: int, other: Sequence[Violation] = (), *, required: bool = True
) -> list[UUID]:
    """Parse the requested ids; every malformed or repeated one is reported.

    `other` holds the request's other argument problems (name, file id, ...): they are
    reported in the same `InvalidArgument`, so the caller hears of every problem at once.
    Without `required` (a selector chooses conversations too) no id is fine.
    """
    violations = list(other)
    check_count(ids, limit, violations)
    parsed, problems = id_violations(ids)
    if not required:
        problems = [p for p in problems if p.reason != "REQUIRED"]
    violations.extend(problems)
    if violations:
        raise invalid(violations)
    return parsed


def check_count(ids: Sequence[str], limit: int, other: Sequence[Violation] = ()) -> None:
    """More ids than `limit` is RESOURCE_EXHAUSTED, unless other arguments are invalid."""
    if len(ids) > limit:
        if other:
            raise invalid(other)
        raise ResourceExhausted(
            f"{len(ids)} conversation ids exceed the limit of {limit} per request",
            "conversation_ids",
            reason="TOO_MANY_CONVERSATIONS",
        )


def id_violations(ids: Sequence[str]) -> tuple[list[UUID], list[Violation]]:
    """The distinct well-formed ids in order, and a violation per empty, bad or repeated one."""
    violations = []
    if not ids:
        violations.append(
            Violation("conversation_ids", "REQUIRED", "at least one conversation id is required")
        )
    parsed: list[UUID] = []
    first_seen: dict[UUID, int] = {}
    for index, raw in enumerate(ids):
        field = f"conversation_ids[{index}]"
        try:
            value = UUID(raw)
        except ValueError:
            violations.append(Violation(field, "MALFORMED_ID", f"{raw[:64]!r} is not a UUID"))
            continue
        if value in first_seen:
            violations.append(
                Violation(
                    field, "DUPLICATE_ID", f"duplicate of conversation_ids[{first_seen[value]}]"
                )
            )
            continue
        first_seen[value] = index
        parsed.append(value)
    return parsed, violations


def invalid(violations: Sequence[Violation]) -> InvalidArgument:
    return InvalidArgument(
        f"{len(violations)} invalid argument(s): "
        + "; ".join(f"{v.subject}: {v.description}" for v in violations[:10])
        + (" …" if len(violations) > 10 else ""),
        violations,
    )


def uuid_violations(value: str, field: str) -> list[Violation]:
    try:
        UUID(value)
    except ValueError:
        return [Violation(field, "MALFORMED_ID", f"{value[:64]!r} is not a UUID")]
    return []


def check_name(name: str, description: str | None) -> list[Violation]:
    violations = []
    if not NAME_PATTERN.fullmatch(name):
        violations.append(
            Violation(
                "name",
                "INVALID_NAME",
                "must be 1 to 128 characters of [A-Za-z0-9_.-] and not start with '.'",
            )
        )
    if description is not None and len(description) > MAX_DESCRIPTION:
        violations.append(
            Violation("description", "TOO_LONG", f"must be at most {MAX_DESCRIPTION} characters")
        )
    elif description is not None and "\x00" in description:
        # PostgreSQL text cannot hold U+0000; any other Unicode is kept as written.
        violations.append(
            Violation("description", "INVALID_CHARACTER", "must not contain NUL characters")
        )
    return violations


def ineligible(candidates: Sequence[CandidateConversation], owner: UUID | None) -> list[Violation]:
    """Every unusable conversation with its first problem; `owner` (if any) must own each."""
    violations = []
    for c in candidates:
        subject = str(c.conversation_id)
        if not c.known or (owner is not None and c.created_by != owner):
            violations.append(Violation(subject, "CONVERSATION_NOT_FOUND", "no such conversation"))
        elif c.enrichment_status != "completed":
            violations.append(
                Violation(
                    subject,
                    "CONVERSATION_NOT_ENRICHED",
                    f"enrichment_status is {c.enrichment_status!r}, not 'completed'",
                )
            )
        elif not c.enriched_file_path:
            violations.append(
                Violation(subject, "CONVERSATION_NO_ENRICHED_FILE", "no enriched file is recorded")
            )
        elif c.in_file:
            violations.append(
                Violation(subject, "CONVERSATION_ALREADY_IN_FILE", "already in the training file")
            )
    return violations


def reject_ineligible(violations: list[Violation]) -> None:
    if violations:
        raise FailedPrecondition(
            f"{len(violations)} conversation(s) cannot be used: "
            + "; ".join(f"{v.subject}: {v.description}" for v in violations[:10])
            + (" …" if len(violations) > 10 else ""),
            violations,
            reason="CONVERSATIONS_NOT_ELIGIBLE",
        )


def selection_owner(caller: Caller, file_owner: UUID | None, selector: Selector) -> UUID | None:
    """Whose conversations a selector may choose: the file's owner's (a user's file is
    theirs), else, for a service building a system file, the selector's owner (None:
    anyone's)."""
    if selector.owner is not None and selector.owner != (file_owner or selector.owner):
        raise PermissionDenied(
            "a selector chooses the file owner's conversations only",
            reason="SELECTOR_OWNER_NOT_ALLOWED",
        )
    if file_owner is None and selector.owner is not None and not caller.is_service:
        raise PermissionDenied(
            "only service_role callers may select another owner's conversations",
            reason="SELECTOR_OWNER_NOT_ALLOWED",
        )
    return file_owner or selector.owner


def nothing_selected() -> FailedPrecondition:
    """A build's selector chose nothing and no id was listed."""
    return FailedPrecondition(
        "the selector matched no eligible conversation and no id was listed",
        [Violation("selector", "NO_CONVERSATIONS_SELECTED", "nothing matched")],
        reason="NO_CONVERSATIONS_SELECTED",
    )


def reject_pair_filter(requested: PairFilter | None, files: PairFilter) -> None:
    """An Add's pair filter, when it names one, must be the file's (fixed by its Create)."""
    if requested is not None and requested != files:
        raise FailedPrecondition(
            "the pair filter differs from the training file's; it is fixed when the file "
            "is created (leave it unset to apply the file's)",
            [Violation("pair_filter", "PAIR_FILTER_MISMATCH", "not the file's pair filter")],
            reason="PAIR_FILTER_MISMATCH",
        )


def removal_violations(requested: Sequence[UUID], members: set[str]) -> list[Violation]:
    """Every requested conversation that is not a member, and removing all of them."""
    violations = [
        Violation(str(c), "CONVERSATION_NOT_IN_FILE", "not in the training file")
        for c in requested
        if str(c) not in members
    ]
    if not violations and len(requested) == len(members):
        violations.append(
            Violation(
                "conversation_ids",
                "WOULD_EMPTY_FILE",
                f"removing all {len(members)} conversations would leave the file empty; "
                "archive it instead",
            )
        )
    return violations


def reject_removal(violations: list[Violation]) -> None:
    if violations:
        raise FailedPrecondition(
            f"{len(violations)} conversation(s) cannot be removed: "
            + "; ".join(f"{v.subject}: {v.description}" for v in violations[:10])
            + (" …" if len(violations) > 10 else ""),
            violations,
            reason=violations[0].reason
            if violations[0].reason == "WOULD_EMPTY_FILE"
            else "CONVERSATIONS_NOT_IN_FILE",
        )


def key_base(file_id: UUID, name: str, moment: datetime) -> str:
    """`<id>/<name>_<YYYYMMDDTHHMMSSZ>`: the validated name cannot leave the file's prefix.

    A microsecond suffix keeps two versions written within one second apart.
    """
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    base = f"{file_id}/{name}_{stamp}"
    if moment.microsecond:
        base += f"-{moment.microsecond:06d}"
    return base


def object_keys(file_id: UUID, name: str, moment: datetime) -> tuple[str, str]:
    """The v4 outputs' keys: `<key_base>.json` and `<key_base>.jsonl`."""
    base = key_base(file_id, name, moment)
    return f"{base}.json", f"{base}.jsonl"


def not_active(record: TrainingFileRecord, why: str) -> FailedPrecondition:
    """The file's status does not allow the operation (`why` says what it would need)."""
    status = record.status.value
    return FailedPrecondition(
        f"training file {record.id} is {status}; {why}",
        [Violation(str(record.id), "TRAINING_FILE_NOT_ACTIVE", f"status is {status}")],
        reason="TRAINING_FILE_NOT_ACTIVE",
    )


def bad_document(conversation_id: str, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"conversation {conversation_id}: {reason}",
        [Violation(conversation_id, "ENRICHED_DOCUMENT_INVALID", reason)],
        reason="ENRICHED_DOCUMENT_INVALID",
    )


def url_expiry(expires_in: int | None) -> int:
    """A download link's lifetime in seconds: the default, or the requested one if allowed."""
    seconds = DEFAULT_URL_EXPIRY if expires_in is None else expires_in
    if not MIN_URL_EXPIRY <= seconds <= MAX_URL_EXPIRY:
        raise InvalidArgument.field(
            "expires_in",
            f"must be between {MIN_URL_EXPIRY} and {MAX_URL_EXPIRY} seconds",
            "OUT_OF_RANGE",
        )
    return seconds


def visible(caller: Caller, record: TrainingFileRecord | None, file_id: UUID) -> TrainingFileRecord:
    """The file if the caller may see it; someone else's file is simply not found."""
    if record is None or (caller.user_id is not None and record.created_by != caller.user_id):
        raise NotFound("training_file", str(file_id))
    return record
