"""What the pages show, shaped from the service's messages (pure: no I/O)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from markupsafe import Markup

from trainingfiles.v1 import analytics_pb2, resources_pb2
from trainingfiles_client import Format, Split

from .charts import Bar, Column, bar_chart, column_chart, quality_range

STATUS_NAMES: dict[int, str] = {
    resources_pb2.TRAINING_FILE_STATUS_PROCESSING: "processing",
    resources_pb2.TRAINING_FILE_STATUS_ACTIVE: "active",
    resources_pb2.TRAINING_FILE_STATUS_ARCHIVED: "archived",
    resources_pb2.TRAINING_FILE_STATUS_FAILED: "failed",
}
STATUS_BY_NAME: dict[str, int] = {name: value for value, name in STATUS_NAMES.items()}

FORMAT_TITLES = {
    Format.V4_JSON: "JSON",
    Format.V4_JSONL: "JSONL",
    Format.OPENAI_CHAT: "OpenAI chat",
    Format.CHAT_MESSAGES: "chat messages",
    Format.PROMPT_COMPLETION: "prompt/completion",
    Format.SHAREGPT: "ShareGPT",
    Format.ALPACA: "Alpaca",
    Format.PARQUET: "Parquet",
    Format.DATASET_CARD: "dataset card",
}

# The reasons a refused request gives per conversation, in the words of the page.
VIOLATION_TEXTS = {
    "CONVERSATION_NOT_ENRICHED": "not enriched",
    "CONVERSATION_NO_ENRICHED_FILE": "no enriched file",
    "CONVERSATION_ALREADY_IN_FILE": "already in the file",
    "CONVERSATION_NOT_FOUND": "not found",
    "MALFORMED_ID": "not a conversation id",
    "DUPLICATE_ID": "listed twice",
}

DIMENSION_TITLES = {
    analytics_pb2.ANALYTICS_DIMENSION_PERSONA: "Personas",
    analytics_pb2.ANALYTICS_DIMENSION_EMOTIONAL_ARC: "Emotional arcs",
    analytics_pb2.ANALYTICS_DIMENSION_TRAINING_TOPIC: "Training topics",
    analytics_pb2.ANALYTICS_DIMENSION_EMOTION: "Emotions (per training pair)",
}


def status_name(value: int) -> str:
    return STATUS_NAMES.get(value, "unknown")


def moment(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "—"
    value = stamp.ToDatetime(tzinfo=datetime.UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def violation_text(reason: str, description: str) -> str:
    return VIOLATION_TEXTS.get(reason, description or reason.lower().replace("_", " "))


@dataclass(frozen=True)
class Download:
    title: str
    format: str
    split: str
    size: str
    records: int


def _output_downloads(outputs: Iterable[resources_pb2.TrainingFileOutput]) -> list[Download]:
    found: list[Download] = []
    for output in outputs:
        fmt = Format.of(output.format)
        split = Split.of(output.split) if output.split else Split.ALL
        title = FORMAT_TITLES.get(fmt, fmt.value)
        if split is not Split.ALL:
            title = f"{title} ({split.value})"
        found.append(
            Download(title, fmt.value, split.value, size(output.size_bytes), output.record_count)
        )
    return _in_order(found)


def _in_order(found: list[Download]) -> list[Download]:
    order = list(Format)
    return sorted(found, key=lambda d: (order.index(Format(d.format)), d.split))


def downloads(training_file: resources_pb2.TrainingFile) -> list[Download]:
    """Every output of the file's current version, v4 first, as download buttons."""
    found = _output_downloads(training_file.outputs)
    if not found:  # a BASIC view or an old server: the two v4 outputs every version has
        found = [
            Download("JSON", Format.V4_JSON.value, "all", size(training_file.json_file_size), 0),
            Download("JSONL", Format.V4_JSONL.value, "all", size(training_file.jsonl_file_size), 0),
        ]
    return _in_order(found)


def version_downloads(version: resources_pb2.TrainingFileVersion) -> list[Download]:
    """Every output a version has, v4 first; none once it is pruned (its objects are gone)."""
    return [] if version.pruned else _output_downloads(version.outputs)


@dataclass
class Charts:
    """The file page's charts: from the analytics, or (without them) from the file."""

    from_analytics: bool
    distributions: list[tuple[str, Markup, str]] = field(default_factory=list)
    quality: Markup | None = None
    reviewed: str = ""
    pairs: Markup | None = None
    tokens: analytics_pb2.TokenStatistics | None = None


def _sorted_bars(counts: Mapping[str, int]) -> list[Bar]:
    return [Bar(key, count) for key, count in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]


def _balance(distribution: analytics_pb2.Distribution) -> str:
    parts = []
    if distribution.HasField("normalized_entropy"):
        parts.append(f"balance {distribution.normalized_entropy:.2f} (1 = even)")
    if distribution.HasField("largest_to_smallest_ratio"):
        parts.append(f"largest ÷ smallest {distribution.largest_to_smallest_ratio:.1f}")
    return " · ".join(parts)


def charts(
    training_file: resources_pb2.TrainingFile,
    analytics: analytics_pb2.TrainingFileAnalytics | None,
) -> Charts:
    if analytics is None:
        scaffolding = training_file.scaffolding_distribution
        result = Charts(from_analytics=False)
        for title, counts in (
            ("Personas", scaffolding.personas),
            ("Emotional arcs", scaffolding.emotional_arcs),
            ("Training topics", scaffolding.training_topics),
        ):
            result.distributions.append((title, bar_chart(title, _sorted_bars(counts)), ""))
        summary = training_file.quality_summary
        if training_file.conversation_count:
            result.quality = quality_range(
                summary.min_quality_score, summary.avg_quality_score, summary.max_quality_score
            )
            reviewed = summary.human_reviewed_count
            share = reviewed / training_file.conversation_count
            result.reviewed = f"{reviewed:,} reviewed ({share:.0%})"
        return result
    result = Charts(from_analytics=True)
    for distribution in analytics.distributions:
        title = DIMENSION_TITLES.get(distribution.dimension, "Other")
        bars = [Bar(bucket.key, bucket.count) for bucket in distribution.buckets]
        result.distributions.append((title, bar_chart(title, bars), _balance(distribution)))
    if analytics.quality.bins:
        columns = [Column(f"{b.lower:g}–{b.upper:g}", b.count) for b in analytics.quality.bins]
        result.quality = column_chart("Conversations by quality score", columns)
        quality = analytics.quality
        result.reviewed = f"{quality.reviewed_count:,} reviewed ({quality.reviewed_share:.0%})"
    if analytics.pairs_per_conversation:
        columns = [
            Column(str(b.pair_count), b.conversation_count)
            for b in analytics.pairs_per_conversation
        ]
        result.pairs = column_chart("Conversations by training pairs", columns)
    if analytics.HasField("tokens"):
        result.tokens = analytics.tokens
    return result


def progress_percent(stage: int, done: int, total: int) -> int:
    """One bar over the stages: validation 5 %, fetching to 80 %, then the rest."""
    from trainingfiles.v1 import service_pb2

    stages = service_pb2.TrainingFileProgress
    if stage == stages.STAGE_VALIDATING:
        return 5
    if stage == stages.STAGE_FETCHING:
        return 5 + (75 * done // total if total else 0)
    if stage == stages.STAGE_AGGREGATING:
        return 80 + (8 * done // total if total else 0)
    if stage == stages.STAGE_UPLOADING:
        return 90
    if stage == stages.STAGE_SAVING:
        return 95
    return 0


def stage_name(stage: int) -> str:
    from trainingfiles.v1 import service_pb2

    name: str = service_pb2.TrainingFileProgress.Stage.Name(stage)  # type: ignore[arg-type]
    return name.removeprefix("STAGE_").lower()
