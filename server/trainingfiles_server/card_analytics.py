"""The dataset card's analytics sections: balance, emotions, quality histogram, pairs per
conversation and token statistics, as Markdown lines (`card.py` places them). Pure."""

from __future__ import annotations

from .analytics import EMOTION, Analytics, Distribution, TokenStatistics

_TITLES = {
    "persona": "Persona",
    "emotional_arc": "Emotional arc",
    "training_topic": "Training topic",
    "emotion": "Emotion (pairs)",
}


def analytics_sections(figures: Analytics) -> list[str]:
    lines = [
        "",
        "## Balance",
        "",
        "Normalised entropy of each distribution (1: perfectly balanced, 0: one value) and "
        "its largest count over its smallest.",
        "",
        "| Dimension | Values | Normalised entropy | Largest / smallest |",
        "|---|---:|---:|---:|",
    ]
    lines += [_balance_row(d) for d in figures.distributions]
    emotion = next(d for d in figures.distributions if d.dimension == EMOTION)
    lines += [
        "",
        "## Emotions",
        "",
        "Training pairs by the primary emotion of their `emotional_context`.",
        "",
        "| Emotion | Pairs | Share |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {_cell(b.key) or '(none)'} | {b.count:,} | {b.share:.1%} |" for b in emotion.buckets
    ]
    lines += [
        "",
        "## Quality histogram",
        "",
        f"Conversations by quality score; {figures.reviewed_count:,} human-reviewed "
        f"({figures.reviewed_share:.1%}).",
        "",
        "| Quality | Conversations |",
        "|---|---:|",
    ]
    last = len(figures.quality_bins) - 1
    lines += [
        f"| {b.lower:g} – {b.upper:g}{']' if i == last else ')'} | {b.count:,} |"
        for i, b in enumerate(figures.quality_bins)
    ]
    lines += ["", "## Pairs per conversation", "", "| Pairs | Conversations |", "|---:|---:|"]
    lines += [f"| {pairs} | {count:,} |" for pairs, count in figures.pairs_per_conversation]
    lines += ["", "## Tokens", ""]
    lines += _tokens(figures.tokens)
    return lines


def _balance_row(d: Distribution) -> str:
    entropy = "–" if d.normalized_entropy is None else f"{d.normalized_entropy:.3f}"
    ratio = "–" if d.largest_to_smallest_ratio is None else f"{d.largest_to_smallest_ratio:.2f}"
    return f"| {_TITLES.get(d.dimension, d.dimension)} | {len(d.buckets):,} | {entropy} | {ratio} |"


def _tokens(stats: TokenStatistics | None) -> list[str]:
    if stats is None:
        return ["Not counted: some conversations were added before tokens were counted."]
    lines = [
        f"Counted with `{stats.tokenizer}` over the {stats.counted_pairs:,} pairs with a "
        "target response: the prompt is the system prompt, the history and the input, "
        "with the chat format's overhead per message; the completion is the target.",
        "",
        "| | |",
        "|---|---:|",
        f"| Prompt | {stats.prompt_tokens:,} |",
        f"| Completion | {stats.completion_tokens:,} |",
        f"| Total | {stats.total_tokens:,} |",
        f"| Mean per pair | {stats.mean_pair_tokens:,.1f} |",
        f"| p5 / p50 / p95 / max per pair | {stats.p5_pair_tokens:,} / "
        f"{stats.p50_pair_tokens:,} / {stats.p95_pair_tokens:,} / {stats.max_pair_tokens:,} |",
        f"| Training tokens per epoch (each pair capped at {stats.context_length:,}) "
        f"| {stats.training_tokens_per_epoch:,} |",
    ]
    lines += [
        f"| Pairs over {length:,} tokens | {count:,} |"
        for length, count in stats.pairs_over_context
    ]
    return lines


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
