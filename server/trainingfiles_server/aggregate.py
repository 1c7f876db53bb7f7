"""The aggregation rules of the v4.0 document (docs/formats.md, `v4_json`), as pure
functions over bytes and small summaries.

No I/O happens here. The shape of the work, so that memory never grows with the number of
conversations:

1. `transform_conversation` turns one validated enriched document into its JSONL lines
   (bytes, one pair per line, in turn order) and a small `ConversationSummary`. The caller
   spools the lines and keeps only the summary.
2. `summarize` computes the file's metrics from the summaries, in add order.
3. The JSON document is `json_header(...)` + the JSONL with every newline turned into a
   comma (minus the last) + `JSON_FOOTER`. orjson never writes a raw newline byte (it
   escapes them inside strings), so this is exact, and `json_size` knows the size of the
   document before a byte of it is written.

An Add reuses the stored JSONL and the stored summaries, so its result is byte-for-byte
what a Create of the same conversations in the same order would give, timestamps aside.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, overload
from uuid import UUID

import orjson

from .documents import EnrichedDocument
from .tokens import TokenCounter

SCHEMA_VERSION = "4.0.0"
JSON_FOOTER = b"]}"
_TRAINING_PAIRS_KEY = b',"training_pairs":['
_TWO_PLACES = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """What the file needs to know about one conversation once its lines are spooled."""

    conversation_id: str
    training_pair_count: int
    quality_score: float
    human_reviewed: bool
    persona_key: str
    emotional_arc_key: str
    training_topic_key: str
    # Per pair, in turn order, for the analytics (`analytics.py`): its primary emotion
    # ("" when the document gives none); and the tokenizer's counts of the trainable
    # pairs. None: not known (a member added before they were kept).
    emotions: tuple[str, ...] | None = None
    tokenizer: str | None = None
    prompt_tokens: tuple[int, ...] | None = None
    completion_tokens: tuple[int, ...] | None = None

    def pair_tokens(self) -> list[int] | None:
        """Each counted pair's tokens (prompt + completion); None: not counted."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return [p + c for p, c in zip(self.prompt_tokens, self.completion_tokens, strict=True)]


class Summaries(Sequence[ConversationSummary]):
    """Conversation summaries in add order, stored by column: ~60 bytes each.

    A file's summaries are kept from the first document fetched to the final commit, so
    as objects (~200 bytes each, many of them small) they were what made a Create's
    memory grow with its number of conversations. Items are rebuilt when read.
    """

    def __init__(self, summaries: Iterable[ConversationSummary] = ()) -> None:
        self._ids = bytearray()  # 16 bytes each: conversation ids are UUIDs
        self._pairs = array("q")
        self._quality = array("d")
        self._reviewed = bytearray()
        self._keys = array("q")  # 3 each: indices into _names
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        # Per pair, concatenated: emotions (indices into _names) and token counts, with
        # each conversation's (start, end); (-1, -1): not known. The tokenizer: a name
        # index, -1 for none.
        self._emotions = array("q")
        self._emotion_spans = array("q")
        self._tokens = array("q")  # prompt, completion, prompt, …
        self._token_spans = array("q")
        self._tokenizer = array("q")
        for summary in summaries:
            self.append(summary)

    def append(self, summary: ConversationSummary) -> None:
        self._ids += UUID(summary.conversation_id).bytes
        self._pairs.append(summary.training_pair_count)
        self._quality.append(summary.quality_score)
        self._reviewed.append(summary.human_reviewed)
        for key in (summary.persona_key, summary.emotional_arc_key, summary.training_topic_key):
            self._keys.append(self._name(key))
        if summary.emotions is None:
            self._emotion_spans.extend((-1, -1))
        else:
            start = len(self._emotions)
            self._emotions.extend(self._name(e) for e in summary.emotions)
            self._emotion_spans.extend((start, len(self._emotions)))
        prompt, completion = summary.prompt_tokens, summary.completion_tokens
        if prompt is None or completion is None:
            self._token_spans.extend((-1, -1))
        else:
            start = len(self._tokens)
            for pair in zip(prompt, completion, strict=True):
                self._tokens.extend(pair)
            self._token_spans.extend((start, len(self._tokens)))
        self._tokenizer.append(-1 if summary.tokenizer is None else self._name(summary.tokenizer))

    def _name(self, key: str) -> int:
        index = self._index.setdefault(key, len(self._index))
        if len(self._names) < len(self._index):
            self._names.append(key)
        return index

    @staticmethod
    def _span(spans: array[int], values: array[int], index: int) -> array[int] | None:
        start, end = spans[2 * index : 2 * index + 2]
        return None if start < 0 else values[start:end]

    def __len__(self) -> int:
        return len(self._pairs)

    @overload
    def __getitem__(self, index: int) -> ConversationSummary: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ConversationSummary]: ...

    def __getitem__(
        self, index: int | slice
    ) -> ConversationSummary | Sequence[ConversationSummary]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        persona, arc, topic = self._keys[3 * index : 3 * index + 3]
        emotions = self._span(self._emotion_spans, self._emotions, index)
        tokens = self._span(self._token_spans, self._tokens, index)
        tokenizer = self._tokenizer[index]
        return ConversationSummary(
            conversation_id=str(UUID(bytes=bytes(self._ids[16 * index : 16 * index + 16]))),
            training_pair_count=self._pairs[index],
            quality_score=self._quality[index],
            human_reviewed=bool(self._reviewed[index]),
            persona_key=self._names[persona],
            emotional_arc_key=self._names[arc],
            training_topic_key=self._names[topic],
            emotions=None if emotions is None else tuple(self._names[e] for e in emotions),
            tokenizer=None if tokenizer < 0 else self._names[tokenizer],
            prompt_tokens=None if tokens is None else tuple(tokens[0::2]),
            completion_tokens=None if tokens is None else tuple(tokens[1::2]),
        )


@dataclass(frozen=True, slots=True)
class TransformedConversation:
    summary: ConversationSummary
    lines: bytes
    vertical: str
    consultant_profile: bytes
    # The same pairs as `lines`, decoded, for the other output formats.
    pairs: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Warning:
    """Something the caller must hear about; never silently resolved."""

    code: str
    message: str
    conversation_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FileMetrics:
    conversation_count: int
    total_training_pairs: int
    avg_quality_score: Decimal
    min_quality_score: Decimal
    max_quality_score: Decimal
    human_reviewed_count: int
    personas: dict[str, int]
    emotional_arcs: dict[str, int]
    training_topics: dict[str, int]

    def scaffolding_distribution(self) -> dict[str, dict[str, int]]:
        return {
            "personas": self.personas,
            "emotional_arcs": self.emotional_arcs,
            "training_topics": self.training_topics,
        }


def transform_conversation(
    conversation_id: str,
    raw: dict[str, Any],
    document: EnrichedDocument,
    kept: Sequence[int] | None = None,
    counter: TokenCounter | None = None,
) -> TransformedConversation:
    """One conversation's pairs as JSONL lines, rewritten for the aggregate.

    `raw` is the decoded document (every field, unknown ones included) and `document` its
    validated model, read for typed values. Each pair keeps all its fields; `id` becomes
    `<conversation_uuid>_turn<N>`, `conversation_id` the UUID; `input_parameters` is added
    and the scaffolding keys are set in `conversation_metadata`. `kept` (the pair
    filter's choice, `filters.judge`; None: every pair) are the pairs written and summed;
    with a `counter`, the summary carries the token counts of those that are trainable.
    """
    params = document.input_parameters
    # Interned: a file has a few distinct keys, and its summaries share them.
    keys = {
        "persona_key": sys.intern(params.persona_key),
        "emotional_arc_key": sys.intern(params.emotional_arc_key),
        "training_topic_key": sys.intern(params.training_topic_key),
    }
    input_parameters = raw["input_parameters"]
    order = sorted(
        range(len(document.training_pairs)) if kept is None else kept,
        key=lambda i: document.training_pairs[i].turn_number,
    )
    raw_pairs = raw["training_pairs"]
    lines = bytearray()
    pairs = []
    scores = 0.0
    human_reviewed = False
    for index in order:
        pair = raw_pairs[index]
        model = document.training_pairs[index]
        out = dict(pair)
        out["id"] = f"{conversation_id}_turn{model.turn_number}"
        out["conversation_id"] = conversation_id
        out["conversation_metadata"] = {**pair["conversation_metadata"], **keys}
        out["input_parameters"] = input_parameters
        lines += orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)
        pairs.append(out)
        scores += model.training_metadata.quality_score
        human_reviewed = human_reviewed or model.training_metadata.human_reviewed
    count = len(order)
    tokens = counter.count_conversation(pairs) if counter is not None else None
    summary = ConversationSummary(
        conversation_id=conversation_id,
        training_pair_count=count,
        quality_score=scores / count,
        human_reviewed=human_reviewed,
        **keys,
        emotions=tuple(primary_emotion(pair) for pair in pairs),
        tokenizer=counter.name if counter is not None else None,
        prompt_tokens=tuple(tokens.prompt) if tokens is not None else None,
        completion_tokens=tuple(tokens.completion) if tokens is not None else None,
    )
    return TransformedConversation(
        summary=summary,
        lines=bytes(lines),
        vertical=document.dataset_metadata.vertical,
        consultant_profile=orjson.dumps(raw["consultant_profile"]),
        pairs=pairs,
    )


def primary_emotion(pair: dict[str, Any]) -> str:
    """`emotional_context.detected_emotions.primary`, or "" when the pair gives none."""
    detected = pair.get("emotional_context", {}).get("detected_emotions")
    primary = detected.get("primary") if isinstance(detected, dict) else None
    return sys.intern(primary) if isinstance(primary, str) else ""


def _round(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_TWO_PLACES, rounding=ROUND_HALF_UP)


class MetricsAccumulator:
    """The file's metrics fed one conversation at a time, in add order: a build keeps
    this (a few counters) instead of every member's summary until it is done."""

    __slots__ = ("_count", "_high", "_keys", "_low", "_pairs", "_reviewed", "_total")

    def __init__(self) -> None:
        self._count = self._pairs = self._reviewed = 0
        self._total = 0.0
        self._low = float("inf")
        self._high = float("-inf")
        self._keys: tuple[Counter[str], Counter[str], Counter[str]] = (
            Counter(),
            Counter(),
            Counter(),
        )

    def add(self, summary: ConversationSummary) -> None:
        self._count += 1
        self._pairs += summary.training_pair_count
        self._reviewed += summary.human_reviewed
        # Summed in add order, as `summarize` always did: the same float, to the bit.
        self._total += summary.quality_score
        self._low = min(self._low, summary.quality_score)
        self._high = max(self._high, summary.quality_score)
        personas, arcs, topics = self._keys
        personas[summary.persona_key] += 1
        arcs[summary.emotional_arc_key] += 1
        topics[summary.training_topic_key] += 1

    def __len__(self) -> int:
        return self._count

    def result(self) -> FileMetrics:
        """The metrics so far; quality rounded to 2 places."""
        if self._count == 0:
            raise ValueError("a training file has at least one conversation")
        personas, arcs, topics = self._keys
        return FileMetrics(
            conversation_count=self._count,
            total_training_pairs=self._pairs,
            avg_quality_score=_round(self._total / self._count),
            min_quality_score=_round(self._low),
            max_quality_score=_round(self._high),
            human_reviewed_count=self._reviewed,
            personas=dict(sorted(personas.items())),
            emotional_arcs=dict(sorted(arcs.items())),
            training_topics=dict(sorted(topics.items())),
        )


def summarize(summaries: Iterable[ConversationSummary]) -> FileMetrics:
    """The file's metrics over conversations, in add order; quality rounded to 2 places."""
    metrics = MetricsAccumulator()
    for summary in summaries:
        metrics.add(summary)
    return metrics.result()


def created_date(moment: datetime) -> str:
    """ISO-8601 UTC, second precision: `2026-11-27T01:02:03Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def json_header(
    name: str, created: datetime, vertical: str, metrics: FileMetrics, consultant_profile: bytes
) -> bytes:
    """Everything of the JSON document before the first training pair."""
    dataset_metadata = {
        "dataset_name": name,
        "version": SCHEMA_VERSION,
        "created_date": created_date(created),
        "vertical": vertical,
        "total_conversations": metrics.conversation_count,
        "total_turns": metrics.total_training_pairs,
        "quality_summary": {
            "avg_quality_score": float(metrics.avg_quality_score),
            "min_quality_score": float(metrics.min_quality_score),
            "max_quality_score": float(metrics.max_quality_score),
            "human_reviewed_count": metrics.human_reviewed_count,
        },
        "scaffolding_distribution": metrics.scaffolding_distribution(),
    }
    return b"".join(
        (
            b'{"dataset_metadata":',
            orjson.dumps(dataset_metadata),
            b',"consultant_profile":',
            consultant_profile,
            _TRAINING_PAIRS_KEY,
        )
    )


def json_size(header: bytes, jsonl_size: int) -> int:
    """Size of the JSON document: each line's newline becomes a comma, minus the last."""
    return len(header) + jsonl_size - 1 + len(JSON_FOOTER)


@dataclass
class JsonlToJsonPairs:
    """Streams JSONL chunks as the comma-separated `training_pairs` body of the document."""

    _pending: bytes = field(default=b"")

    def feed(self, chunk: bytes) -> bytes:
        out = self._pending + chunk.replace(b"\n", b",")
        self._pending = out[-1:]
        return out[:-1]

    def close(self) -> bytes:
        if self._pending not in (b",", b""):
            raise ValueError("JSONL must end with a newline")
        self._pending = b""
        return JSON_FOOTER


def json_document(header: bytes, jsonl_chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The whole JSON document as chunks, from its header and the JSONL chunks."""
    yield header
    pairs = JsonlToJsonPairs()
    for chunk in jsonl_chunks:
        body = pairs.feed(chunk)
        if body:
            yield body
    yield pairs.close()


@dataclass
class ConsistencyCheck:
    """Tracks `vertical` and `consultant_profile` across conversations, in add order.

    The file keeps the first conversation's values; every conversation that differs is
    reported once, through `drain()`, as a warning for the next progress message.
    """

    vertical: str | None = None
    consultant_profile: bytes | None = None
    _vertical_mismatch: list[str] = field(default_factory=list)
    _profile_mismatch: list[str] = field(default_factory=list)

    def observe(self, conversation_id: str, vertical: str, consultant_profile: bytes) -> None:
        if self.vertical is None or self.consultant_profile is None:
            self.vertical, self.consultant_profile = vertical, consultant_profile
            return
        if vertical != self.vertical:
            self._vertical_mismatch.append(conversation_id)
        if consultant_profile != self.consultant_profile:
            self._profile_mismatch.append(conversation_id)

    def drain(self) -> list[Warning]:
        warnings = []
        if self._vertical_mismatch:
            warnings.append(
                Warning(
                    "VERTICAL_MISMATCH",
                    f"{len(self._vertical_mismatch)} conversation(s) have a vertical other "
                    f"than {self.vertical!r}; the file keeps {self.vertical!r}",
                    tuple(self._vertical_mismatch),
                )
            )
        if self._profile_mismatch:
            warnings.append(
                Warning(
                    "CONSULTANT_PROFILE_MISMATCH",
                    f"{len(self._profile_mismatch)} conversation(s) have a different "
                    "consultant_profile; the file keeps the first conversation's",
                    tuple(self._profile_mismatch),
                )
            )
        self._vertical_mismatch, self._profile_mismatch = [], []
        return warnings
