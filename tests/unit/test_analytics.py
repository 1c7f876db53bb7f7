"""The analytics of a version from its members' summaries: distributions with balance,
the quality histogram, pairs per conversation, token statistics; stored and read back."""

from __future__ import annotations

import math
import uuid
from collections import Counter

import pytest

from trainingfiles_server import aggregate, analytics, card_analytics
from trainingfiles_server.aggregate import ConversationSummary


def summary(
    quality: float = 3.0,
    pairs: int = 2,
    persona: str = "p",
    arc: str = "a",
    topic: str = "t",
    reviewed: bool = False,
    emotions: tuple[str, ...] | None = None,
    prompt: tuple[int, ...] | None = None,
    completion: tuple[int, ...] | None = None,
    tokenizer: str | None = "tiktoken:cl100k_base",
) -> ConversationSummary:
    return ConversationSummary(
        str(uuid.uuid4()),
        pairs,
        quality,
        reviewed,
        persona,
        arc,
        topic,
        emotions=emotions if emotions is not None else ("calm",) * pairs,
        tokenizer=tokenizer if prompt is not None else None,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def test_distributions_count_most_frequent_first_with_shares_and_balance() -> None:
    members = [summary(persona="b"), summary(persona="a"), summary(persona="b")]
    persona = analytics.compute(members, 100).distributions[0]
    assert persona.dimension == analytics.PERSONA
    assert [(b.key, b.count) for b in persona.buckets] == [("b", 2), ("a", 1)]
    assert [b.share for b in persona.buckets] == [2 / 3, 1 / 3]
    assert persona.total == 3
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2)
    assert persona.normalized_entropy == pytest.approx(entropy)
    assert persona.largest_to_smallest_ratio == 2.0


def test_ties_go_by_key_and_a_perfect_balance_is_one() -> None:
    members = [summary(topic=t) for t in ("z", "m", "a")]
    topic = analytics.compute(members, 100).distributions[2]
    assert [b.key for b in topic.buckets] == ["a", "m", "z"]
    assert topic.normalized_entropy == pytest.approx(1.0)
    assert topic.largest_to_smallest_ratio == 1.0


def test_one_value_has_no_entropy_but_a_ratio_of_one() -> None:
    arc = analytics.compute([summary(), summary()], 100).distributions[1]
    assert arc.normalized_entropy is None
    assert arc.largest_to_smallest_ratio == 1.0
    assert analytics.distribution("emotion", Counter()) == (
        analytics.Distribution("emotion", (), 0, None, None)
    )


def test_emotions_count_pairs_and_unknown_members_are_left_out() -> None:
    members = [
        summary(pairs=3, emotions=("fear", "fear", "hope")),
        summary(pairs=1, emotions=("",)),
        ConversationSummary(str(uuid.uuid4()), 4, 3.0, False, "p", "a", "t"),  # before
    ]
    figures = analytics.compute(members, 100)
    emotion = figures.distributions[3]
    assert [(b.key, b.count) for b in emotion.buckets] == [("fear", 2), ("", 1), ("hope", 1)]
    assert emotion.total == 4
    assert figures.total_training_pairs == 8
    assert figures.tokens is None  # a member was not counted


def test_quality_bins_are_half_wide_from_the_lowest_to_the_highest_closed() -> None:
    bins = analytics.histogram([1.2, 2.0, 2.49, 5.0, 4.5])
    assert [(b.lower, b.upper, b.count) for b in bins] == [
        (1.0, 1.5, 1),
        (1.5, 2.0, 0),
        (2.0, 2.5, 2),
        (2.5, 3.0, 0),
        (3.0, 3.5, 0),
        (3.5, 4.0, 0),
        (4.0, 4.5, 0),
        (4.5, 5.0, 2),  # 5.0 closes the last bin
    ]
    assert [(b.lower, b.upper, b.count) for b in analytics.histogram([3.0])] == [(3.0, 3.5, 1)]
    assert [(b.lower, b.count) for b in analytics.histogram([3.0, 3.5])] == [(3.0, 2)]
    assert analytics.histogram([]) == []


def test_reviewed_share_and_pairs_per_conversation() -> None:
    members = [summary(pairs=2, reviewed=True), summary(pairs=5), summary(pairs=2)]
    figures = analytics.compute(members, 100)
    assert (figures.reviewed_count, figures.reviewed_share) == (1, 1 / 3)
    assert figures.pairs_per_conversation == ((2, 2), (5, 1))
    assert figures.conversation_count == 3


def test_token_statistics_nearest_rank_over_counted_pairs() -> None:
    # Pair totals 10..200 in steps of 10 (20 pairs), over two members.
    first = tuple(range(5, 100, 10)), (5,) * 10  # 10, 20, ..., 100
    second = tuple(range(105, 200, 10)), (5,) * 10  # 110, ..., 200
    members = [
        summary(pairs=10, prompt=first[0], completion=first[1]),
        summary(pairs=11, prompt=second[0], completion=second[1]),  # one untrainable pair
    ]
    stats = analytics.compute(members, 150).tokens
    assert stats is not None
    assert stats.tokenizer == "tiktoken:cl100k_base"
    assert stats.counted_pairs == 20
    assert stats.prompt_tokens == sum(first[0]) + sum(second[0])
    assert stats.completion_tokens == 100
    assert stats.total_tokens == sum(range(10, 201, 10))
    assert stats.mean_pair_tokens == 105.0
    assert (stats.p5_pair_tokens, stats.p50_pair_tokens, stats.p95_pair_tokens) == (10, 100, 190)
    assert stats.max_pair_tokens == 200
    assert stats.pairs_over_context == ((150, 5), (4_096, 0), (8_192, 0), (16_385, 0))
    assert stats.training_tokens_per_epoch == sum(min(t, 150) for t in range(10, 201, 10))


def test_no_token_statistics_when_two_tokenizers_counted() -> None:
    members = [
        summary(prompt=(1,), completion=(1,), pairs=1),
        summary(prompt=(1,), completion=(1,), pairs=1, tokenizer="huggingface:x"),
    ]
    assert analytics.compute(members, 100).tokens is None


def test_stored_json_reads_back_equal() -> None:
    members = [
        summary(quality=4.4, prompt=(30, 40), completion=(5, 6), emotions=("a", "b")),
        summary(quality=1.1, persona="q", prompt=(9, 9), completion=(1, 1)),
    ]
    figures = analytics.compute(members, 45)
    assert analytics.Analytics.from_json(figures.to_json()) == figures
    old = analytics.compute([ConversationSummary(str(uuid.uuid4()), 1, 3, True, "p", "a", "t")], 9)
    assert analytics.Analytics.from_json(old.to_json()) == old


def test_column_summaries_keep_emotions_and_tokens() -> None:
    members = [
        summary(prompt=(3, 4), completion=(1, 2), emotions=("x", "y")),
        ConversationSummary(str(uuid.uuid4()), 1, 2.0, True, "p", "a", "t"),
        summary(pairs=3, emotions=("y", "y", "z"), prompt=(), completion=()),
    ]
    assert list(aggregate.Summaries(members)) == members


def test_the_card_sections_show_every_figure() -> None:
    members = [
        summary(quality=4.4, prompt=(3000, 40), completion=(5, 6), emotions=("fear", "hope")),
        summary(quality=1.1, persona="q", prompt=(9, 9), completion=(1, 1), reviewed=True),
    ]
    text = "\n".join(card_analytics.analytics_sections(analytics.compute(members, 2048)))
    assert "| Persona | 2 | 1.000 | 1.00 |" in text
    assert "| Emotional arc | 1 | – | 1.00 |" in text
    assert "| fear | 1 | 25.0% |" in text and "| calm | 2 | 50.0% |" in text
    assert "| 1 – 1.5) | 1 |" in text and "| 4 – 4.5] | 1 |" in text
    assert "1 human-reviewed (50.0%)" in text
    assert "| 2 | 2 |" in text  # two conversations of two pairs
    assert "Counted with `tiktoken:cl100k_base` over the 4 pairs" in text
    assert "| Total | 3,071 |" in text
    assert "| p5 / p50 / p95 / max per pair | 10 / 10 / 3,005 / 3,005 |" in text
    assert "| Training tokens per epoch (each pair capped at 2,048) | 2,114 |" in text
    assert "| Pairs over 2,048 tokens | 1 |" in text and "| Pairs over 4,096 tokens | 0 |" in text
    old = ConversationSummary(str(uuid.uuid4()), 1, 2.0, True, "p", "a", "t")
    untold = "\n".join(card_analytics.analytics_sections(analytics.compute([old], 100)))
    assert "Not counted: some conversations were added before tokens were counted." in untold
