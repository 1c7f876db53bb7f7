"""The request rules (rules.py), without a server: every rule, and every message, violation
and reason a caller sees when one is broken."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from trainingfiles_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Violation,
)
from trainingfiles_server.models import CandidateConversation, Status, TrainingFileRecord
from trainingfiles_server.rules import (
    bad_document,
    check_ids,
    check_name,
    ineligible,
    invalid,
    not_active,
    object_keys,
    parse_uuid,
    reject_ineligible,
    url_expiry,
    uuid_violations,
)

A = "0b5d7a52-3c1e-4f8a-9d62-7e1f0c2a4b11"
B = "f2c4e6a8-1b3d-4e5f-8a7b-9c0d1e2f3a44"
C = "6a1f3c9e-2b4d-4c8e-9f01-23456789abcd"
OWNER = UUID("00000000-0000-4000-8000-0000000000d1")
OTHER = UUID("00000000-0000-4000-8000-0000000000d2")
LONG = "z" * 100  # reported as its first 64 characters

# What every argument check says about a value that is not a UUID.
NOT_A_UUID = "'nope' is not a UUID"
LONG_NOT_A_UUID = f"'{'z' * 64}' is not a UUID"


# --- parse_uuid -------------------------------------------------------------------------


def test_parse_uuid_returns_the_uuid_of_any_spelling() -> None:
    assert parse_uuid(A, "training_file_id") == UUID(A)
    assert parse_uuid(A.upper().replace("-", ""), "training_file_id") == UUID(A)


def test_parse_uuid_names_the_field_and_the_value() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_uuid("nope", "training_file_id")

    error = caught.value
    assert error.message == f"training_file_id: {NOT_A_UUID}"
    assert str(error) == error.message
    assert error.violations == (Violation("training_file_id", "MALFORMED_ID", NOT_A_UUID),)
    assert error.reason == "INVALID_ARGUMENT"
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_parse_uuid_quotes_at_most_64_characters_of_the_value() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_uuid(LONG, "exclude_training_file_id")

    assert caught.value.violations == (
        Violation("exclude_training_file_id", "MALFORMED_ID", LONG_NOT_A_UUID),
    )


# --- uuid_violations --------------------------------------------------------------------


def test_uuid_violations_is_empty_for_a_uuid() -> None:
    assert uuid_violations(A, "training_file_id") == []


def test_uuid_violations_reports_a_malformed_value_under_its_field() -> None:
    assert uuid_violations("nope", "training_file_id") == [
        Violation("training_file_id", "MALFORMED_ID", NOT_A_UUID)
    ]
    assert uuid_violations(LONG, "f") == [Violation("f", "MALFORMED_ID", LONG_NOT_A_UUID)]


# --- check_ids --------------------------------------------------------------------------


def _invalid_ids(ids: list[str], limit: int = 10, other: list[Violation] | None = None):
    with pytest.raises(InvalidArgument) as caught:
        check_ids(ids, limit, other or ())
    return caught.value


def test_check_ids_returns_the_parsed_ids_in_request_order() -> None:
    assert check_ids([B, A, C.upper()], 10) == [UUID(B), UUID(A), UUID(C)]


def test_check_ids_accepts_exactly_the_limit() -> None:
    assert check_ids([A, B], 2) == [UUID(A), UUID(B)]


def test_check_ids_over_the_limit_is_resource_exhausted() -> None:
    with pytest.raises(ResourceExhausted) as caught:
        check_ids([A, B, C], 2)

    error = caught.value
    assert error.message == "3 conversation ids exceed the limit of 2 per request"
    assert error.subject == "conversation_ids"
    assert error.reason == "TOO_MANY_CONVERSATIONS"


def test_check_ids_over_the_limit_reports_the_other_problems_first() -> None:
    """Too many ids and a bad name: the caller hears of the name, and nothing of the ids."""
    name = Violation("name", "INVALID_NAME", "bad")

    error = _invalid_ids([A, "nope", A], limit=2, other=[name])

    assert error.violations == (name,)
    assert error.message == "1 invalid argument(s): name: bad"


def test_check_ids_requires_at_least_one_id() -> None:
    error = _invalid_ids([])

    assert error.violations == (
        Violation("conversation_ids", "REQUIRED", "at least one conversation id is required"),
    )
    assert error.message == (
        "1 invalid argument(s): conversation_ids: at least one conversation id is required"
    )
    assert error.reason == "INVALID_ARGUMENT"


def test_check_ids_reports_every_malformed_id_by_index() -> None:
    error = _invalid_ids(["nope", A, LONG, B])

    assert error.violations == (
        Violation("conversation_ids[0]", "MALFORMED_ID", NOT_A_UUID),
        Violation("conversation_ids[2]", "MALFORMED_ID", LONG_NOT_A_UUID),
    )


def test_check_ids_reports_every_repeat_as_a_duplicate_of_the_first() -> None:
    # The same UUID however it is spelled; the malformed id does not stop the checks.
    error = _invalid_ids([A, B, A.upper(), "nope", A.replace("-", ""), B])

    assert error.violations == (
        Violation("conversation_ids[2]", "DUPLICATE_ID", "duplicate of conversation_ids[0]"),
        Violation("conversation_ids[3]", "MALFORMED_ID", NOT_A_UUID),
        Violation("conversation_ids[4]", "DUPLICATE_ID", "duplicate of conversation_ids[0]"),
        Violation("conversation_ids[5]", "DUPLICATE_ID", "duplicate of conversation_ids[1]"),
    )


def test_check_ids_reports_the_other_problems_with_the_ids_in_one_error() -> None:
    other = [Violation("name", "INVALID_NAME", "bad name")]

    error = _invalid_ids([A, "nope"], other=other)

    assert error.violations == (
        Violation("name", "INVALID_NAME", "bad name"),
        Violation("conversation_ids[1]", "MALFORMED_ID", NOT_A_UUID),
    )
    assert error.message == (
        f"2 invalid argument(s): name: bad name; conversation_ids[1]: {NOT_A_UUID}"
    )
    assert other == [Violation("name", "INVALID_NAME", "bad name")]


def test_check_ids_with_valid_ids_still_reports_the_other_problems() -> None:
    other = [Violation("training_file_id", "MALFORMED_ID", NOT_A_UUID)]

    error = _invalid_ids([A], other=other)

    assert error.violations == tuple(other)


# --- invalid ----------------------------------------------------------------------------


def _violations(count: int) -> list[Violation]:
    return [Violation(f"f{i}", "R", f"d{i}") for i in range(count)]


def test_invalid_lists_up_to_ten_violations_in_its_message() -> None:
    error = invalid(_violations(10))

    assert error.message == "10 invalid argument(s): " + "; ".join(f"f{i}: d{i}" for i in range(10))
    assert error.violations == tuple(_violations(10))
    assert error.reason == "INVALID_ARGUMENT"


def test_invalid_with_more_than_ten_violations_ends_its_message_with_an_ellipsis() -> None:
    error = invalid(_violations(11))

    assert error.message == (
        "11 invalid argument(s): " + "; ".join(f"f{i}: d{i}" for i in range(10)) + " …"
    )
    assert error.violations == tuple(_violations(11))


# --- check_name -------------------------------------------------------------------------

INVALID_NAME = Violation(
    "name",
    "INVALID_NAME",
    "must be 1 to 128 characters of [A-Za-z0-9_.-] and not start with '.'",
)


@pytest.mark.parametrize(
    "name", ["a", "Z", "7", "_x", "-x", "golden-file_1.v2", "a.", "A" * 128, "a" + "." * 127]
)
def test_valid_names(name: str) -> None:
    assert check_name(name, None) == []


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", ".", "a" * 129, "a b", "a/b", "../x", "é", "a\n", "a\x00", "名前"],
)
def test_invalid_names(name: str) -> None:
    assert check_name(name, None) == [INVALID_NAME]


@pytest.mark.parametrize("description", [None, "", "x" * 2000, "Ünïcode ✓ 😬", "tab\tnewline\n"])
def test_valid_descriptions(description: str | None) -> None:
    assert check_name("a", description) == []


def test_description_longer_than_2000_characters() -> None:
    assert check_name("a", "x" * 2001) == [
        Violation("description", "TOO_LONG", "must be at most 2000 characters")
    ]


def test_description_with_nul() -> None:
    assert check_name("a", "before\x00after") == [
        Violation("description", "INVALID_CHARACTER", "must not contain NUL characters")
    ]


def test_a_too_long_description_is_not_also_reported_for_its_nul() -> None:
    assert [v.reason for v in check_name("a", "\x00" * 2001)] == ["TOO_LONG"]


def test_name_and_description_are_reported_together_name_first() -> None:
    assert [v.reason for v in check_name(".x", "\x00")] == ["INVALID_NAME", "INVALID_CHARACTER"]


# --- ineligible -------------------------------------------------------------------------


def _candidate(
    conversation_id: str = A,
    *,
    known: bool = True,
    status: str | None = "completed",
    path: str | None = "enriched/a.json",
    created_by: UUID | None = OWNER,
    in_file: bool = False,
) -> CandidateConversation:
    return CandidateConversation(UUID(conversation_id), known, status, path, created_by, in_file)


NOT_FOUND = "CONVERSATION_NOT_FOUND", "no such conversation"
NO_FILE = "CONVERSATION_NO_ENRICHED_FILE", "no enriched file is recorded"
IN_FILE = "CONVERSATION_ALREADY_IN_FILE", "already in the training file"


def _problems(
    candidates: list[CandidateConversation], owner: UUID | None = None
) -> list[tuple[str, str]]:
    return [(v.reason, v.description) for v in ineligible(candidates, owner)]


def test_eligible_conversations_have_no_problem() -> None:
    eligible = [_candidate(A), _candidate(B, created_by=None)]

    assert ineligible(eligible, None) == []
    assert ineligible([_candidate(A)], OWNER) == []


def test_an_unknown_conversation_is_not_found() -> None:
    unknown = _candidate(known=False, status=None, path=None, created_by=None)

    assert ineligible([unknown], None) == [Violation(A, *NOT_FOUND)]


def test_someone_elses_conversation_is_not_found_for_an_owner() -> None:
    assert _problems([_candidate(created_by=OTHER)], OWNER) == [NOT_FOUND]
    assert _problems([_candidate(created_by=None)], OWNER) == [NOT_FOUND]
    assert _problems([_candidate(created_by=OTHER)], None) == []


@pytest.mark.parametrize(
    ("status", "description"),
    [
        ("pending", "enrichment_status is 'pending', not 'completed'"),
        ("failed", "enrichment_status is 'failed', not 'completed'"),
        ("Completed", "enrichment_status is 'Completed', not 'completed'"),
        (None, "enrichment_status is None, not 'completed'"),
    ],
)
def test_a_conversation_that_is_not_enriched(status: str | None, description: str) -> None:
    assert ineligible([_candidate(status=status)], None) == [
        Violation(A, "CONVERSATION_NOT_ENRICHED", description)
    ]


@pytest.mark.parametrize("path", [None, ""])
def test_a_conversation_without_an_enriched_file(path: str | None) -> None:
    assert ineligible([_candidate(path=path)], None) == [Violation(A, *NO_FILE)]


def test_a_conversation_already_in_the_file() -> None:
    assert ineligible([_candidate(in_file=True)], None) == [Violation(A, *IN_FILE)]


def _broken(**overrides: object) -> CandidateConversation:
    """A conversation with every problem but those that `overrides` replace."""
    fields: dict[str, object] = {"status": "pending", "path": None, "in_file": True}
    return _candidate(**{**fields, **overrides})  # type: ignore[arg-type]


def test_only_the_first_problem_of_a_conversation_is_reported() -> None:
    assert _problems([_broken(known=False)]) == [NOT_FOUND]
    assert _problems([_broken(created_by=OTHER)], OWNER) == [NOT_FOUND]
    assert [r for r, _ in _problems([_broken()])] == ["CONVERSATION_NOT_ENRICHED"]
    assert _problems([_broken(status="completed", path="")]) == [NO_FILE]


def test_every_unusable_conversation_is_reported_in_request_order() -> None:
    candidates = [
        _candidate(C, in_file=True),
        _candidate(A),
        _candidate(B, known=False),
    ]

    assert ineligible(candidates, None) == [Violation(C, *IN_FILE), Violation(B, *NOT_FOUND)]


# --- reject_ineligible ------------------------------------------------------------------


def test_reject_ineligible_accepts_no_violations() -> None:
    reject_ineligible([])  # does not raise


def test_reject_ineligible_is_a_failed_precondition_naming_each_conversation() -> None:
    violations = [Violation(A, *IN_FILE), Violation(B, *NOT_FOUND)]

    with pytest.raises(FailedPrecondition) as caught:
        reject_ineligible(violations)

    error = caught.value
    assert error.message == (
        f"2 conversation(s) cannot be used: {A}: already in the training file; "
        f"{B}: no such conversation"
    )
    assert error.violations == tuple(violations)
    assert error.reason == "CONVERSATIONS_NOT_ELIGIBLE"


@pytest.mark.parametrize(("count", "ellipsis"), [(10, ""), (11, " …")])
def test_reject_ineligible_lists_up_to_ten_conversations(count: int, ellipsis: str) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        reject_ineligible(_violations(count))

    listed = "; ".join(f"f{i}: d{i}" for i in range(10))
    assert caught.value.message == f"{count} conversation(s) cannot be used: {listed}{ellipsis}"
    assert caught.value.violations == tuple(_violations(count))


# --- object_keys ------------------------------------------------------------------------


def test_object_keys_are_the_name_and_the_second_under_the_file_id() -> None:
    moment = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)

    assert object_keys(UUID(A), "golden-file_1", moment) == (
        f"{A}/golden-file_1_20261127T010203Z.json",
        f"{A}/golden-file_1_20261127T010203Z.jsonl",
    )


@pytest.mark.parametrize(("microsecond", "suffix"), [(456789, "-456789"), (5, "-000005")])
def test_object_keys_within_a_second_carry_the_microseconds(microsecond: int, suffix: str) -> None:
    moment = datetime(2026, 1, 9, 23, 59, 58, microsecond, tzinfo=UTC)

    assert object_keys(UUID(B), "n", moment) == (
        f"{B}/n_20260109T235958Z{suffix}.json",
        f"{B}/n_20260109T235958Z{suffix}.jsonl",
    )


# --- not_active and bad_document --------------------------------------------------------


def _record(status: Status) -> TrainingFileRecord:
    moment = datetime(2026, 11, 27, tzinfo=UTC)
    return TrainingFileRecord(
        id=UUID(C),
        name="n",
        description=None,
        status=status,
        storage_bucket="training-files",
        json_file_path=None,
        jsonl_file_path=None,
        conversation_count=0,
        total_training_pairs=0,
        json_file_size=0,
        jsonl_file_size=0,
        avg_quality_score=Decimal("0"),
        min_quality_score=None,
        max_quality_score=None,
        human_reviewed_count=0,
        scaffolding_distribution={},
        vertical=None,
        consultant_profile=None,
        error_message=None,
        version=1,
        created_by=None,
        created_at=moment,
        updated_at=moment,
        output_formats=[],
        split_spec=None,
        drop_duplicates=False,
        duplicate_pair_count=0,
        untrainable_pair_count=0,
    )


@pytest.mark.parametrize("status", [Status.ARCHIVED, Status.PROCESSING, Status.FAILED])
def test_not_active_says_what_the_status_is_and_what_the_operation_needs(status: Status) -> None:
    error = not_active(_record(status), "only active files can be extended")

    assert isinstance(error, FailedPrecondition)
    assert error.message == (
        f"training file {C} is {status.value}; only active files can be extended"
    )
    assert error.violations == (
        Violation(C, "TRAINING_FILE_NOT_ACTIVE", f"status is {status.value}"),
    )
    assert error.reason == "TRAINING_FILE_NOT_ACTIVE"


def test_bad_document_names_the_conversation_and_the_reason() -> None:
    error = bad_document(A, "not valid JSON: unexpected end")

    assert isinstance(error, FailedPrecondition)
    assert error.message == f"conversation {A}: not valid JSON: unexpected end"
    assert error.violations == (
        Violation(A, "ENRICHED_DOCUMENT_INVALID", "not valid JSON: unexpected end"),
    )
    assert error.reason == "ENRICHED_DOCUMENT_INVALID"


# --- url_expiry -------------------------------------------------------------------------


def test_url_expiry_defaults_to_an_hour() -> None:
    assert url_expiry(None) == 3600


@pytest.mark.parametrize("seconds", [60, 61, 3600, 604_799, 604_800])
def test_url_expiry_keeps_an_allowed_lifetime(seconds: int) -> None:
    assert url_expiry(seconds) == seconds


@pytest.mark.parametrize("seconds", [0, -1, 59, 604_801, 10**12])
def test_url_expiry_refuses_a_lifetime_out_of_range(seconds: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        url_expiry(seconds)

    error = caught.value
    description = "must be between 60 and 604800 seconds"
    assert error.message == f"expires_in: {description}"
    assert error.violations == (Violation("expires_in", "OUT_OF_RANGE", description),)
    assert error.reason == "INVALID_ARGUMENT"
