"""The enriched-document models: what is accepted, what is refused, and how it is reported."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from trainingfiles_server.documents import (
    DocumentError,
    EnrichedDocument,
    _json_type,
    decode_json_object,
    parse_enriched_document,
    validate_enriched_document,
)


def _pair(turn: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "id": f"conv_1_turn{turn}",
        "conversation_id": "conv_1",
        "turn_number": turn,
        "conversation_metadata": {"client_persona": "Marcus"},
        "system_prompt": "You are a planner.",
        "conversation_history": [],
        "current_user_input": "Où commencer ? 😬",
        "emotional_context": {"detected_emotions": {"primary": "shame"}},
        "target_response": "Let's start small.",
        "training_metadata": {"quality_score": 4.5, "human_reviewed": False, **metadata},
    }


def _document(*pairs: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset_metadata": {"vertical": "financial_planning_consultant", "total_turns": 1},
        "consultant_profile": {"name": "Marisol"},
        "input_parameters": {
            "persona_id": "p-1",
            "persona_key": "overwhelmed_avoider",
            "persona_name": "Marcus Chen",
            "emotional_arc_id": "a-1",
            "emotional_arc_key": "shame_to_acceptance",
            "emotional_arc_name": "Shame → Acceptance",
            "training_topic_id": "t-1",
            "training_topic_key": "emergency_fund",
            "training_topic_name": "Emergency Fund",
        },
        "training_pairs": list(pairs) or [_pair()],
    }


def _reason(data: bytes | dict[str, Any]) -> str:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    with pytest.raises(DocumentError) as caught:
        parse_enriched_document(raw)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def test_minimal_document_is_valid() -> None:
    doc = parse_enriched_document(orjson.dumps(_document()))

    assert isinstance(doc, EnrichedDocument)
    assert doc.input_parameters.persona_key == "overwhelmed_avoider"
    assert doc.training_pairs[0].training_metadata.quality_score == 4.5
    assert doc.dataset_metadata.vertical == "financial_planning_consultant"


def test_integer_quality_score_is_a_number_and_the_raw_dict_keeps_it_an_integer() -> None:
    obj = decode_json_object(orjson.dumps(_document(_pair(quality_score=4))))

    doc = validate_enriched_document(obj)

    assert doc.training_pairs[0].training_metadata.quality_score == 4.0
    assert obj["training_pairs"][0]["training_metadata"]["quality_score"] == 4
    assert type(obj["training_pairs"][0]["training_metadata"]["quality_score"]) is int


def test_null_or_absent_target_response_is_accepted() -> None:
    absent = _pair(2)
    del absent["target_response"]
    null = _pair(1) | {"target_response": None}

    doc = parse_enriched_document(orjson.dumps(_document(null, absent)))

    assert [p.target_response for p in doc.training_pairs] == [None, None]


def test_unknown_fields_survive_everywhere_and_validation_does_not_touch_the_dict() -> None:
    pair = _pair() | {"response_strategy": {"why": ["ü", 1, None]}}
    pair["training_metadata"]["variation_guidance"] = "vary 🔁"
    document = _document(pair) | {"x_trace": {"id": 7}}
    document["input_parameters"]["template_id"] = "tpl"
    obj = decode_json_object(orjson.dumps(document))
    before = copy.deepcopy(obj)

    doc = validate_enriched_document(obj)

    assert obj == before == document
    assert doc.model_extra == {"x_trace": {"id": 7}}
    assert doc.training_pairs[0].model_extra == {"response_strategy": {"why": ["ü", 1, None]}}
    assert doc.training_pairs[0].training_metadata.model_extra == {"variation_guidance": "vary 🔁"}
    assert doc.input_parameters.model_extra == {"template_id": "tpl"}


def test_not_utf8() -> None:
    assert _reason(b'{"a": "caf\xe9"}').startswith("not UTF-8: invalid continuation byte")


def test_invalid_json() -> None:
    assert _reason(b'{"dataset_metadata": ').startswith("not valid JSON: ")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e999"])
def test_non_finite_numbers_are_not_json(literal: bytes) -> None:
    assert _reason(b'{"x": ' + literal + b"}").startswith("not valid JSON: ")


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"[]", "an array"),
        (b'"doc"', "a string"),
        (b"null", "null"),
        (b"3", "a number"),
        (b"-0.5", "a number"),
        (b"true", "a boolean"),
        (b"false", "a boolean"),
    ],
)
def test_top_level_must_be_an_object(data: bytes, what: str) -> None:
    assert _reason(data) == f"top level is {what}, expected an object"


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (None, "null"),
        (True, "a boolean"),
        (0, "a number"),
        (1.5, "a number"),
        ("", "a string"),
        ([], "an array"),
        ({}, "dict"),  # never asked: an object is what a document must be
    ],
)
def test_json_type_names_every_json_value(value: object, what: str) -> None:
    assert _json_type(value) == what


def test_a_value_that_is_not_an_object_is_reported_for_the_whole_document() -> None:
    with pytest.raises(DocumentError) as caught:
        validate_enriched_document([])  # type: ignore[arg-type]

    assert caught.value.reason == (
        "document: Input should be a valid dictionary or instance of EnrichedDocument"
    )


def test_missing_training_pairs() -> None:
    document = _document()
    del document["training_pairs"]

    assert _reason(document) == "training_pairs: Field required"


def test_empty_training_pairs() -> None:
    reason = _reason(_document() | {"training_pairs": []})

    assert reason.startswith("training_pairs: List should have at least 1 item")


def test_quality_score_as_string_is_refused() -> None:
    reason = _reason(_document(_pair(quality_score="4.5")))

    assert (
        reason == "training_pairs.0.training_metadata.quality_score: Input should be a valid number"
    )


def test_boolean_is_not_a_quality_score() -> None:
    reason = _reason(_document(_pair(quality_score=True)))

    assert (
        reason == "training_pairs.0.training_metadata.quality_score: Input should be a valid number"
    )


def test_human_reviewed_must_be_a_boolean() -> None:
    reason = _reason(_document(_pair(human_reviewed=1)))

    assert reason.startswith("training_pairs.0.training_metadata.human_reviewed: ")


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        (0, "Input should be greater than or equal to 1"),
        (2.0, "Input should be a valid integer"),
        (True, "Input should be a valid integer"),
        ("1", "Input should be a valid integer"),
        # orjson decodes integers beyond 64 bits as floats.
        (10**30, "Input should be a valid integer"),
    ],
)
def test_turn_number_is_a_positive_integer(turn: object, message: str) -> None:
    pair = _pair() | {"turn_number": turn}
    raw = orjson.dumps(_document(pair)) if turn != 10**30 else _big_turn_number()

    assert _reason(raw) == f"training_pairs.0.turn_number: {message}"


def _big_turn_number() -> bytes:
    return orjson.dumps(_document()).replace(
        b'"turn_number":1', b'"turn_number":1000000000000000000000000000000'
    )


def test_duplicate_turn_numbers_are_refused() -> None:
    reason = _reason(_document(_pair(1), _pair(2), _pair(1)))

    assert reason == "training_pairs: Value error, turn_number 1 occurs more than once"


def test_optional_metadata_is_typed_when_present() -> None:
    reason = _reason(_document(_pair(reviewer_notes=5)))

    assert (
        reason
        == "training_pairs.0.training_metadata.reviewer_notes: Input should be a valid string"
    )


def test_empty_scaffolding_key_is_refused() -> None:
    document = _document()
    document["input_parameters"]["persona_key"] = ""

    assert _reason(document).startswith("input_parameters.persona_key: String should have")


def test_many_errors_are_summarised() -> None:
    pairs = [_pair(turn, quality_score="x") for turn in range(1, 6)]

    reason = _reason(_document(*pairs))

    assert reason.count("Input should be a valid number") == 3
    assert reason.endswith("; and 2 more errors")


def test_up_to_three_errors_are_all_spelled_out() -> None:
    pairs = [_pair(turn, quality_score="x") for turn in range(1, 4)]

    reason = _reason(_document(*pairs))

    assert reason == "; ".join(
        f"training_pairs.{i}.training_metadata.quality_score: Input should be a valid number"
        for i in range(3)
    )


def test_four_errors_are_three_and_one_more() -> None:
    pairs = [_pair(turn, quality_score="x") for turn in range(1, 5)]

    assert _reason(_document(*pairs)).endswith("valid number; and 1 more errors")


def test_deep_nesting_is_a_document_error_not_a_recursion_error() -> None:
    assert _reason(b"[" * 10_000).startswith("not valid JSON: ")
    closed = b'{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert _reason(closed).startswith("not valid JSON: ")


def test_nesting_of_1024_levels_is_read_and_one_more_is_refused() -> None:
    """The limit is 1,024 levels, the document's own object included."""

    def nested(levels: int) -> bytes:
        arrays = levels - 1  # inside the top-level object
        return (
            b'{"x_deep": ' + b"[" * arrays + b"]" * arrays + b", " + orjson.dumps(_document())[1:]
        )

    document = parse_enriched_document(nested(1024))
    assert isinstance(document, EnrichedDocument)
    assert _reason(nested(1025)).startswith("not valid JSON: ")


def test_duplicate_keys_keep_the_last_value() -> None:
    valid = orjson.dumps(_document())
    assert b'"quality_score":4.5' in valid

    last_good = valid.replace(b'"quality_score":4.5', b'"quality_score":"bad","quality_score":4.5')
    last_bad = valid.replace(b'"quality_score":4.5', b'"quality_score":4.5,"quality_score":"bad"')

    assert (
        parse_enriched_document(last_good).training_pairs[0].training_metadata.quality_score == 4.5
    )
    assert _reason(last_bad).endswith("quality_score: Input should be a valid number")


def test_document_error_carries_its_reason() -> None:
    error = DocumentError("not UTF-8: boom")

    assert isinstance(error, Exception)
    assert error.reason == "not UTF-8: boom"
    assert error.args == ("not UTF-8: boom",)
