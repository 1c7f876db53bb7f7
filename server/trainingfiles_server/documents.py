"""The enriched (individual) conversation document, schema v4 (docs/formats.md, "The
enriched document").

The models here *validate*; they are not the data the aggregation writes out. The intended
use is::

    obj = decode_json_object(data)          # orjson, DocumentError on bad bytes
    doc = validate_enriched_document(obj)   # pydantic, DocumentError on a bad shape
    ...aggregate from `obj`, read typed values (quality scores, keys) from `doc`...

Why aggregate from the raw dict rather than from ``doc.model_dump()``: the file must keep
every field exactly as the pipeline wrote it, unknown ones included. ``extra="allow"``
does keep unknown fields in the model, but a dump is not the original — a strict ``float``
field turns ``"quality_score": 4`` into ``4.0``, extras move behind the declared fields —
and it costs a second walk over ~30 KB per document. The parsed dict is exact and free.

Strictness: the models run in pydantic's strict mode, so a wrong JSON type is an error
rather than a coercion (``"4.5"`` is not a quality score, ``true`` is not a number, ``3.0``
is not a turn number); an integer is accepted where a number is expected. Only the fields
the aggregation relies on are required; everything else in §3.4 is optional but typed
when present. Every model allows unknown fields.

JSON decoding (orjson) behaviour worth knowing, pinned by the unit tests:

- the input must be UTF-8 without a byte-order mark;
- nesting deeper than orjson's limit (1024) is a decode error, never a ``RecursionError``;
- ``NaN``/``Infinity`` literals and numbers that overflow a double are decode errors;
  integers beyond 64 bits decode as floats (so they fail an ``int`` field);
- duplicate object keys are not an error: the **last** occurrence wins, as in most JSON
  parsers, and that is the value validated and aggregated.

This module is pure: no I/O, no grpc, asyncpg or aiobotocore.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DatasetMetadata",
    "DocumentError",
    "EnrichedDocument",
    "InputParameters",
    "QualityCriteria",
    "TrainingMetadata",
    "TrainingPair",
    "decode_json_object",
    "parse_enriched_document",
    "validate_enriched_document",
]

#: How many validation errors a `DocumentError.reason` spells out before summarising.
_MAX_REPORTED_ERRORS = 3

# Finite: orjson never produces NaN or infinity, but a model built from Python objects
# could, and neither belongs in an average.
FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]


class DocumentError(Exception):
    """An enriched document that cannot be used: bad bytes, bad JSON or a bad shape.

    ``reason`` is a one-line, human-readable explanation meant for the caller, e.g.
    ``"training_pairs.3.training_metadata.quality_score: Input should be a valid number"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class DatasetMetadata(_Model):
    """Per-document dataset header; ``vertical`` is required because the file reports it."""

    vertical: str
    dataset_name: str | None = None
    version: str | None = None
    created_date: str | None = None
    total_conversations: int | None = None
    total_turns: int | None = None


class InputParameters(_Model):
    """The scaffolding the conversation was generated from.

    The ids are kept as strings: the aggregation copies them verbatim and counts by key,
    so refusing a document over an id's format would reject usable data.
    """

    persona_id: str
    persona_key: str = Field(min_length=1)
    persona_name: str
    emotional_arc_id: str
    emotional_arc_key: str = Field(min_length=1)
    emotional_arc_name: str
    training_topic_id: str
    training_topic_key: str = Field(min_length=1)
    training_topic_name: str


class QualityCriteria(_Model):
    empathy_score: FiniteNumber | None = None
    clarity_score: FiniteNumber | None = None
    appropriateness_score: FiniteNumber | None = None
    brand_voice_alignment: FiniteNumber | None = None


class TrainingMetadata(_Model):
    """Per-pair metadata; only the two inputs of the file's quality summary are required."""

    quality_score: FiniteNumber
    human_reviewed: bool
    difficulty_level: str | None = None
    key_learning_objective: str | None = None
    demonstrates_skills: list[str] | None = None
    conversation_turn: int | None = None
    emotional_progression_target: str | None = None
    quality_criteria: QualityCriteria | None = None
    reviewer_notes: str | None = None
    use_as_seed_example: bool | None = None
    generate_variations_count: int | None = None


class TrainingPair(_Model):
    id: str
    conversation_id: str
    turn_number: int = Field(ge=1)
    conversation_metadata: dict[str, Any]
    system_prompt: str
    conversation_history: list[Any]
    current_user_input: str
    emotional_context: dict[str, Any]
    target_response: str | None = None
    training_metadata: TrainingMetadata


class EnrichedDocument(_Model):
    dataset_metadata: DatasetMetadata
    consultant_profile: dict[str, Any]
    input_parameters: InputParameters
    training_pairs: list[TrainingPair] = Field(min_length=1)

    @field_validator("training_pairs")
    @classmethod
    def _turn_numbers_unique(cls, pairs: list[TrainingPair]) -> list[TrainingPair]:
        _check_turn_numbers_unique(pairs)
        return pairs


def _check_turn_numbers_unique(pairs: list[TrainingPair]) -> None:
    # The aggregate names pairs `<conversation_uuid>_turn<N>`; a repeated turn number
    # would give two pairs the same id in the file. (A plain function rather than the
    # validator's body, so that `make mutants` mutates it: mutmut leaves decorated
    # functions alone.)
    seen: set[int] = set()
    for pair in pairs:
        if pair.turn_number in seen:
            raise ValueError(f"turn_number {pair.turn_number} occurs more than once")
        seen.add(pair.turn_number)


def decode_json_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` with orjson and require a JSON object at the top level.

    Raises `DocumentError` ("not UTF-8: ...", "not valid JSON: ...", "top level is ...").
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # Only on the error path: tell encoding problems apart from syntax problems.
        try:
            bytes(data).decode()  # strict UTF-8, the default
        except UnicodeDecodeError as uexc:
            raise DocumentError(f"not UTF-8: {uexc.reason} at byte {uexc.start}") from None
        raise DocumentError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DocumentError(f"top level is {_json_type(obj)}, expected an object")
    return obj


def validate_enriched_document(obj: dict[str, Any]) -> EnrichedDocument:
    """Validate an already-decoded document; `DocumentError` names the offending fields.

    ``obj`` is not modified, so it can be aggregated afterwards with every field intact.
    """
    try:
        return EnrichedDocument.model_validate(obj)
    except ValidationError as exc:
        raise DocumentError(_describe(exc)) from None


def parse_enriched_document(data: bytes) -> EnrichedDocument:
    """Decode and validate in one step, when the raw dict is not needed."""
    return validate_enriched_document(decode_json_object(data))


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
        for error in errors[:_MAX_REPORTED_ERRORS]
    ]
    if len(errors) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case _:
            return type(value).__name__
