"""A version's outputs as callers name them: formats, splits, and how a build splits.

The contract numbers its formats and splits (`FileFormat`, `Split`); people type names
(``openai_chat``, ``validation``). `Format` and `Split` are those names, each member
knowing its enum value, and `SplitOptions` is a build's train/validation split. Every
method argument that fills a `FileFormat` or `Split` field takes a name, a member or the
enum's value, and a `SplitOptions` field a `SplitOptions`: `_calls` converts them
through `CONVERTERS`, keyed by the field's enum or message type.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeAlias

from trainingfiles.v1 import resources_pb2, service_pb2

from ._selectors import pair_filter_message, selector_message

__all__ = ["CONVERTERS", "Format", "FormatLike", "Split", "SplitLike", "SplitOptions"]


class _Named(enum.StrEnum):
    """Names for the values of one of the contract's enums."""

    @classmethod
    def _table(cls) -> tuple[str, Mapping[str, str]]:
        """The enum values' prefix and the old spellings still accepted."""
        raise NotImplementedError

    @property
    def proto(self) -> int:
        """The member's value in the contract's enum."""
        return _VALUES[self]

    @classmethod
    def of(cls, value: object) -> Self:
        """The member for a name (or an old spelling), a member, the enum's value or its
        full name (``FILE_FORMAT_PARQUET``); a ValueError names the valid ones."""
        if isinstance(value, cls):
            return value
        prefix, aliases = cls._table()
        if isinstance(value, str):
            name = value.lower().removeprefix(prefix.lower())
            name = aliases.get(name, name)
            if name in cls._value2member_map_:
                return cls(name)
        elif isinstance(value, int) and not isinstance(value, bool):
            for member in cls:
                if member.proto == value:
                    return member
        valid = ", ".join(member.value for member in cls)
        raise ValueError(f"unknown {cls.__name__.lower()} {value!r}: one of {valid}")


class Format(_Named):
    """The formats of a training file's outputs, by the names people type.

    ``json`` and ``jsonl`` still name `V4_JSON` and `V4_JSONL`. The dataset card is
    always produced and never asked for.

    Example:
        >>> Format.of("openai_chat").proto == resources_pb2.FILE_FORMAT_OPENAI_CHAT
        True
        >>> Format.of(resources_pb2.FILE_FORMAT_JSONL)
        <Format.V4_JSONL: 'v4_jsonl'>
    """

    V4_JSON = "v4_json"
    V4_JSONL = "v4_jsonl"
    OPENAI_CHAT = "openai_chat"
    CHAT_MESSAGES = "chat_messages"
    PROMPT_COMPLETION = "prompt_completion"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PARQUET = "parquet"
    DATASET_CARD = "dataset_card"

    @classmethod
    def _table(cls) -> tuple[str, Mapping[str, str]]:
        return "FILE_FORMAT_", {"json": "v4_json", "jsonl": "v4_jsonl"}

    @classmethod
    def requestable(cls) -> list[Format]:
        """The formats a build or an export can ask for: all but the card.

        Example:
            >>> [f.value for f in Format.requestable()][:3]
            ['v4_json', 'v4_jsonl', 'openai_chat']
        """
        return [f for f in cls if f is not cls.DATASET_CARD]


class Split(_Named):
    """Which part of a file an output holds: the whole file, or one side of a split.

    Example:
        >>> Split.of("validation").proto == resources_pb2.SPLIT_VALIDATION
        True
    """

    ALL = "all"
    TRAIN = "train"
    VALIDATION = "validation"

    @classmethod
    def _table(cls) -> tuple[str, Mapping[str, str]]:
        return "SPLIT_", {}


# The v4 formats' enum names predate the others' (FILE_FORMAT_JSON, not …_V4_JSON).
_VALUES: Final[Mapping[_Named, int]] = {
    **{
        f: resources_pb2.FileFormat.Value(
            "FILE_FORMAT_" + {"V4_JSON": "JSON", "V4_JSONL": "JSONL"}.get(f.name, f.name)
        )
        for f in Format
    },
    **{s: resources_pb2.Split.Value(f"SPLIT_{s.name}") for s in Split},
}

FormatLike: TypeAlias = Format | str | int
"""A format: a `Format`, its name (``"parquet"``), or a `FileFormat` value."""
SplitLike: TypeAlias = Split | str | int
"""A split: a `Split`, its name (``"validation"``), or a `Split` enum value."""

Stratify: TypeAlias = Literal["persona", "training_topic"]
_STRATIFY: Final[Mapping[str, int]] = {
    "persona": resources_pb2.SplitOptions.STRATIFY_PERSONA,
    "training_topic": resources_pb2.SplitOptions.STRATIFY_TRAINING_TOPIC,
}


@dataclass(frozen=True, slots=True)
class SplitOptions:
    """A build's train/validation split, by conversation (the contract's `SplitOptions`).

    Exactly one of `validation_fraction` (of the conversations, in (0, 1)) and
    `validation_count` (conversations). The same `seed` and conversations give the same
    split; `stratify` keeps personas or training topics in proportion on both sides. The
    server checks the values (INVALID_ARGUMENT naming the field).

    Example:
        >>> ten_percent = SplitOptions(validation_fraction=0.1, seed=7)
        >>> client.create_training_file("q3", ids, formats=["parquet"], split=ten_percent)
        >>> SplitOptions(validation_count=20, stratify="persona").proto().validation_count
        20
    """

    validation_fraction: float | None = None
    validation_count: int | None = None
    seed: int = 0
    stratify: Stratify | None = None

    def __post_init__(self) -> None:
        if (self.validation_fraction is None) == (self.validation_count is None):
            raise ValueError("a split takes one of validation_fraction and validation_count")
        if self.stratify is not None and self.stratify not in _STRATIFY:
            raise ValueError(f"unknown stratify {self.stratify!r}: one of {', '.join(_STRATIFY)}")

    def proto(self) -> resources_pb2.SplitOptions:
        """The contract's message.

        Example:
            >>> SplitOptions(validation_fraction=0.1).proto().validation_fraction
            0.1
        """
        message = resources_pb2.SplitOptions(seed=self.seed)
        if self.validation_fraction is not None:
            message.validation_fraction = self.validation_fraction
        if self.validation_count is not None:
            message.validation_count = self.validation_count
        if self.stratify is not None:
            message.stratify = _STRATIFY[self.stratify]  # type: ignore[assignment]
        return message

    @classmethod
    def of(cls, message: resources_pb2.SplitOptions) -> SplitOptions | None:
        """The split a message describes; None for an unset one (no split).

        Example:
            >>> SplitOptions.of(training_file.split)
            SplitOptions(validation_fraction=0.1, validation_count=None, seed=7, stratify=None)
        """
        size = message.WhichOneof("size")
        if size is None:
            return None
        stratify = next((k for k, v in _STRATIFY.items() if v == message.stratify), None)
        fraction = message.validation_fraction if size == "validation_fraction" else None
        count = message.validation_count if size == "validation_count" else None
        return cls(fraction, count, message.seed, stratify)  # type: ignore[arg-type]


def _split_options(value: Any) -> Any:
    return value.proto() if isinstance(value, SplitOptions) else value


# How an argument becomes the field it fills, by the field's enum or message type.
CONVERTERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    resources_pb2.FileFormat.DESCRIPTOR.full_name: lambda value: Format.of(value).proto,
    resources_pb2.Split.DESCRIPTOR.full_name: lambda value: Split.of(value).proto,
    resources_pb2.SplitOptions.DESCRIPTOR.full_name: _split_options,
    service_pb2.ConversationSelector.DESCRIPTOR.full_name: selector_message,
    resources_pb2.PairFilter.DESCRIPTOR.full_name: pair_filter_message,
}
