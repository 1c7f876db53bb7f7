"""The web console's pure parts: its SVG charts, the shapes its pages show, its rules."""

from __future__ import annotations

import re

from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2
from trainingfiles_web.app import _safe_next, _subject_id
from trainingfiles_web.charts import Bar, Column, bar_chart, column_chart
from trainingfiles_web.present import charts, progress_percent, version_downloads

Stage = service_pb2.TrainingFileProgress


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_a_bar_chart_writes_every_label_and_number_as_text() -> None:
    svg = str(bar_chart("Personas", [Bar("planner", 3), Bar("widow", 1)]))
    assert _texts(svg) == ["planner", "3 (75%)", "widow", "1 (25%)"]
    widths = [float(w) for w in re.findall(r'class="bar-fill"[^>]*width="([\d.]+)"', svg)]
    assert abs(widths[0] - 3 * widths[1]) < 0.2  # bars in proportion to their counts
    assert "style=" not in svg  # nothing the Content-Security-Policy would block


def test_chart_labels_are_escaped() -> None:
    svg = str(bar_chart("<b>", [Bar("<script>alert(1)</script>", 1)]))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    column = str(column_chart("t", [Column('"><img src=x>', 2)]))
    assert "<img" not in column


def test_without_analytics_the_charts_come_from_the_file() -> None:
    training_file = resources_pb2.TrainingFile(conversation_count=4)
    training_file.scaffolding_distribution.personas.update({"b": 1, "a": 1, "c": 2})
    training_file.scaffolding_distribution.training_topics.update({"t": 4})
    training_file.quality_summary.avg_quality_score = 3.5
    training_file.quality_summary.max_quality_score = 4.5
    training_file.quality_summary.min_quality_score = 2.0
    training_file.quality_summary.human_reviewed_count = 1
    shown = charts(training_file, None)
    assert not shown.from_analytics
    assert [title for title, _, _ in shown.distributions] == [
        "Personas",
        "Emotional arcs",
        "Training topics",
    ]
    # Largest first, ties by key.
    assert _texts(str(shown.distributions[0][1])) == [
        "c",
        "2 (50%)",
        "a",
        "1 (25%)",
        "b",
        "1 (25%)",
    ]
    assert "mean 3.50" in _texts(str(shown.quality))
    assert shown.reviewed == "1 reviewed (25%)"


def test_with_analytics_every_chart_and_the_tokens_are_shown() -> None:
    analytics = analytics_pb2.TrainingFileAnalytics(
        distributions=[
            analytics_pb2.Distribution(
                dimension=analytics_pb2.ANALYTICS_DIMENSION_PERSONA,
                buckets=[analytics_pb2.DistributionBucket(key="p", count=3, share=1.0)],
                total=3,
                largest_to_smallest_ratio=1.0,
            ),
            analytics_pb2.Distribution(
                dimension=analytics_pb2.ANALYTICS_DIMENSION_EMOTION,
                buckets=[
                    analytics_pb2.DistributionBucket(key="hope", count=6, share=0.6),
                    analytics_pb2.DistributionBucket(key="fear", count=4, share=0.4),
                ],
                total=10,
                normalized_entropy=0.97,
                largest_to_smallest_ratio=1.5,
            ),
        ],
        quality=analytics_pb2.QualityHistogram(
            bins=[
                analytics_pb2.HistogramBin(lower=3.0, upper=3.5, count=1),
                analytics_pb2.HistogramBin(lower=3.5, upper=4.0, count=2),
            ],
            reviewed_count=1,
            reviewed_share=1 / 3,
        ),
        pairs_per_conversation=[analytics_pb2.PairCountBucket(pair_count=5, conversation_count=3)],
        tokens=analytics_pb2.TokenStatistics(tokenizer="tiktoken:cl100k_base", total_tokens=9),
    )
    shown = charts(resources_pb2.TrainingFile(), analytics)
    assert shown.from_analytics
    titles = [title for title, _, _ in shown.distributions]
    assert titles == ["Personas", "Emotions (per training pair)"]
    assert shown.distributions[1][2] == "balance 0.97 (1 = even) · largest ÷ smallest 1.5"
    assert _texts(str(shown.quality)) == ["1", "3–3.5", "2", "3.5–4"]
    assert shown.reviewed == "1 reviewed (33%)"
    assert _texts(str(shown.pairs)) == ["3", "5"]
    assert shown.tokens is not None
    assert shown.tokens.total_tokens == 9


def test_a_version_offers_every_output_it_has_until_it_is_pruned() -> None:
    outputs = [
        resources_pb2.TrainingFileOutput(format=resources_pb2.FILE_FORMAT_DATASET_CARD),
        resources_pb2.TrainingFileOutput(
            format=resources_pb2.FILE_FORMAT_OPENAI_CHAT, split=resources_pb2.SPLIT_TRAIN
        ),
        resources_pb2.TrainingFileOutput(format=resources_pb2.FILE_FORMAT_JSONL, size_bytes=2048),
        resources_pb2.TrainingFileOutput(format=resources_pb2.FILE_FORMAT_JSON),
    ]
    version = resources_pb2.TrainingFileVersion(version=2, outputs=outputs)
    shown = [(d.title, d.format, d.split) for d in version_downloads(version)]
    assert shown == [
        ("JSON", "v4_json", "all"),
        ("JSONL", "v4_jsonl", "all"),
        ("OpenAI chat (train)", "openai_chat", "train"),
        ("dataset card", "dataset_card", "all"),
    ]
    assert version_downloads(version)[1].size == "2.0 KB"
    version.pruned = True  # its objects are gone: nothing to download
    assert version_downloads(version) == []


def test_progress_only_grows_over_the_stages_and_stops_short_of_done() -> None:
    events = [
        (Stage.STAGE_VALIDATING, 4, 4),
        *((Stage.STAGE_FETCHING, done, 4) for done in range(5)),
        *((Stage.STAGE_AGGREGATING, done, 4) for done in range(5)),
        (Stage.STAGE_UPLOADING, 0, 0),
        (Stage.STAGE_SAVING, 0, 0),
    ]
    percents = [progress_percent(*event) for event in events]
    assert percents == sorted(percents)
    assert percents[0] > 0
    assert percents[-1] < 100  # 100 % is the finished file, nothing earlier


def test_a_violation_is_shown_against_its_conversation() -> None:
    ids = ["a", "b", "c"]
    assert _subject_id("conversation_ids[2]", ids) == "c"
    assert _subject_id("conversation_ids[9]", ids) == "conversation_ids[9]"
    assert _subject_id("0b6fed5b-d661-49f4-956c-842ea48e86cd", ids) == (
        "0b6fed5b-d661-49f4-956c-842ea48e86cd"
    )


def test_redirects_after_a_form_stay_on_the_console() -> None:
    assert _safe_next("/files?status=active", "/d") == "/files?status=active"
    for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", None, ""):
        assert _safe_next(hostile, "/d") == "/d"
