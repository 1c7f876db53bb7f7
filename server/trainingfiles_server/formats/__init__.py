"""The output formats, one module each, behind one registry.

Adding a format touches its module, one entry in `FORMATS` and one `FileFormat` enum value
in `protos/trainingfiles/v1/resources.proto`. docs/formats.md shows a record of each.
"""

from __future__ import annotations

from . import alpaca, chat, openai_chat, parquet, sharegpt, v4
from .base import Format, Pair, Renderer, Turn, trainable

__all__ = [
    "CARD",
    "DEFAULT_FORMATS",
    "FORMATS",
    "Format",
    "Pair",
    "Renderer",
    "Turn",
    "by_name",
    "by_proto",
    "file_name",
    "trainable",
]

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        v4.V4_JSON,
        v4.V4_JSONL,
        openai_chat.OPENAI_CHAT,
        chat.CHAT_MESSAGES,
        chat.PROMPT_COMPLETION,
        sharegpt.SHAREGPT,
        alpaca.ALPACA,
        parquet.PARQUET,
    )
}

# Every version has a dataset card; it is an output, but not a format one asks for.
CARD = Format(
    name="dataset_card",
    proto_value=9,
    extension="md",
    content_type="text/markdown; charset=utf-8",
    summary="the Hugging Face dataset card (README.md) describing the version",
    new_renderer=None,
    splittable=False,
)

# What a build produces when the request names no format.
DEFAULT_FORMATS = (v4.V4_JSON, v4.V4_JSONL)

_BY_PROTO = {f.proto_value: f for f in (*FORMATS.values(), CARD)}


def by_name(name: str) -> Format | None:
    return FORMATS.get(name) if name != CARD.name else CARD


def by_proto(value: int) -> Format | None:
    return _BY_PROTO.get(value)


def file_name(training_file_name: str, fmt: Format, split: str) -> str:
    """The name to save an output under; unique among a version's outputs.

    The v4 outputs keep the names they always had (`<name>.json`, `<name>.jsonl`); the
    card is `README.md`, as the Hub expects; a trainer format is
    `<name>.<format>.<ext>`, or `<name>.<format>.<split>.<ext>` for one side of a split.
    """
    if fmt is CARD:
        return "README.md"
    if not fmt.splittable:
        return f"{training_file_name}.{fmt.extension}"
    side = "" if split == "all" else f".{split}"
    return f"{training_file_name}.{fmt.name}{side}.{fmt.extension}"
