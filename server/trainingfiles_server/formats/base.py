"""What an output format is: a name, a file shape, and how a training pair becomes a record.

A format's renderer is pure (no I/O): the build feeds it the training pairs of the v4
JSONL, in file order, as decoded dicts, and uploads the bytes it returns. Every format is
written in the same single pass over the documents, so a renderer never sees a pair twice
and must not hold more than a bounded amount of them (Parquet: one row group).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A decoded line of the v4 JSONL: one training pair with every field (docs/formats.md, `v4_jsonl`).
Pair = Mapping[str, Any]
# A turn of a pair's chat, as `messages.dialogue` gives them: ("user" or "assistant",
# non-empty content).
Turn = tuple[str, str]


class Renderer(Protocol):
    """Turns pairs into the bytes of one stored object, in order."""

    def feed(self, pair: Pair, turns: Sequence[Turn] | None = None) -> bytes:
        """The bytes to append for this pair now (may be empty: a buffered row group).

        `turns` is `messages.dialogue(pair)` when the caller has it already (a build feeds
        each pair to several renderers, and the dialogue is the same for all: computing
        it once saves most of a JSONL renderer's own work); None, the renderer computes
        it. Renderers do not modify it.
        """
        ...

    def close(self) -> bytes:
        """Whatever is left: the last row group, a footer. Called once, after the last pair."""
        ...


@dataclass(frozen=True, slots=True)
class Format:
    """One output format. Adding a format: its module, a registry entry, a proto enum value."""

    name: str  # the registry key and the CLI's spelling: "openai_chat"
    proto_value: int  # its `FileFormat` enum number in resources.proto
    extension: str  # of the file name, without the dot: "jsonl"
    content_type: str
    summary: str  # one line, for help texts and the dataset card
    # A fresh renderer per output; None for the v4 formats, which the build writes itself
    # (the JSON document's header needs every conversation's metrics first).
    new_renderer: Callable[[], Renderer] | None
    # The Hugging Face `datasets` features of one record, for the card's `dataset_info`;
    # None when the format is not a table (the v4 JSON document).
    features: list[dict[str, Any]] | None = None
    # True for trainer formats: each split of a build gets its own output. The v4 formats
    # always hold the whole file (they are the file of record and the source of exports).
    splittable: bool = True


def trainable(pair: Pair) -> bool:
    """Whether a pair can be a training example: it has a target response to learn.

    Pairs without one (`target_response` null or empty) stay in the v4 outputs but are
    left out of the trainer formats; the build counts and reports them.
    """
    target = pair.get("target_response")
    return isinstance(target, str) and target != ""
