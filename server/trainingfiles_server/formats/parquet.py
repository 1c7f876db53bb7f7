"""Parquet: the Hugging Face Hub's native format, one row per trainable pair.

The row is the chat (`messages`: the system prompt, the history and the user input as
`messages.dialogue` gives them, the target response as the last assistant turn: the
conversational shape TRL's `SFTTrainer` reads) plus the pair's ids, quality and
scaffolding keys as typed columns, so a trainer can filter or stratify without parsing
JSON. Everything else of a pair (emotional context, quality criteria, unknown fields)
stays in the v4 outputs, the file of record.

Rows are buffered into row groups: a group is written when it has `row_group_rows` rows
or about `row_group_bytes` of text, whichever comes first, so memory holds one row group
and no Arrow string array nears its 2 GiB offset limit. The writer's sink is drained
after each group; the concatenation of everything `feed` and `close` return is the file
(magic, row groups, footer).
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from .base import Format, Pair, Turn
from .messages import ASSISTANT, USER, dialogue, system_prompt

# Row-group bounds: the row count matches what `datasets` writes; the text budget keeps
# a group of long conversations (a system prompt and a growing history in every pair)
# from holding hundreds of MiB.
ROW_GROUP_ROWS: Final = 1000
ROW_GROUP_BYTES: Final = 32 << 20

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

# Every column is nullable in Parquet terms, but only the last three ever hold a null
# (a key or difficulty a pair does not carry; a pair always has a quality score and a
# review flag, the validator requires them).
SCHEMA: Final = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("conversation_id", pa.string()),
        pa.field("turn_number", pa.int64()),
        pa.field("messages", pa.list_(MESSAGE)),
        pa.field("quality_score", pa.float64()),
        pa.field("human_reviewed", pa.bool_()),
        pa.field("persona_key", pa.string()),
        pa.field("emotional_arc_key", pa.string()),
        pa.field("training_topic_key", pa.string()),
        pa.field("difficulty_level", pa.string()),
    ]
)

# The same schema as Hugging Face `datasets` features (the YAML list form of the card's
# `dataset_info`). Spelled out because `datasets` is not a runtime dependency; a test
# checks it against `datasets.Features.from_arrow_schema(SCHEMA)`.
FEATURES: Final[list[dict[str, Any]]] = [
    {"name": "id", "dtype": "string"},
    {"name": "conversation_id", "dtype": "string"},
    {"name": "turn_number", "dtype": "int64"},
    {
        "name": "messages",
        "list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}],
    },
    {"name": "quality_score", "dtype": "float64"},
    {"name": "human_reviewed", "dtype": "bool"},
    {"name": "persona_key", "dtype": "string"},
    {"name": "emotional_arc_key", "dtype": "string"},
    {"name": "training_topic_key", "dtype": "string"},
    {"name": "difficulty_level", "dtype": "string"},
]

_SCAFFOLDING_KEYS: Final = ("persona_key", "emotional_arc_key", "training_topic_key")


class _Sink(io.RawIOBase):
    """A write-only stream that keeps what was written until drained.

    `pa.BufferOutputStream` cannot be emptied without closing it; the writer only needs
    `write` and a `tell` that counts every byte ever written (the footer's offsets).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._pending += view
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = bytes(self._pending)
        self._pending.clear()
        return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_SYSTEM: Final = "system"
_UTF8: Final = {role: role.encode() for role in (_SYSTEM, USER, ASSISTANT)}


# Arrow arrays are built from their buffers here rather than with `pa.array`: the first
# `pa.array` call of a process imports pandas when it is installed (to check whether the
# values are a pandas object), which costs ~0.7 s of CPU and ~60 MB of memory that stay.


def _validity(values: Sequence[object]) -> pa.Buffer | None:
    """The validity bitmap of `values` (None is null); None when nothing is null."""
    if None not in values:
        return None
    bitmap = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value is not None:
            bitmap[index >> 3] |= 1 << (index & 7)
    return pa.py_buffer(bitmap)


def _strings(values: Sequence[str | None]) -> pa.Array:
    """A `string` array: the UTF-8 of every value end to end, and where each one starts."""
    encoded = [b"" if value is None else value.encode() for value in values]
    offsets = array("i", accumulate(map(len, encoded), initial=0))
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [_validity(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
    )


def _numbers(values: Sequence[Any], arrow_type: pa.DataType, code: str) -> pa.Array:
    """An `int64` (code "q") or `float64` ("d") array; a null's slot holds 0."""
    data = array(code, [0 if value is None else value for value in values])
    return pa.Array.from_buffers(arrow_type, len(values), [_validity(values), pa.py_buffer(data)])


def _booleans(values: Sequence[bool | None]) -> pa.Array:
    bitmap = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value:
            bitmap[index >> 3] |= 1 << (index & 7)
    return pa.Array.from_buffers(pa.bool_(), len(values), [_validity(values), pa.py_buffer(bitmap)])


class ParquetRenderer:
    """Buffers one row group column by column, and makes its Arrow arrays from the buffers.

    The `messages` column is kept as its Arrow buffers (list offsets; roles and contents
    as UTF-8 with their offsets), the other columns as Python lists of their values.
    This costs less than `pa.Table.from_pydict` of rows holding lists of message dicts,
    and never calls `pa.array` (see the comment above `_validity`). The output is byte for byte
    what `from_pydict` gave.
    """

    def __init__(
        self, *, row_group_rows: int = ROW_GROUP_ROWS, row_group_bytes: int = ROW_GROUP_BYTES
    ) -> None:
        self._max_rows = row_group_rows
        self._max_bytes = row_group_bytes
        self._sink = _Sink()
        # zstd: the system prompt repeats in every row and compresses to almost nothing.
        # Page index and content-defined chunking as the Hub recommends: the viewer reads
        # pages, and Xet storage deduplicates the pages a new version shares with the last.
        self._writer = pq.ParquetWriter(
            self._sink,
            SCHEMA,
            compression="zstd",
            write_page_index=True,
            use_content_defined_chunking=True,
        )
        self._ids: list[str | None] = []
        self._conversation_ids: list[str | None] = []
        self._turns: list[Any] = []
        # The messages column as its Arrow buffers: where each row's messages end (row i
        # is messages ends[i]:ends[i + 1]), and each message's role and content as UTF-8,
        # end to end, with where each one ends. Encoded as rows arrive, so a row group
        # holds its text once, and not the pairs' strings.
        self._ends = array("i", [0])
        self._roles = bytearray()
        self._role_ends = array("i", [0])
        self._contents = bytearray()
        self._content_ends = array("i", [0])
        self._scores: list[float | None] = []
        self._reviewed: list[bool | None] = []
        self._keys: tuple[list[str | None], ...] = tuple([] for _ in _SCAFFOLDING_KEYS)
        self._difficulty: list[str | None] = []
        self._rows = 0
        self._bytes = 0

    def feed(self, pair: Pair, turns: Sequence[Turn] | None = None) -> bytes:
        roles, role_ends = self._roles, self._role_ends
        contents, content_ends = self._contents, self._content_ends
        # The chat: system prompt (when not empty), dialogue, target response.
        size = 0
        system = system_prompt(pair)
        if system:
            roles += _UTF8[_SYSTEM]
            role_ends.append(len(roles))
            contents += system.encode()
            content_ends.append(len(contents))
            size = len(system)
        for role, content in dialogue(pair) if turns is None else turns:
            roles += _UTF8[role]
            role_ends.append(len(roles))
            contents += content.encode()
            content_ends.append(len(contents))
            size += len(content)
        target = pair["target_response"]
        roles += _UTF8[ASSISTANT]
        role_ends.append(len(roles))
        contents += target.encode()
        content_ends.append(len(contents))
        size += len(target)
        self._ends.append(len(content_ends) - 1)

        metadata = pair.get("training_metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        # The keys as the distribution counts them (input_parameters), else as the
        # conversation metadata repeats them.
        params = pair.get("input_parameters")
        params = params if isinstance(params, Mapping) else {}
        conversation = pair.get("conversation_metadata")
        conversation = conversation if isinstance(conversation, Mapping) else {}
        score = metadata.get("quality_score")
        reviewed = metadata.get("human_reviewed")

        self._ids.append(_text(pair.get("id")))
        self._conversation_ids.append(_text(pair.get("conversation_id")))
        self._turns.append(pair.get("turn_number"))
        self._scores.append(
            float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
        )
        self._reviewed.append(reviewed if isinstance(reviewed, bool) else None)
        for key, values in zip(_SCAFFOLDING_KEYS, self._keys, strict=True):
            values.append(_text(params.get(key)) or _text(conversation.get(key)))
        self._difficulty.append(_text(metadata.get("difficulty_level")))

        self._rows += 1
        # Characters, not UTF-8 bytes: an estimate is enough for a budget.
        self._bytes += size
        if self._rows >= self._max_rows or self._bytes >= self._max_bytes:
            self._flush()
            return self._sink.drain()
        return b""

    def close(self) -> bytes:
        self._flush()
        self._writer.close()  # the footer
        return self._sink.drain()

    def _flush(self) -> None:
        if not self._rows:
            return
        count = len(self._content_ends) - 1
        chat = pa.StructArray.from_arrays(
            [
                pa.Array.from_buffers(
                    pa.string(),
                    count,
                    [None, pa.py_buffer(self._role_ends), pa.py_buffer(self._roles)],
                ),
                pa.Array.from_buffers(
                    pa.string(),
                    count,
                    [None, pa.py_buffer(self._content_ends), pa.py_buffer(self._contents)],
                ),
            ],
            fields=list(MESSAGE),
        )
        messages = pa.Array.from_buffers(
            SCHEMA.field("messages").type,
            self._rows,
            [None, pa.py_buffer(self._ends)],
            children=[chat],
        )
        table = pa.Table.from_arrays(
            [
                _strings(self._ids),
                _strings(self._conversation_ids),
                _numbers(self._turns, pa.int64(), "q"),
                messages,
                _numbers(self._scores, pa.float64(), "d"),
                _booleans(self._reviewed),
                *(_strings(values) for values in self._keys),
                _strings(self._difficulty),
            ],
            schema=SCHEMA,
        )
        self._writer.write_table(table, row_group_size=self._rows)
        del table, messages, chat  # Arrow's views of the buffers, before they change
        for values in (
            self._ids,
            self._conversation_ids,
            self._turns,
            self._scores,
            self._reviewed,
            *self._keys,
            self._difficulty,
        ):
            values.clear()
        # New buffers rather than cleared ones: the writer may still hold a view.
        self._ends = array("i", [0])
        self._roles = bytearray()
        self._role_ends = array("i", [0])
        self._contents = bytearray()
        self._content_ends = array("i", [0])
        self._rows = 0
        self._bytes = 0


PARQUET = Format(
    name="parquet",
    proto_value=8,
    extension="parquet",
    content_type="application/vnd.apache.parquet",
    summary="Apache Parquet for the Hugging Face Hub: a `messages` chat column plus the "
    "pair's ids, quality and scaffolding keys as typed columns",
    new_renderer=ParquetRenderer,
    features=FEATURES,
)
