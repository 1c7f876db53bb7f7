"""The filters' decisions (`filters.py`), pure: which documents and pairs go into a file."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.unit.test_documents import _document, _pair
from trainingfiles_server import aggregate
from trainingfiles_server.documents import EnrichedDocument, validate_enriched_document
from trainingfiles_server.filters import DocumentFilter, FilterTally, PairFilter, judge

CONVERSATION = "0b5d7a52-3c1e-4f8a-9d62-7e1f0c2a4b11"


def _scored(turn: int, score: float, reviewed: bool = False, emotion: Any = "shame") -> Any:
    pair = _pair(turn, quality_score=score, human_reviewed=reviewed)
    pair["emotional_context"] = {"detected_emotions": {"primary": emotion}}
    return pair


def _doc(*pairs: Any) -> EnrichedDocument:
    return validate_enriched_document(_document(*pairs))


def test_a_pair_filter_keeps_pairs_at_or_above_its_minimum_and_reviewed_if_asked() -> None:
    document = _doc(_scored(1, 3.9), _scored(2, 4.0, reviewed=True), _scored(3, 4.6))
    assert judge(document, False, None, PairFilter(4.0)).kept == (1, 2)
    assert judge(document, False, None, PairFilter(4.0, reviewed_only=True)).kept == (1,)
    everything = judge(document, False, None, PairFilter())
    assert (everything.kept, everything.excluded_pairs) == ((0, 1, 2), 0)
    assert judge(document, False, None, PairFilter(5.0)).excluded_pairs == 3


def test_document_filters_judge_only_selected_conversations_on_all_their_pairs() -> None:
    # Mean 3.5; reviewed through one pair; emotions shame and hope.
    document = _doc(_scored(1, 3.0, emotion="shame"), _scored(2, 4.0, True, emotion="hope"))
    strict = DocumentFilter(min_average_quality=3.6)
    assert judge(document, True, strict, PairFilter()).kept == ()
    assert judge(document, False, strict, PairFilter()).kept == (0, 1)  # a listed id
    assert judge(document, True, DocumentFilter(3.5, True, frozenset({"hope"})), PairFilter()).kept
    assert not judge(document, True, DocumentFilter(emotions=frozenset({"joy"})), PairFilter()).kept
    # Failing the document filters: nothing kept, no pair counted as excluded.
    assert judge(document, True, strict, PairFilter(4.0)).excluded_pairs == 0
    unreviewed = _doc(_scored(1, 4.8))
    assert not judge(unreviewed, True, DocumentFilter(human_reviewed_only=True), PairFilter()).kept


def test_a_missing_or_odd_primary_emotion_matches_no_emotion() -> None:
    pairs = [_scored(1, 4.0, emotion=None), _scored(2, 4.0, emotion=["shame"])]
    pairs[0]["emotional_context"] = {}
    document = _doc(*pairs)
    assert not judge(
        document, True, DocumentFilter(emotions=frozenset({"shame"})), PairFilter()
    ).kept


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_minimums_must_be_finite_and_not_negative(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        PairFilter(value)
    with pytest.raises(ValueError, match="finite"):
        DocumentFilter(value)


def test_the_pair_filter_round_trips_through_the_files_row() -> None:
    assert PairFilter().to_json() is None
    kept = PairFilter(3.5, reviewed_only=True)
    assert PairFilter.from_json(kept.to_json()) == kept
    assert PairFilter.from_json(None) == PairFilter()


def test_the_summary_is_over_the_pairs_kept() -> None:
    raw = _document(_scored(2, 4.0, reviewed=True), _scored(1, 2.0), _scored(3, 5.0))
    document = validate_enriched_document(raw)
    verdict = judge(document, False, None, PairFilter(3.0))
    transformed = aggregate.transform_conversation(CONVERSATION, raw, document, verdict.kept)
    summary = transformed.summary
    assert (summary.training_pair_count, summary.quality_score) == (2, 4.5)
    assert summary.human_reviewed
    assert [p["turn_number"] for p in transformed.pairs] == [2, 3]  # in turn order
    assert transformed.lines.count(b"\n") == 2


def test_the_tally_counts_and_names_what_was_left_out() -> None:
    tally = FilterTally()
    document = _doc(_scored(1, 2.0), _scored(2, 4.0))
    tally.count("a", judge(document, False, None, PairFilter(3.0)))
    tally.count("b", judge(document, False, None, PairFilter(4.5)))
    tally.count("c", judge(document, True, DocumentFilter(4.0), PairFilter()))
    assert (tally.filtered_out, tally.excluded_pairs) == (["b", "c"], 3)
    codes = {code: (message, list(ids)) for code, message, ids in tally.warnings()}
    assert codes["CONVERSATIONS_FILTERED_OUT"][1] == ["b", "c"]
    assert codes["CONVERSATIONS_FILTERED_OUT"][0].startswith("2 conversation(s)")
    assert codes["PAIRS_EXCLUDED"][0].startswith("3 pair(s)")
    assert FilterTally().warnings() == []
