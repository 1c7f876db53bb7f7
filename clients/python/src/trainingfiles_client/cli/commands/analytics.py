"""``analytics``: a version's distributions, balance, quality, pairs and tokens, as tables
and bar charts in the terminal (``--json``: the message, for scripts)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from trainingfiles.v1 import analytics_pb2

from ..exits import Exit
from ..output import as_dict, table
from ..session import Session, command, file_id_argument, version_option

BAR_WIDTH = 30
_TITLES = {
    analytics_pb2.ANALYTICS_DIMENSION_PERSONA: "PERSONA",
    analytics_pb2.ANALYTICS_DIMENSION_EMOTIONAL_ARC: "EMOTIONAL ARC",
    analytics_pb2.ANALYTICS_DIMENSION_TRAINING_TOPIC: "TRAINING TOPIC",
    analytics_pb2.ANALYTICS_DIMENSION_EMOTION: "EMOTION (PAIRS)",
}


def bar(count: int, largest: int) -> str:
    """A bar of `count` against `largest`, in eighths of a character."""
    if largest <= 0 or count <= 0:
        return ""
    eighths = max(1, round(count / largest * BAR_WIDTH * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[rest]


@command(
    "analytics",
    examples=["analytics FILE_ID", "analytics FILE_ID --version 1", "analytics FILE_ID --json"],
)
@file_id_argument
@version_option
def analytics(session: Session, file_id: str, version: int | None) -> int:
    """A version's analytics: distributions and their balance, quality, pairs, tokens.

    Persona, emotional arc and training topic count conversations; emotion counts
    training pairs by their primary emotion. Balance is the normalised entropy (1:
    perfectly balanced) and the largest count over the smallest. The token statistics
    are the server's tokenizer's, over the pairs with a target response. All of it was
    computed when the version was built.
    """
    a = session.client.get_training_file_analytics(file_id, version=version, **session.options())
    if session.output.json:
        session.output.document(as_dict(a))
        return Exit.OK
    out = session.output
    out.print(
        f"version {a.version} of {a.training_file_id}: {a.conversation_count} conversations, "
        f"{a.total_training_pairs} training pairs"
    )
    for distribution in a.distributions:
        out.print("")
        out.print(_distribution(distribution))
    out.print("")
    out.print(_balance(a.distributions))
    out.print("")
    out.print(_quality(a.quality))
    out.print("")
    out.print(_pairs(a.pairs_per_conversation))
    out.print("")
    if a.HasField("tokens"):
        out.print(_tokens(a.tokens))
    else:
        out.print("tokens: not counted (the version was built before tokens were counted)")
    return Exit.OK


def _distribution(d: analytics_pb2.Distribution) -> Table:
    rows = table(
        _TITLES.get(d.dimension, str(d.dimension)), "COUNT", "SHARE", "", right=("COUNT", "SHARE")
    )
    largest = max((b.count for b in d.buckets), default=0)
    for b in d.buckets:
        rows.add_row(
            escape(b.key) or "(none)", str(b.count), f"{b.share:.1%}", bar(b.count, largest)
        )
    return rows


def _balance(distributions: Sequence[analytics_pb2.Distribution]) -> Table:
    rows = table(
        "BALANCE",
        "VALUES",
        "ENTROPY",
        "LARGEST/SMALLEST",
        right=("VALUES", "ENTROPY", "LARGEST/SMALLEST"),
    )
    for d in distributions:
        entropy = f"{d.normalized_entropy:.3f}" if d.HasField("normalized_entropy") else "–"
        ratio = (
            f"{d.largest_to_smallest_ratio:.2f}" if d.HasField("largest_to_smallest_ratio") else "–"
        )
        rows.add_row(
            _TITLES.get(d.dimension, str(d.dimension)).lower(), str(len(d.buckets)), entropy, ratio
        )
    return rows


def _quality(q: analytics_pb2.QualityHistogram) -> Table:
    rows = table("QUALITY", "CONVS", "", right=("CONVS",))
    largest = max((b.count for b in q.bins), default=0)
    for i, b in enumerate(q.bins):
        close = "]" if i == len(q.bins) - 1 else ")"
        rows.add_row(
            escape(f"[{b.lower:g}, {b.upper:g}{close}"), str(b.count), bar(b.count, largest)
        )
    rows.caption = f"human reviewed: {q.reviewed_count} ({q.reviewed_share:.1%})"
    return rows


def _pairs(buckets: Sequence[analytics_pb2.PairCountBucket]) -> Table:
    rows = table("PAIRS", "CONVS", "", right=("PAIRS", "CONVS"))
    largest = max((b.conversation_count for b in buckets), default=0)
    for b in buckets:
        rows.add_row(
            str(b.pair_count), str(b.conversation_count), bar(b.conversation_count, largest)
        )
    return rows


def _tokens(t: analytics_pb2.TokenStatistics) -> Table:
    rows = table(f"TOKENS ({t.tokenizer})", "VALUE", right=("VALUE",))
    rows.add_row("counted pairs", f"{t.counted_pairs:,}")
    rows.add_row("prompt", f"{t.prompt_tokens:,}")
    rows.add_row("completion", f"{t.completion_tokens:,}")
    rows.add_row("total", f"{t.total_tokens:,}")
    rows.add_row("mean per pair", f"{t.mean_pair_tokens:,.1f}")
    rows.add_row(
        "p5 / p50 / p95 / max",
        " / ".join(
            f"{n:,}"
            for n in (t.p5_pair_tokens, t.p50_pair_tokens, t.p95_pair_tokens, t.max_pair_tokens)
        ),
    )
    for c in t.pairs_over_context:
        rows.add_row(f"pairs over {c.context_length:,}", f"{c.pair_count:,}")
    rows.add_row("training tokens per epoch", f"{t.training_tokens_per_epoch:,}")
    return rows


COMMANDS = [analytics]
