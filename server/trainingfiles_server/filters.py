"""Which conversations and pairs of the documents read go into a file: pure decisions.

Two kinds of filter, both judged on a validated document (`documents.py`), never on
the `conversations` table, which knows neither quality nor review nor emotions:

- a selector's **document filters** (`DocumentFilter`) judge a conversation the selector
  chose, on all its pairs as enriched; listed ids are never judged by them;
- a file's **pair filter** (`PairFilter`) keeps the pairs that meet it, in every
  conversation; one left with no pair is not a member.

The fetch asks `judge` once per document and keeps the tally (`FilterTally`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .documents import EnrichedDocument, TrainingPair

# How many filtered-out conversations a warning names (it always gives the count).
NAMED_IN_WARNING = 100


@dataclass(frozen=True, slots=True)
class PairFilter:
    """Keep a pair with at least `min_quality` (0: any) and, if `reviewed_only`, reviewed."""

    min_quality: float = 0.0
    reviewed_only: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_quality) or self.min_quality < 0:
            raise ValueError("min_quality must be a finite number, 0 or more")

    @property
    def active(self) -> bool:
        return self.min_quality > 0 or self.reviewed_only

    def keeps(self, pair: TrainingPair) -> bool:
        metadata = pair.training_metadata
        if self.reviewed_only and not metadata.human_reviewed:
            return False
        return metadata.quality_score >= self.min_quality

    def to_json(self) -> dict[str, Any] | None:
        """The filter as a file's row keeps it; None when it keeps every pair."""
        if not self.active:
            return None
        return {"min_quality": self.min_quality, "reviewed_only": self.reviewed_only}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> PairFilter:
        if not value:
            return cls()
        return cls(float(value.get("min_quality", 0.0)), bool(value.get("reviewed_only", False)))


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """A selected conversation is kept when its mean pair quality is at least
    `min_average_quality`, some pair is reviewed (if `human_reviewed_only`), and some
    pair's primary emotion is one of `emotions` (if any)."""

    min_average_quality: float = 0.0
    human_reviewed_only: bool = False
    emotions: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_average_quality) or self.min_average_quality < 0:
            raise ValueError("min_average_quality must be a finite number, 0 or more")

    @property
    def active(self) -> bool:
        return self.min_average_quality > 0 or self.human_reviewed_only or bool(self.emotions)

    def admits(self, document: EnrichedDocument) -> bool:
        pairs = document.training_pairs
        quality = sum(p.training_metadata.quality_score for p in pairs) / len(pairs)
        if quality < self.min_average_quality:
            return False
        if self.human_reviewed_only and not any(p.training_metadata.human_reviewed for p in pairs):
            return False
        return not self.emotions or any(primary_emotion(p) in self.emotions for p in pairs)


def primary_emotion(pair: TrainingPair) -> str | None:
    """`emotional_context.detected_emotions.primary`, when the pipeline wrote one."""
    detected = pair.emotional_context.get("detected_emotions")
    if isinstance(detected, dict):
        primary = detected.get("primary")
        if isinstance(primary, str):
            return primary
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One document's fate: the indices of its pairs kept (empty: not a member) and how
    many the pair filter left out."""

    kept: tuple[int, ...]
    excluded_pairs: int


def judge(
    document: EnrichedDocument,
    selected: bool,
    document_filter: DocumentFilter | None,
    pair_filter: PairFilter,
) -> Verdict:
    """Which of the document's pairs go into the file.

    A selected conversation failing the document filters keeps nothing (its pairs are
    not counted as excluded: the pair filter never judged them).
    """
    pairs = document.training_pairs
    if selected and document_filter is not None and not document_filter.admits(document):
        return Verdict((), 0)
    kept = tuple(i for i, pair in enumerate(pairs) if pair_filter.keeps(pair))
    return Verdict(kept, len(pairs) - len(kept))


@dataclass
class FilterTally:
    """What the filters left out of one build, in add order."""

    filtered_out: list[str] = field(default_factory=list)
    excluded_pairs: int = 0

    def count(self, conversation_id: str, verdict: Verdict) -> None:
        self.excluded_pairs += verdict.excluded_pairs
        if not verdict.kept:
            self.filtered_out.append(conversation_id)

    def warnings(self) -> list[tuple[str, str, Sequence[str]]]:
        """(code, message, conversations named) of what to tell the caller."""
        told: list[tuple[str, str, Sequence[str]]] = []
        if self.filtered_out:
            count = len(self.filtered_out)
            told.append(
                (
                    "CONVERSATIONS_FILTERED_OUT",
                    f"{count} conversation(s) failed the filters and are not in the file"
                    + (
                        f" (the first {NAMED_IN_WARNING} named)" if count > NAMED_IN_WARNING else ""
                    ),
                    self.filtered_out[:NAMED_IN_WARNING],
                )
            )
        if self.excluded_pairs:
            told.append(
                (
                    "PAIRS_EXCLUDED",
                    f"{self.excluded_pairs} pair(s) fall short of the pair filter and are "
                    "left out of every output",
                    (),
                )
            )
        return told
