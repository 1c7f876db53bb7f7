"""The dataset card: a version's `README.md` in the Hugging Face dataset card format.

A folder holding a version's outputs under their `formats.file_name` names plus this card
loads as it is with `datasets.load_dataset(folder)`, and so does a Hub repository it is
pushed to. The YAML front matter holds:

- `configs`: one per trainer format produced (config name = registry name), each listing
  its files per split; a build without a split has one `train` split (its single `all`
  output). The first trainer format in `CardInfo.outputs` is the default config;
  `v4_jsonl` (every pair, one `train` split) is the default when there is none.
  `datasets` loads every config of a repository with the builder it infers from the
  default config's files (huggingface/datasets#7101), so only the formats that builder
  reads are configs: with Parquet as the default, Parquet alone; with a JSONL trainer
  format, the JSONL trainer formats and `v4_jsonl`. The others are listed in the body
  with the `load_dataset` call that reads them. `v4_jsonl` is read in one chunk
  (`chunksize` = its size): the JSON loader infers its schema from the first chunk and
  fails on a later one with a field it has not seen (an unknown pair field that appears
  late). `v4_json` (one document, the same pairs) is never a config.
- `dataset_info`: per config, the registry's `features` (none for `v4_jsonl`: inferred)
  and its splits with `num_examples` (the records, which `datasets` checks) and
  `num_bytes` (here the stored file's size, not the Arrow size the Hub computes).
- `size_categories`, `task_categories`, `tags`, `pretty_name`, and `language` if known.

The Markdown body describes the source, the counts, the quality summary, the scaffolding
distribution, the analytics and token statistics (`card_analytics.py`), duplicates, the
split and the files. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import yaml

from . import formats
from .aggregate import created_date
from .analytics import Analytics
from .card_analytics import analytics_sections

__all__ = ["CardInfo", "CardOutput", "CardSplit", "render_card"]

# The JSON loader's default chunk; `v4_jsonl`'s is raised to the file's size (see above).
_JSON_CHUNK: Final = 10 << 20

# The Hub's spellings, by upper bound (exclusive) on the number of examples.
_SIZE_CATEGORIES: Final = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)

_DISTRIBUTION_TITLES: Final = (
    ("personas", "Personas", "persona_key"),
    ("emotional_arcs", "Emotional arcs", "emotional_arc_key"),
    ("training_topics", "Training topics", "training_topic_key"),
)


@dataclass(frozen=True, slots=True)
class CardSplit:
    """The version's train/validation split, by conversation (`splits.SplitSpec`).

    Exactly one of `validation_fraction` and `validation_count` is set. The pair counts
    are the v4 pairs of each side's conversations; the rows of each trainer output (less
    untrainable and dropped duplicate pairs) are its `CardOutput.record_count`.
    """

    seed: int
    train_conversations: int
    train_pairs: int
    validation_conversations: int
    validation_pairs: int
    validation_fraction: float | None = None
    validation_count: int | None = None
    stratify: str | None = None  # "persona", "training_topic", or None: not stratified


@dataclass(frozen=True, slots=True)
class CardOutput:
    """One stored output of the version (the card itself is not one of them)."""

    format: str  # a registry name: "v4_json", "v4_jsonl", "parquet", "openai_chat", ...
    split: str  # "all", "train" or "validation"
    file_name: str  # as `formats.file_name` names it
    record_count: int  # lines, rows, or the JSON document's pairs
    size_bytes: int


@dataclass(frozen=True, slots=True)
class CardInfo:
    """What the card says about one version of a training file.

    `outputs` are in the order trainer formats were requested (the first trainer format
    is the default config); v4 outputs may come anywhere.
    """

    name: str
    training_file_id: str
    version: int
    created: datetime  # the version's creation, UTC
    vertical: str
    conversation_count: int
    pair_count: int  # every pair of the v4 outputs
    avg_quality_score: Decimal  # over conversations, 2 places (docs/formats.md, `v4_json`)
    min_quality_score: Decimal
    max_quality_score: Decimal
    human_reviewed_count: int  # conversations
    # {"personas": {key: conversations}, "emotional_arcs": {...}, "training_topics": {...}}
    scaffolding_distribution: Mapping[str, Mapping[str, int]]
    duplicate_pairs: int
    duplicates_dropped: bool
    untrainable_pairs: int  # pairs without a target response
    outputs: tuple[CardOutput, ...]
    description: str | None = None
    split: CardSplit | None = None
    languages: tuple[str, ...] = ()  # ISO 639-1 codes for the `language` field, if known
    analytics: Analytics | None = None  # the version's (`analytics.py`), if computed


def render_card(card: CardInfo) -> bytes:
    """The README.md: YAML front matter, then the Markdown description."""
    front = yaml.safe_dump(
        _front_matter(card), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return f"---\n{front}---\n\n{_body(card)}".encode()


# --- front matter -----------------------------------------------------------------------


def _front_matter(card: CardInfo) -> dict[str, Any]:
    configs: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for name, outputs in _configs(card).items():
        fmt = formats.FORMATS[name]
        config: dict[str, Any] = {
            "config_name": name,
            "data_files": [{"split": _split(o), "path": o.file_name} for o in outputs],
        }
        if name == "v4_jsonl":
            config["chunksize"] = max(_JSON_CHUNK, max(o.size_bytes for o in outputs))
        configs.append(config)
        info: dict[str, Any] = {"config_name": name}
        if fmt.features is not None:
            info["features"] = fmt.features
        info["splits"] = [
            {"name": _split(o), "num_bytes": o.size_bytes, "num_examples": o.record_count}
            for o in outputs
        ]
        info["download_size"] = sum(o.size_bytes for o in outputs)
        infos.append(info)
    if configs:
        configs[0]["default"] = True

    matter: dict[str, Any] = {"pretty_name": card.name}
    if card.languages:
        matter["language"] = list(card.languages)
    matter["tags"] = ["conversational", "sft", _slug(card.vertical)]
    matter["task_categories"] = ["text-generation"]
    matter["size_categories"] = [_size_category(card.pair_count)]
    matter["configs"] = configs
    matter["dataset_info"] = infos
    return matter


def _by_format(card: CardInfo) -> dict[str, list[CardOutput]]:
    """Outputs per format: trainer formats in request order, then `v4_jsonl`, `v4_json`."""
    trainer: dict[str, list[CardOutput]] = {}
    v4: dict[str, list[CardOutput]] = {}
    for output in card.outputs:
        fmt = formats.by_name(output.format)
        if fmt is None:
            raise ValueError(f"unknown output format {output.format!r}")
        if fmt is formats.CARD:
            continue
        (trainer if fmt.splittable else v4).setdefault(fmt.name, []).append(output)
    for outputs in trainer.values():
        outputs.sort(key=lambda o: _SPLIT_ORDER.get(o.split, len(_SPLIT_ORDER)))
    for name in ("v4_jsonl", "v4_json"):
        if name in v4:
            trainer[name] = v4[name]
    return trainer


def _configs(card: CardInfo) -> dict[str, list[CardOutput]]:
    """The formats that are configs, default first (see the module docstring)."""
    candidates = {name: outputs for name, outputs in _by_format(card).items() if name != "v4_json"}
    if not candidates:
        return {}
    builder = _builder(next(iter(candidates)))
    return {name: o for name, o in candidates.items() if _builder(name) == builder}


def _builder(name: str) -> str:
    """The `datasets` packaged builder that reads a format's files."""
    return "parquet" if formats.FORMATS[name].extension == "parquet" else "json"


_SPLIT_ORDER: Final = {"all": 0, "train": 0, "validation": 1}


def _split(output: CardOutput) -> str:
    # Without a split a trainer format's single output is the whole file: `train`.
    return "train" if output.split == "all" else output.split


def _size_category(n: int) -> str:
    for bound, label in _SIZE_CATEGORIES:
        if n < bound:
            return label
    return "n>1T"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# --- body --------------------------------------------------------------------------------


def _body(card: CardInfo) -> str:
    configs = _configs(card)
    default = next(iter(configs), None)
    lines: list[str] = [f"# {_inline(card.name)}", ""]
    if card.description:
        lines += [card.description.strip(), ""]
    lines += [
        f"Version {card.version} of the training file `{_code(card.name)}` "
        f"(id `{card.training_file_id}`), created {created_date(card.created)} by the "
        f"Training File Service from enriched conversations of the vertical "
        f"`{_code(card.vertical)}`. Each example is one training pair: the target response "
        "to a client's message, with the system prompt and the conversation so far.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
    ]
    for name in configs:
        if name == default:
            lines.append(f'ds = load_dataset("path/or/repo")  # the default config: {name}')
        else:
            lines.append(f'ds = load_dataset("path/or/repo", "{name}")')
    others = {n: o for n, o in _by_format(card).items() if n not in configs}
    if others:
        lines += [
            "",
            "# Files that are not configs (a repository's configs share one builder);",
            "# paths relative to this folder, or hf://datasets/<repo>/<file> on the Hub:",
        ]
    for name, outputs in others.items():
        files = ", ".join(f'"{_split(o)}": "{_code(o.file_name)}"' for o in outputs)
        field = ', field="training_pairs"' if name == "v4_json" else ""
        lines.append(f'{name} = load_dataset("{_builder(name)}", data_files={{{files}}}{field})')
    lines += [
        "```",
        "",
        "Configs: " + (", ".join(f"`{n}` ({_summary(n)})" for n in configs) or "none") + ".",
        "",
        "## Counts",
        "",
        "| | |",
        "|---|---:|",
        f"| Conversations | {card.conversation_count:,} |",
        f"| Training pairs | {card.pair_count:,} |",
        f"| Pairs without a target response | {card.untrainable_pairs:,} |",
        f"| Duplicate pairs | {card.duplicate_pairs:,} |",
    ]
    if card.split is not None:
        lines += [
            f"| Train: conversations / pairs | {card.split.train_conversations:,} / "
            f"{card.split.train_pairs:,} |",
            f"| Validation: conversations / pairs | {card.split.validation_conversations:,}"
            f" / {card.split.validation_pairs:,} |",
        ]
    lines += [
        "",
        "Pairs without a target response have nothing to learn: they are in the v4 "
        "outputs but left out of the trainer formats.",
        "",
        "## Quality",
        "",
        "A conversation's quality is the mean `quality_score` of its pairs; the summary is "
        "over conversations.",
        "",
        "| Average | Minimum | Maximum | Human-reviewed conversations |",
        "|---:|---:|---:|---:|",
        f"| {card.avg_quality_score} | {card.min_quality_score} | {card.max_quality_score} "
        f"| {card.human_reviewed_count:,} of {card.conversation_count:,} |",
        "",
        "## Scaffolding",
        "",
        "Conversations by the persona, emotional arc and training topic they were generated from.",
    ]
    for key, title, column in _DISTRIBUTION_TITLES:
        counts = card.scaffolding_distribution.get(key, {})
        lines += [
            "",
            f"### {title}",
            "",
            f"| `{column}` | Conversations | Share |",
            "|---|---:|---:|",
        ]
        for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            share = count / card.conversation_count if card.conversation_count else 0.0
            lines.append(f"| {_cell(value)} | {count:,} | {share:.1%} |")
    if card.analytics is not None:
        lines += analytics_sections(card.analytics)
    lines += ["", "## Duplicates", "", _duplicates(card), "", "## Split", "", _split_text(card)]
    lines += [
        "",
        "## Files",
        "",
        "| File | Format | Split | Records | Size |",
        "|---|---|---|---:|---:|",
    ]
    for output in card.outputs:
        if output.format == formats.CARD.name:
            continue
        lines.append(
            f"| `{_code(output.file_name)}` | `{output.format}` | {output.split} "
            f"| {output.record_count:,} | {_size(output.size_bytes)} |"
        )
    return "\n".join(lines) + "\n"


def _summary(name: str) -> str:
    fmt = formats.FORMATS[name]
    return _inline(fmt.summary) if fmt.summary else name


def _duplicates(card: CardInfo) -> str:
    if not card.duplicate_pairs:
        return "No pair repeats an earlier one."
    what = "pair repeats" if card.duplicate_pairs == 1 else "pairs repeat"
    fate = (
        "They are left out of the trainer formats"
        if card.duplicates_dropped
        else "They are kept in the trainer formats"
    )
    return (
        f"{card.duplicate_pairs:,} {what} the content (system prompt, history, input, "
        f"target) of an earlier pair. {fate}; the v4 outputs hold every pair."
    )


def _split_text(card: CardInfo) -> str:
    split = card.split
    if split is None:
        return (
            "No train/validation split: each trainer format holds every trainable pair, "
            "as its `train` split."
        )
    if split.validation_count is not None:
        size = _count(split.validation_count, "conversation")
    else:
        size = f"a fraction {split.validation_fraction} of the conversations (rounded half up)"
    strata = {"persona": "persona", "training_topic": "training topic"}
    stratified = (
        f", stratified by {strata.get(split.stratify, split.stratify)} (each "
        f"{strata.get(split.stratify, split.stratify)} keeps its share on both sides)"
        if split.stratify
        else ", not stratified"
    )
    return (
        f"By conversation (all pairs of a conversation are on one side): the validation "
        f"side is {size}, chosen by a seeded hash of the conversation id (seed "
        f"{split.seed}){stratified}. Train: {_count(split.train_conversations, 'conversation')}"
        f", {_count(split.train_pairs, 'pair')}; validation: "
        f"{_count(split.validation_conversations, 'conversation')}, "
        f"{_count(split.validation_pairs, 'pair')}."
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"


def _inline(text: str) -> str:
    """One line of Markdown text: line breaks folded."""
    return " ".join(text.split())


def _code(text: str) -> str:
    # Inside single backticks: a backtick would end the span.
    return _inline(text).replace("`", "'")


def _cell(text: str) -> str:
    # A pipe would start a new table cell.
    return _inline(text).replace("|", "\\|")
