"""Golden test of the aggregation rules (docs/formats.md, `v4_json`), by hand, with no I/O.

Two small conversations, written out as dicts, go through `validate_enriched_document`,
`transform_conversation`, `summarize`, `json_header` and `json_document`; the JSONL and
the JSON document that come out are compared byte for byte with what is spelled out
below: ids `<uuid>_turn<N>`, pairs in turn order, `input_parameters` on every pair, the
scaffolding keys in `conversation_metadata`, unknown fields kept, quality over
conversations rounded half-up to 2 places, the human-reviewed count, the distribution.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from trainingfiles_server import aggregate
from trainingfiles_server.documents import validate_enriched_document

CONV_A = "0b5d7a52-3c1e-4f8a-9d62-7e1f0c2a4b11"
CONV_B = "f2c4e6a8-1b3d-4e5f-8a7b-9c0d1e2f3a44"
CREATED = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=UTC)
PROFILE = {"name": "Marisol Adeyemi, CFP®", "years_experience": 16, "style": {"tone": "warm"}}


def _params(persona: str, arc: str, topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "persona_id": f"id-{persona}",
        "persona_key": persona,
        "persona_name": persona.title(),
        "emotional_arc_id": f"id-{arc}",
        "emotional_arc_key": arc,
        "emotional_arc_name": arc.title(),
        "training_topic_id": f"id-{topic}",
        "training_topic_key": topic,
        "training_topic_name": topic.title(),
        **extra,
    }


def _pair(label: str, turn: int, score: float, reviewed: bool, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{label}_turn{turn}",
        "conversation_id": label,
        "turn_number": turn,
        "conversation_metadata": {"client_persona": "Marcus", "conversation_phase": "opening"},
        "system_prompt": "You are a planner.",
        "conversation_history": [{"turn": turn - 1, "role": "user", "content": "…"}],
        "current_user_input": f"turn {turn}: où commencer ? 😬",
        "emotional_context": {"detected_emotions": {"primary": "shame"}},
        "target_response": None if turn == 3 else f"reply {turn}",
        "training_metadata": {"quality_score": score, "human_reviewed": reviewed},
        **extra,
    }


def _document(
    label: str, vertical: str, params: dict[str, Any], pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "dataset_metadata": {"dataset_name": f"fp_{label}", "vertical": vertical},
        "consultant_profile": PROFILE,
        "input_parameters": params,
        "training_pairs": pairs,
        "x_top_level_extra": {"kept": False},
    }


# Conversation A: turns stored 2, 1; quality (4.0 + 4.25) / 2 = 4.125; turn 1 reviewed;
# an unknown field in a pair, in its training_metadata and in input_parameters.
PARAMS_A = _params("overwhelmed_avoider", "shame_to_acceptance", "emergency_fund", template="t1")
DOC_A = _document(
    "conv_a",
    "financial_planning_consultant",
    PARAMS_A,
    [
        _pair("conv_a", 2, 4.25, False),
        _pair("conv_a", 1, 4, True, x_strategy={"weights": [0.5, 0.5], "note": "ü"}),
    ],
)
DOC_A["training_pairs"][0]["training_metadata"]["x_guidance"] = "vary 🔁"

# Conversation B: turns stored 3, 1, 2; quality (2.0 + 2.25 + 2.125) / 3 = 2.125; none
# reviewed; same persona as A, other arc and topic, and another vertical.
PARAMS_B = _params("overwhelmed_avoider", "fear_to_confidence", "debt_payoff")
DOC_B = _document(
    "conv_b",
    "retirement_income_specialist",
    PARAMS_B,
    [
        _pair("conv_b", 3, 2.125, False),
        _pair("conv_b", 1, 2.0, False),
        _pair("conv_b", 2, 2.25, False),
    ],
)

KEYS_A = {
    "persona_key": "overwhelmed_avoider",
    "emotional_arc_key": "shame_to_acceptance",
    "training_topic_key": "emergency_fund",
}
KEYS_B = {
    "persona_key": "overwhelmed_avoider",
    "emotional_arc_key": "fear_to_confidence",
    "training_topic_key": "debt_payoff",
}


def _expected_pair(
    uuid: str, turn: int, score: float, reviewed: bool, keys: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """A pair as the aggregate must write it, keys in the order they must appear."""
    metadata = {"quality_score": score, "human_reviewed": reviewed}
    guidance = extra.pop("x_guidance", None)
    if guidance is not None:
        metadata["x_guidance"] = guidance
    return {
        "id": f"{uuid}_turn{turn}",
        "conversation_id": uuid,
        "turn_number": turn,
        "conversation_metadata": {
            "client_persona": "Marcus",
            "conversation_phase": "opening",
            **keys,
        },
        "system_prompt": "You are a planner.",
        "conversation_history": [{"turn": turn - 1, "role": "user", "content": "…"}],
        "current_user_input": f"turn {turn}: où commencer ? 😬",
        "emotional_context": {"detected_emotions": {"primary": "shame"}},
        "target_response": None if turn == 3 else f"reply {turn}",
        "training_metadata": metadata,
        **extra,
    }


EXPECTED_PAIRS = [
    {
        **_expected_pair(
            CONV_A, 1, 4, True, KEYS_A, x_strategy={"weights": [0.5, 0.5], "note": "ü"}
        ),
        "input_parameters": PARAMS_A,
    },
    {
        **_expected_pair(CONV_A, 2, 4.25, False, KEYS_A, x_guidance="vary 🔁"),
        "input_parameters": PARAMS_A,
    },
    {**_expected_pair(CONV_B, 1, 2.0, False, KEYS_B), "input_parameters": PARAMS_B},
    {**_expected_pair(CONV_B, 2, 2.25, False, KEYS_B), "input_parameters": PARAMS_B},
    {**_expected_pair(CONV_B, 3, 2.125, False, KEYS_B), "input_parameters": PARAMS_B},
]

# Half-up, not half-even: 3.125 -> 3.13, 2.125 -> 2.13, 4.125 -> 4.13 (round() says .12).
EXPECTED_DOCUMENT = {
    "dataset_metadata": {
        "dataset_name": "golden-file_1",
        "version": "4.0.0",
        "created_date": "2026-11-27T01:02:03Z",
        "vertical": "financial_planning_consultant",
        "total_conversations": 2,
        "total_turns": 5,
        "quality_summary": {
            "avg_quality_score": 3.13,
            "min_quality_score": 2.13,
            "max_quality_score": 4.13,
            "human_reviewed_count": 1,
        },
        "scaffolding_distribution": {
            "personas": {"overwhelmed_avoider": 2},
            "emotional_arcs": {"fear_to_confidence": 1, "shame_to_acceptance": 1},
            "training_topics": {"debt_payoff": 1, "emergency_fund": 1},
        },
    },
    "consultant_profile": PROFILE,
    "training_pairs": EXPECTED_PAIRS,
}

EXPECTED_JSONL = b"".join(orjson.dumps(pair) + b"\n" for pair in EXPECTED_PAIRS)
EXPECTED_JSON = orjson.dumps(EXPECTED_DOCUMENT)


def _aggregate(
    name: str = "golden-file_1",
) -> tuple[bytes, bytes, bytes, list[aggregate.TransformedConversation]]:
    """(jsonl, json, header, transformed) for conversations A then B."""
    inputs = [(CONV_A, copy.deepcopy(DOC_A)), (CONV_B, copy.deepcopy(DOC_B))]
    transformed = []
    for conversation_id, raw in inputs:
        document = validate_enriched_document(raw)
        transformed.append(aggregate.transform_conversation(conversation_id, raw, document))
    metrics = aggregate.summarize(t.summary for t in transformed)
    first = transformed[0]
    header = aggregate.json_header(name, CREATED, first.vertical, metrics, first.consultant_profile)
    jsonl = b"".join(t.lines for t in transformed)
    document_bytes = b"".join(aggregate.json_document(header, [jsonl]))
    return jsonl, document_bytes, header, transformed


def test_jsonl_is_the_expected_pairs_byte_for_byte() -> None:
    jsonl, _, _, _ = _aggregate()

    assert jsonl == EXPECTED_JSONL


def test_json_document_is_the_expected_document_byte_for_byte() -> None:
    _, document, _, _ = _aggregate()

    assert orjson.loads(document) == EXPECTED_DOCUMENT
    assert document == EXPECTED_JSON


def _keys(keys: dict[str, str]) -> tuple[str, str, str]:
    return keys["persona_key"], keys["emotional_arc_key"], keys["training_topic_key"]


def test_summaries_hold_each_conversations_quality_review_and_keys() -> None:
    _, _, _, transformed = _aggregate()

    assert [t.summary for t in transformed] == [
        aggregate.ConversationSummary(
            CONV_A, 2, 4.125, True, *_keys(KEYS_A), emotions=("shame",) * 2
        ),
        aggregate.ConversationSummary(
            CONV_B, 3, 2.125, False, *_keys(KEYS_B), emotions=("shame",) * 3
        ),
    ]


def test_json_size_equals_the_real_length_of_the_document() -> None:
    jsonl, document, header, _ = _aggregate()

    assert aggregate.json_size(header, len(jsonl)) == len(document)


def test_json_training_pairs_equal_the_jsonl_lines_in_order() -> None:
    jsonl, document, _, _ = _aggregate()

    lines = [orjson.loads(line) for line in jsonl.splitlines()]
    assert orjson.loads(document)["training_pairs"] == lines
    assert len(lines) == orjson.loads(document)["dataset_metadata"]["total_turns"]


def test_json_document_is_the_same_when_the_jsonl_arrives_in_odd_chunks() -> None:
    jsonl, document, header, _ = _aggregate()

    chunks = [jsonl[i : i + 7] for i in range(0, len(jsonl), 7)]
    assert b"".join(aggregate.json_document(header, chunks)) == document


def test_inputs_are_not_modified() -> None:
    _aggregate()

    assert DOC_A["training_pairs"][0]["id"] == "conv_a_turn2"
    assert "input_parameters" not in DOC_A["training_pairs"][0]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([4.125], "4.13"),
        ([2.675], "2.68"),  # binary 2.67499999…: repr() keeps 2.675, then half-up
        ([1.005], "1.01"),
        ([4.994, 4.996], "5.00"),
    ],
)
def test_quality_is_rounded_half_up_to_two_places(scores: list[float], expected: str) -> None:
    summaries = [
        aggregate.ConversationSummary(f"c{i}", 1, score, False, "p", "a", "t")
        for i, score in enumerate(scores)
    ]

    metrics = aggregate.summarize(summaries)

    assert str(metrics.avg_quality_score) == expected


def test_consistency_check_names_each_conversation_that_differs_once() -> None:
    check = aggregate.ConsistencyCheck()
    check.observe("a", "v1", b'{"p":1}')
    check.observe("b", "v2", b'{"p":1}')
    check.observe("c", "v1", b'{"p":2}')

    warnings = check.drain()

    assert [(w.code, w.conversation_ids) for w in warnings] == [
        ("VERTICAL_MISMATCH", ("b",)),
        ("CONSULTANT_PROFILE_MISMATCH", ("c",)),
    ]
    assert check.drain() == []
    assert (check.vertical, check.consultant_profile) == ("v1", b'{"p":1}')


# --- Summaries: a column store that reads back exactly what was appended ----------------


def _summary(
    n: int, pairs: int, quality: float, reviewed: bool, persona: str, arc: str, topic: str
) -> aggregate.ConversationSummary:
    conversation_id = f"00000000-0000-4000-8000-{n:012d}"
    return aggregate.ConversationSummary(
        conversation_id, pairs, quality, reviewed, persona, arc, topic
    )


# Keys repeat across conversations and across columns (one string may be a persona and a
# topic), and new ones appear after repeated ones.
SUMMARIES = [
    _summary(1, 3, 4.125, True, "avoider", "shame", "fund"),
    _summary(2, 0, 0.0, False, "avoider", "fear", "fund"),
    _summary(3, 2**40, 1e-300, True, "planner", "shame", "avoider"),
    _summary(4, 1, 5.0, False, "saver", "calm", "debt"),
    _summary(5, 7, 2.675, False, "avoider", "fear", "calm"),
]


def test_summaries_read_back_what_was_appended_in_order() -> None:
    summaries = aggregate.Summaries(SUMMARIES[:2])
    for summary in SUMMARIES[2:]:
        summaries.append(summary)

    assert len(summaries) == len(SUMMARIES)
    assert list(summaries) == SUMMARIES
    assert [summaries[i] for i in range(len(SUMMARIES))] == SUMMARIES
    assert [summaries[-i] for i in range(1, len(SUMMARIES) + 1)] == SUMMARIES[::-1]
    assert type(summaries[0].human_reviewed) is bool


def test_summaries_slice_like_a_list() -> None:
    summaries = aggregate.Summaries(SUMMARIES)

    assert summaries[1:3] == SUMMARIES[1:3]
    assert summaries[::-2] == SUMMARIES[::-2]
    assert summaries[-2:] == SUMMARIES[-2:]
    assert summaries[4:1] == []


@pytest.mark.parametrize("index", [5, 6, -6, -100])
def test_summaries_out_of_range_is_an_index_error(index: int) -> None:
    summaries = aggregate.Summaries(SUMMARIES)

    with pytest.raises(IndexError) as caught:
        summaries[index]

    assert caught.value.args == (index + 5 if index < 0 else index,)


def test_empty_summaries() -> None:
    summaries = aggregate.Summaries()

    assert len(summaries) == 0
    assert list(summaries) == []
    assert summaries[:] == []
    with pytest.raises(IndexError):
        summaries[0]


def test_summaries_summarize_like_the_items() -> None:
    assert aggregate.summarize(aggregate.Summaries(SUMMARIES)) == aggregate.summarize(SUMMARIES)


# --- summarize ---------------------------------------------------------------------------


def test_summarize_counts_every_key_and_sorts_the_distribution() -> None:
    metrics = aggregate.summarize(SUMMARIES)

    assert metrics == aggregate.FileMetrics(
        conversation_count=5,
        total_training_pairs=3 + 0 + 2**40 + 1 + 7,
        avg_quality_score=Decimal("2.36"),  # 11.8 / 5
        min_quality_score=Decimal("0.00"),
        max_quality_score=Decimal("5.00"),
        human_reviewed_count=2,
        personas={"avoider": 3, "planner": 1, "saver": 1},
        emotional_arcs={"calm": 1, "fear": 2, "shame": 2},
        training_topics={"avoider": 1, "calm": 1, "debt": 1, "fund": 2},
    )
    assert list(metrics.personas) == ["avoider", "planner", "saver"]
    assert list(metrics.emotional_arcs) == ["calm", "fear", "shame"]
    assert list(metrics.training_topics) == ["avoider", "calm", "debt", "fund"]
    assert metrics.scaffolding_distribution() == {
        "personas": metrics.personas,
        "emotional_arcs": metrics.emotional_arcs,
        "training_topics": metrics.training_topics,
    }


def test_summarize_of_one_conversation() -> None:
    metrics = aggregate.summarize([_summary(1, 2, -0.5, False, "p", "a", "t")])

    assert (metrics.min_quality_score, metrics.max_quality_score) == (
        Decimal("-0.50"),
        Decimal("-0.50"),
    )
    assert metrics.avg_quality_score == Decimal("-0.50")
    assert metrics.human_reviewed_count == 0


def test_summarize_needs_a_conversation() -> None:
    with pytest.raises(ValueError, match=r"^a training file has at least one conversation$"):
        aggregate.summarize([])


# --- the JSON document from the JSONL -----------------------------------------------------


def test_an_empty_jsonl_gives_an_empty_training_pairs_array() -> None:
    assert b"".join(aggregate.json_document(b'{"training_pairs":[', [])) == (
        b'{"training_pairs":[]}'
    )
    assert b"".join(aggregate.json_document(b"[", [b"", b""])) == b"[]}"


def test_jsonl_without_its_last_newline_is_refused() -> None:
    pairs = aggregate.JsonlToJsonPairs()

    assert pairs.feed(b'{"a":1}\n{"b":2}') == b'{"a":1},{"b":2'
    with pytest.raises(ValueError, match=r"^JSONL must end with a newline$"):
        pairs.close()


def test_jsonl_to_json_pairs_can_be_closed_again_and_reused() -> None:
    pairs = aggregate.JsonlToJsonPairs()

    assert pairs.feed(b"1\n") == b"1"
    assert pairs.close() == aggregate.JSON_FOOTER
    assert pairs.close() == aggregate.JSON_FOOTER
    assert pairs.feed(b"2\n3\n") == b"2,3"
    assert pairs.close() == aggregate.JSON_FOOTER


def test_created_date_has_second_precision_in_utc_notation() -> None:
    assert aggregate.created_date(CREATED) == "2026-11-27T01:02:03Z"


# --- ConsistencyCheck ---------------------------------------------------------------------


def test_consistency_warnings_say_what_differs_and_what_the_file_keeps() -> None:
    check = aggregate.ConsistencyCheck()
    check.observe("a", "v1", b"{}")
    check.observe("b", "v2", b"{}")
    check.observe("c", "v3", b'{"p":1}')

    vertical, profile = check.drain()

    assert vertical == aggregate.Warning(
        "VERTICAL_MISMATCH",
        "2 conversation(s) have a vertical other than 'v1'; the file keeps 'v1'",
        ("b", "c"),
    )
    assert profile == aggregate.Warning(
        "CONSULTANT_PROFILE_MISMATCH",
        "1 conversation(s) have a different consultant_profile; "
        "the file keeps the first conversation's",
        ("c",),
    )


def test_consistency_check_of_a_stored_file_compares_with_its_values() -> None:
    check = aggregate.ConsistencyCheck("v1", b"{}")
    check.observe("a", "v1", b"{}")
    check.observe("b", "v2", b"{}")

    assert [(w.code, w.conversation_ids) for w in check.drain()] == [("VERTICAL_MISMATCH", ("b",))]


@pytest.mark.parametrize(("vertical", "profile"), [("v1", None), (None, b"{}")])
def test_consistency_check_missing_a_stored_value_takes_both_from_the_first_conversation(
    vertical: str | None, profile: bytes | None
) -> None:
    check = aggregate.ConsistencyCheck(vertical, profile)
    check.observe("a", "v2", b'{"p":2}')
    check.observe("b", "v2", b'{"p":2}')

    assert check.drain() == []
    assert (check.vertical, check.consultant_profile) == ("v2", b'{"p":2}')
