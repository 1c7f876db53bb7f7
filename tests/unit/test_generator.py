"""The synthetic data generator: deterministic, valid, realistic, lazy, awkward on request."""

from __future__ import annotations

import itertools
import statistics
import uuid
from collections import Counter
from functools import cache

import orjson
import pytest

from trainingfiles_dev.generator import (
    EMOTIONAL_ARCS,
    EXTRA_METADATA_FIELD,
    EXTRA_PAIR_FIELD,
    EXTRA_TOP_LEVEL_FIELD,
    INSERT_CONVERSATIONS,
    OTHER_VERTICAL,
    PERSONAS,
    TRAINING_TOPICS,
    VERTICAL,
    Awkward,
    GeneratedConversation,
    Kind,
    consultant_profile,
    generate,
    generate_one,
)
from trainingfiles_server.documents import (
    DocumentError,
    decode_json_object,
    parse_enriched_document,
    validate_enriched_document,
)

OWNERS = (
    uuid.UUID("00000000-0000-4000-8000-000000000001"),
    uuid.UUID("00000000-0000-4000-8000-000000000002"),
)
SEED = 20250106

AWKWARD = Awkward(
    extra_fields=3,
    other_vertical=2,
    other_profile=2,
    not_started=2,
    in_progress=2,
    null_path=2,
    missing_object=2,
    malformed_json=4,
    malformed_schema=5,
)


@cache
def eligible_run() -> tuple[GeneratedConversation, ...]:
    return tuple(generate(SEED, 60, owners=OWNERS))


@cache
def awkward_run() -> tuple[GeneratedConversation, ...]:
    return tuple(generate(SEED, 40, owners=OWNERS, awkward=AWKWARD))


def test_same_seed_gives_identical_bytes_and_rows() -> None:
    again = tuple(generate(SEED, 60, owners=OWNERS))

    assert again == eligible_run()
    assert tuple(generate(SEED, 40, owners=OWNERS, awkward=AWKWARD)) == awkward_run()


def test_different_seed_gives_different_conversations() -> None:
    other = tuple(generate(SEED + 1, 60, owners=OWNERS))

    assert {c.conversation_id for c in other}.isdisjoint(c.conversation_id for c in eligible_run())
    assert all(a.document != b.document for a, b in zip(other, eligible_run(), strict=True))


def test_a_shorter_run_is_a_prefix_and_each_conversation_can_be_rebuilt_alone() -> None:
    assert tuple(generate(SEED, 10, owners=OWNERS)) == eligible_run()[:10]
    for conv in awkward_run()[::7]:
        assert generate_one(SEED, conv.index, owners=OWNERS, kind=conv.kind) == conv


def test_identity_does_not_depend_on_the_kind() -> None:
    plain = generate_one(SEED, 3, owners=OWNERS)
    for kind in Kind:
        other = generate_one(SEED, 3, owners=OWNERS, kind=kind)
        assert (other.conversation_id, other.created_by, other.persona_id) == (
            plain.conversation_id,
            plain.created_by,
            plain.persona_id,
        )


def test_every_eligible_document_validates_and_has_the_v4_shape() -> None:
    profile = consultant_profile()
    for conv in eligible_run():
        assert conv.kind is Kind.ELIGIBLE
        assert conv.document is not None
        doc = parse_enriched_document(conv.document)
        pairs = doc.training_pairs

        assert 5 <= len(pairs) <= 9
        assert [p.turn_number for p in pairs] == list(range(1, len(pairs) + 1))
        assert [p.id for p in pairs] == [f"{conv.label}_turn{p.turn_number}" for p in pairs]
        assert {p.conversation_id for p in pairs} == {conv.label}
        for pair in pairs:
            score = pair.training_metadata.quality_score
            assert 1.0 <= score <= 5.0
            assert round(score, 1) == score
            assert len(pair.conversation_history) == 2 * (pair.turn_number - 1)
        assert doc.dataset_metadata.vertical == VERTICAL
        assert doc.dataset_metadata.total_turns == len(pairs)
        assert doc.consultant_profile == profile
        assert doc.input_parameters.persona_id == str(conv.persona_id)
        assert doc.input_parameters.emotional_arc_id == str(conv.emotional_arc_id)
        assert doc.input_parameters.training_topic_id == str(conv.training_topic_id)


def test_rows_match_the_documents_and_spec_keys() -> None:
    run = eligible_run()
    for conv in run:
        assert conv.enrichment_status == "completed"
        assert conv.created_by in OWNERS
        assert conv.enriched_file_path == f"{conv.created_by}/{conv.conversation_id}/enriched.json"
        assert conv.created_at.tzinfo is not None
        row = conv.row()
        assert len(row) == INSERT_CONVERSATIONS.count("$")
        assert row[0] == conv.conversation_id
    created = [c.created_at for c in run]
    assert created == sorted(set(created))
    assert len({c.conversation_id for c in run}) == len(run)
    assert set(Counter(c.created_by for c in run)) == set(OWNERS)


def test_sizes_are_tens_of_kilobytes() -> None:
    sizes = [len(c.document or b"") for c in eligible_run()]

    assert min(sizes) > 15_000
    assert max(sizes) < 100_000
    assert 25_000 < statistics.mean(sizes) < 60_000


def test_the_catalogue_is_varied_and_the_text_is_not_just_ascii() -> None:
    run = eligible_run()
    docs = [orjson.loads(c.document or b"") for c in run]
    pairs = [p for d in docs for p in d["training_pairs"]]
    text = "".join(p["current_user_input"] + (p["target_response"] or "") for p in pairs)

    assert len({c.persona_id for c in run}) == len(PERSONAS)
    assert len({c.emotional_arc_id for c in run}) == len(EMOTIONAL_ARCS)
    assert len({c.training_topic_id for c in run}) >= 8
    reviewed = [p["training_metadata"]["human_reviewed"] for p in pairs]
    assert any(reviewed)
    assert not all(reviewed)
    assert any(p["target_response"] is None for p in pairs)
    for sample in ("我", "ش", "ж", "😅", "\u2028"):  # Han, Arabic, Cyrillic, emoji, LS
        assert sample in text


def test_catalogue_ids_are_stable_and_unique() -> None:
    assert (len(PERSONAS), len(EMOTIONAL_ARCS), len(TRAINING_TOPICS)) == (8, 6, 10)
    for catalogue in (PERSONAS, EMOTIONAL_ARCS, TRAINING_TOPICS):
        assert len({s.id for s in catalogue}) == len({s.key for s in catalogue}) == len(catalogue)
    # Pinned: demo data, fixtures and benchmarks rely on these never changing.
    assert PERSONAS[0].id == uuid.UUID("49b2d9f2-75bc-53a8-a457-20f4d2792736")
    assert EMOTIONAL_ARCS[0].id == uuid.UUID("a2d757db-f220-50a8-9879-5b191c35a1ab")
    assert TRAINING_TOPICS[0].id == uuid.UUID("256773e5-9278-52a9-806b-445e7dc9637f")


def test_awkward_kinds_appear_exactly_as_requested() -> None:
    kinds = Counter(c.kind for c in awkward_run())

    expected = {kind: n for kind, n in AWKWARD.counts().items() if n}
    assert {k: v for k, v in kinds.items() if k is not Kind.ELIGIBLE} == expected
    assert kinds[Kind.ELIGIBLE] == 40 - sum(expected.values())


def test_awkward_rows_look_like_the_pipeline_left_them() -> None:
    for conv in awkward_run():
        match conv.kind:
            case Kind.NOT_STARTED | Kind.IN_PROGRESS:
                assert conv.enrichment_status == (
                    "not_started" if conv.kind is Kind.NOT_STARTED else "enrichment_in_progress"
                )
                assert conv.enriched_file_path is None
                assert conv.document is None
            case Kind.NULL_PATH:
                assert conv.enrichment_status == "completed"
                assert conv.enriched_file_path is None
                assert conv.document is None
            case Kind.MISSING_OBJECT:
                assert conv.enrichment_status == "completed"
                assert conv.enriched_file_path is not None
                assert conv.document is None
            case _:
                assert conv.enrichment_status == "completed"
                assert conv.enriched_file_path is not None
                assert conv.document is not None
        assert conv.kind.row_ready == (
            conv.enrichment_status == "completed" and conv.enriched_file_path is not None
        )


def test_malformed_documents_fail_with_a_reason_naming_the_defect() -> None:
    malformed = [c for c in awkward_run() if c.kind in (Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA)]
    assert malformed
    for conv in malformed:
        assert conv.document is not None
        assert conv.defect is not None
        with pytest.raises(DocumentError) as caught:
            parse_enriched_document(conv.document)
        assert conv.defect in caught.value.reason


@pytest.mark.parametrize("kind", [Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA])
def test_every_way_of_breaking_a_document_is_reported(kind: Kind) -> None:
    defects: set[str] = set()
    for index in range(40):
        conv = generate_one(SEED, index, owners=OWNERS, kind=kind)
        assert conv.defect is not None
        assert conv.document is not None
        with pytest.raises(DocumentError) as caught:
            parse_enriched_document(conv.document)
        assert conv.defect in caught.value.reason
        defects.add(conv.defect.split(".")[-1] if "." in conv.defect else conv.defect)
    assert len(defects) == (3 if kind is Kind.MALFORMED_JSON else 5)


def test_extra_fields_survive_parsing() -> None:
    extras = [c for c in awkward_run() if c.kind is Kind.EXTRA_FIELDS]
    assert extras
    for conv in extras:
        obj = decode_json_object(conv.document or b"")
        doc = validate_enriched_document(obj)

        assert EXTRA_TOP_LEVEL_FIELD in obj
        assert doc.model_extra is not None
        assert EXTRA_TOP_LEVEL_FIELD in doc.model_extra
        assert "template_id" in obj["input_parameters"]
        for raw, pair in zip(obj["training_pairs"], doc.training_pairs, strict=True):
            assert EXTRA_PAIR_FIELD in raw
            assert EXTRA_METADATA_FIELD in raw["training_metadata"]
            assert pair.model_extra == {EXTRA_PAIR_FIELD: raw[EXTRA_PAIR_FIELD]}


def test_disagreeing_vertical_and_profile_are_valid_documents() -> None:
    for conv in awkward_run():
        if conv.kind is Kind.OTHER_VERTICAL:
            assert parse_enriched_document(conv.document or b"").dataset_metadata.vertical == (
                OTHER_VERTICAL
            )
        elif conv.kind is Kind.OTHER_PROFILE:
            doc = parse_enriched_document(conv.document or b"")
            assert doc.consultant_profile == consultant_profile(other=True)
            assert doc.consultant_profile != consultant_profile()


def test_kinds_say_what_the_service_should_do_with_them() -> None:
    usable = {k for k in Kind if k.document_valid}
    ready = {k for k in Kind if k.row_ready}

    assert usable == {Kind.ELIGIBLE, Kind.EXTRA_FIELDS, Kind.OTHER_VERTICAL, Kind.OTHER_PROFILE}
    assert ready - usable == {Kind.MISSING_OBJECT, Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA}


def test_generation_is_lazy() -> None:
    huge = generate(SEED, 10**9, owners=OWNERS, awkward=Awkward(not_started=2))

    first = list(itertools.islice(huge, 3))

    assert [c.index for c in first] == [0, 1, 2]


@pytest.mark.parametrize(
    ("count", "owners", "awkward", "message"),
    [
        (-1, OWNERS, Awkward(), "count must be >= 0"),
        (5, (), Awkward(), "owners must not be empty"),
        (5, OWNERS, Awkward(not_started=3, null_path=3), "6 special conversations out of 5"),
        (5, OWNERS, Awkward(null_path=-1), "awkward counts must be >= 0"),
    ],
)
def test_bad_arguments_fail_at_the_call_not_on_first_next(
    count: int, owners: tuple[uuid.UUID, ...], awkward: Awkward, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate(SEED, count, owners=owners, awkward=awkward)


def test_consultant_profile_returns_a_copy() -> None:
    profile = consultant_profile()
    profile["name"] = "changed"

    assert consultant_profile()["name"] != "changed"
