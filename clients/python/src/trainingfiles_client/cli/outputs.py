"""A version's outputs on the command line: the format and split options, and how a
file's outputs, split and duplicates are shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2

from .exits import UsageError
from .output import size, table

# What a build or an export can ask for (the card is always produced, never asked for).
REQUESTABLE = [f.value for f in tfc.Format.requestable()]
# What can be downloaded: every format, and the old names of the v4 ones.
DOWNLOADABLE = [*(f.value for f in tfc.Format), "json", "jsonl"]
SPLITS = [s.value for s in tfc.Split]
STRATIFY = ["persona", "training_topic"]

Decorator = Callable[[Callable[..., int]], Callable[..., int]]


def formats_option(help_text: str, *, required: bool = False) -> Decorator:
    """``--format NAME``, repeatable, of the formats a build or an export produces."""
    return click.option(
        "--format", "formats", type=click.Choice(REQUESTABLE), multiple=True,
        required=required, metavar="NAME", help=f"{help_text} (repeatable): "
        + ", ".join(REQUESTABLE),
    )  # fmt: skip


def split_options(handler: Callable[..., int]) -> Callable[..., int]:
    """The options of a build's train/validation split (and of duplicates)."""
    for option in reversed(
        [
            click.option(
                "--validation-fraction", type=float, metavar="F",
                help="split: this fraction of the conversations for validation, e.g. 0.1",
            ),
            click.option(
                "--validation-count", type=int, metavar="N",
                help="split: this many conversations for validation",
            ),
            click.option("--seed", type=click.IntRange(min=0), help="split: its seed (default 0)"),
            click.option(
                "--stratify", type=click.Choice(STRATIFY),
                help="split: keep personas or training topics in proportion on both sides",
            ),
            click.option(
                "--drop-duplicates", is_flag=True,
                help="leave pairs that repeat earlier pairs out of the trainer formats",
            ),
        ]
    ):  # fmt: skip
        handler = option(handler)
    return handler


def split_of(
    fraction: float | None, count: int | None, seed: int | None, stratify: str | None
) -> tfc.SplitOptions | None:
    """The split the options ask for; None without one. Usage errors for a conflict."""
    if fraction is not None and count is not None:
        raise UsageError("--validation-fraction and --validation-count exclude each other")
    if fraction is None and count is None:
        if seed is not None or stratify is not None:
            raise UsageError(
                "--seed and --stratify need --validation-fraction or --validation-count"
            )
        return None
    options: dict[str, Any] = {"seed": seed or 0, "stratify": stratify}
    return tfc.SplitOptions(validation_fraction=fraction, validation_count=count, **options)


def format_name(value: int) -> str:
    try:
        return tfc.Format.of(value).value
    except ValueError:  # a format newer than this client
        return str(value)


def split_name(value: int) -> str:
    try:
        return tfc.Split.of(value).value
    except ValueError:
        return str(value)


def split_text(f: resources_pb2.TrainingFile) -> str:
    """The version's split in words; empty without one."""
    split = tfc.SplitOptions.of(f.split) if f.HasField("split") else None
    if split is None:
        return ""
    if split.validation_fraction is not None:
        size_text = f"{split.validation_fraction * 100:g} % of the conversations"
    else:
        size_text = f"{split.validation_count} conversations"
    strata = f", stratified by {split.stratify.replace('_', ' ')}" if split.stratify else ""
    return f"{size_text} for validation, seed {split.seed}{strata}"


def quality_rows(f: resources_pb2.TrainingFile) -> list[tuple[str, str]]:
    """The show command's rows on duplicates, untrainable pairs and the split."""
    kept = "dropped from" if f.duplicates_dropped else "kept in"
    rows = [
        ("duplicate pairs", f"{f.duplicate_pair_count} ({kept} the trainer formats)"),
        ("untrainable", f"{f.untrainable_pair_count} pairs without a target (not trained on)"),
    ]
    split = split_text(f)
    rows.append(("split", split or "none (each trainer format holds the whole file)"))
    return rows


def outputs_table(f: resources_pb2.TrainingFile) -> Table:
    """One row per stored output of the current version."""
    rows = table("FORMAT", "SPLIT", "RECORDS", "SIZE", "SHA256", "FILE", right=("RECORDS", "SIZE"))
    for o in f.outputs:
        rows.add_row(
            format_name(o.format),
            split_name(o.split),
            str(o.record_count),
            size(o.size_bytes),
            o.sha256[:12],
            escape(o.file_name),
        )
    return rows


def brief(training_file: resources_pb2.TrainingFile) -> str:
    """A built file in one line: its counts, what the filters left out, its formats."""
    formats = dict.fromkeys(format_name(o.format) for o in training_file.outputs)
    formats.pop("dataset_card", None)
    listed = f"; {', '.join(formats)}" if formats else ""
    filtered = ""
    if training_file.filtered_out_conversation_count or training_file.excluded_pair_count:
        filtered = (
            f" ({training_file.filtered_out_conversation_count} conversations and "
            f"{training_file.excluded_pair_count} pairs filtered out)"
        )
    return (
        f"{training_file.conversation_count} conversations, "
        f"{training_file.total_training_pairs} training pairs{filtered}, "
        f"version {training_file.version}{listed}"
    )
