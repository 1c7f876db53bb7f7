"""A version's analytics, from its members' summaries alone (no document is read).

Pure: `compute` takes the summaries a build already holds (what `aggregate.Summaries`
and the member rows keep: keys, quality, pairs, and per pair its primary emotion and
token counts) and returns `Analytics`, which a commit stores with the version as JSON
(`to_json`) and GetTrainingFileAnalytics reads back (`from_json`). The figures and their
definitions are the contract's (`protos/trainingfiles/v1/analytics.proto`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .aggregate import ConversationSummary
from .tokens import context_lengths

# The dimensions, in the contract's order (`AnalyticsDimension`).
PERSONA = "persona"
EMOTIONAL_ARC = "emotional_arc"
TRAINING_TOPIC = "training_topic"
EMOTION = "emotion"
DIMENSIONS = (PERSONA, EMOTIONAL_ARC, TRAINING_TOPIC, EMOTION)
BIN_WIDTH = 0.5


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    count: int
    share: float


@dataclass(frozen=True, slots=True)
class Distribution:
    dimension: str
    buckets: tuple[Bucket, ...]
    total: int
    normalized_entropy: float | None
    largest_to_smallest_ratio: float | None


@dataclass(frozen=True, slots=True)
class Bin:
    lower: float
    upper: float
    count: int


@dataclass(frozen=True, slots=True)
class TokenStatistics:
    tokenizer: str
    counted_pairs: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    mean_pair_tokens: float
    p5_pair_tokens: int
    p50_pair_tokens: int
    p95_pair_tokens: int
    max_pair_tokens: int
    # (context length, pairs over it), ascending by length.
    pairs_over_context: tuple[tuple[int, int], ...]
    training_tokens_per_epoch: int
    context_length: int  # the configured one, which caps a pair's billed tokens

    def pairs_over(self, length: int) -> int:
        return next((count for at, count in self.pairs_over_context if at == length), 0)


@dataclass(frozen=True, slots=True)
class Analytics:
    conversation_count: int
    total_training_pairs: int
    distributions: tuple[Distribution, ...]
    quality_bins: tuple[Bin, ...]
    reviewed_count: int
    reviewed_share: float
    # (pairs, conversations with that many), ascending.
    pairs_per_conversation: tuple[tuple[int, int], ...]
    tokens: TokenStatistics | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Analytics:
        tokens = data.get("tokens")
        return cls(
            conversation_count=data["conversation_count"],
            total_training_pairs=data["total_training_pairs"],
            distributions=tuple(
                Distribution(
                    d["dimension"],
                    tuple(Bucket(**b) for b in d["buckets"]),
                    d["total"],
                    d["normalized_entropy"],
                    d["largest_to_smallest_ratio"],
                )
                for d in data["distributions"]
            ),
            quality_bins=tuple(Bin(**b) for b in data["quality_bins"]),
            reviewed_count=data["reviewed_count"],
            reviewed_share=data["reviewed_share"],
            pairs_per_conversation=tuple(
                (pairs, count) for pairs, count in data["pairs_per_conversation"]
            ),
            tokens=None
            if tokens is None
            else TokenStatistics(
                **{
                    **tokens,
                    "pairs_over_context": tuple(
                        (length, count) for length, count in tokens["pairs_over_context"]
                    ),
                }
            ),
        )


class AnalyticsAccumulator:
    """`compute` fed one summary at a time: counters only, so a build need not keep its
    members' summaries for the analytics. Each figure is a count by value (keys, quality
    bins, pair counts, token counts), which stays small however many members there are;
    the percentiles come from the token counts' counter (`nearest_rank`), not a list."""

    def __init__(self, context_length: int) -> None:
        self._context_length = context_length
        self._keys: dict[str, Counter[str]] = {d: Counter() for d in DIMENSIONS}
        # Quality scores by their 0.5-wide bin (floor(score / BIN_WIDTH)), and the highest
        # score, which decides whether the last bin is closed above (`histogram`).
        self._bins: Counter[int] = Counter()
        self._high = float("-inf")
        self._pair_counts: Counter[int] = Counter()
        self._count = self._reviewed = self._pairs = 0
        # Pairs by their token count: a file's pairs take a few thousand distinct counts.
        self._totals: Counter[int] = Counter()
        self._prompt = self._completion = 0
        self._tokenizers: set[str | None] = set()

    def add(self, summary: ConversationSummary) -> None:
        keys = self._keys
        keys[PERSONA][summary.persona_key] += 1
        keys[EMOTIONAL_ARC][summary.emotional_arc_key] += 1
        keys[TRAINING_TOPIC][summary.training_topic_key] += 1
        keys[EMOTION].update(summary.emotions or ())
        self._bins[math.floor(summary.quality_score / BIN_WIDTH)] += 1
        self._high = max(self._high, summary.quality_score)
        self._pair_counts[summary.training_pair_count] += 1
        self._count += 1
        self._reviewed += summary.human_reviewed
        self._pairs += summary.training_pair_count
        self._tokenizers.add(summary.tokenizer)
        pair_tokens = summary.pair_tokens()
        if pair_tokens is not None:
            self._prompt += sum(summary.prompt_tokens or ())
            self._completion += sum(summary.completion_tokens or ())
            self._totals.update(pair_tokens)

    def result(self) -> Analytics:
        count = self._count
        # Token statistics only when every member was counted, by one tokenizer.
        tokenizers = self._tokenizers
        tokenizer = next(iter(tokenizers)) if len(tokenizers) == 1 else None
        return Analytics(
            conversation_count=count,
            total_training_pairs=self._pairs,
            distributions=tuple(distribution(d, self._keys[d]) for d in DIMENSIONS),
            quality_bins=tuple(binned(self._bins, self._high)),
            reviewed_count=self._reviewed,
            reviewed_share=self._reviewed / count if count else 0.0,
            pairs_per_conversation=tuple(sorted(self._pair_counts.items())),
            tokens=None
            if tokenizer is None
            else token_statistics(
                tokenizer, self._totals, self._prompt, self._completion, self._context_length
            ),
        )


def compute(summaries: Iterable[ConversationSummary], context_length: int) -> Analytics:
    """The analytics of a version whose members are `summaries`, in file order."""
    figures = AnalyticsAccumulator(context_length)
    for summary in summaries:
        figures.add(summary)
    return figures.result()


def distribution(dimension: str, counts: Counter[str]) -> Distribution:
    """Most frequent first (ties by key), with its balance figures."""
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    entropy = None
    if len(counts) >= 2:
        shannon = -sum(c / total * math.log(c / total) for c in counts.values())
        entropy = shannon / math.log(len(counts))
    return Distribution(
        dimension,
        tuple(Bucket(key, c, c / total) for key, c in ordered),
        total,
        entropy,
        max(counts.values()) / min(counts.values()) if counts else None,
    )


def histogram(values: Sequence[float]) -> list[Bin]:
    """0.5-wide bins from the lowest value's to the highest's, the last closed above."""
    if not values:
        return []
    return binned(Counter(math.floor(v / BIN_WIDTH) for v in values), max(values))


def binned(bins: Counter[int], high: float) -> list[Bin]:
    """`histogram` of values given by their bin (floor(value / BIN_WIDTH)) and the highest."""
    if not bins:
        return []
    first, last = min(bins), max(bins)
    if last > first and high == last * BIN_WIDTH:
        last -= 1  # the highest value is the previous bin's (closed) upper bound
    counts = [0] * (last - first + 1)
    for at, count in bins.items():
        counts[min(at, last) - first] += count
    return [
        Bin((first + i) * BIN_WIDTH, (first + i + 1) * BIN_WIDTH, c) for i, c in enumerate(counts)
    ]


def nearest_rank(counts: Sequence[tuple[int, int]], total: int, percent: float) -> int:
    """The `percent` percentile (nearest rank) of `total` values given as ascending
    (value, how many) pairs; 0 when there are none."""
    if not total:
        return 0
    rank = max(1, math.ceil(percent / 100 * total))
    for value, count in counts:
        rank -= count
        if rank <= 0:
            return value
    raise ValueError("counts add up to less than total")


def token_statistics(
    tokenizer: str, totals: Counter[int], prompt: int, completion: int, context_length: int
) -> TokenStatistics:
    counts = sorted(totals.items())
    pairs = totals.total()
    return TokenStatistics(
        tokenizer=tokenizer,
        counted_pairs=pairs,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        mean_pair_tokens=(prompt + completion) / pairs if pairs else 0.0,
        p5_pair_tokens=nearest_rank(counts, pairs, 5),
        p50_pair_tokens=nearest_rank(counts, pairs, 50),
        p95_pair_tokens=nearest_rank(counts, pairs, 95),
        max_pair_tokens=counts[-1][0] if counts else 0,
        pairs_over_context=tuple(
            (length, sum(c for t, c in counts if t > length))
            for length in context_lengths(context_length)
        ),
        training_tokens_per_epoch=sum(min(t, context_length) * c for t, c in counts),
        context_length=context_length,
    )
