"""What a build writes: its formats, its split, its duplicate handling, its object keys.

A Create fixes the plan of every later version of its file (stored on the file's row);
an Add keeps it, with any formats it asks for added; an export renders formats of the
current version under the same plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from . import formats
from .errors import InvalidArgument
from .filters import PairFilter
from .formats import Format
from .models import Split, TrainingFileRecord
from .rules import key_base, object_keys
from .splits import SplitError, SplitSpec, Stratify, assign


@dataclass(frozen=True, slots=True)
class OutputPlan:
    trainer_formats: tuple[Format, ...]  # in registry order
    split: SplitSpec | None = None
    drop_duplicates: bool = False
    # The pairs of every document read that go into the file.
    pair_filter: PairFilter = field(default_factory=PairFilter)

    @classmethod
    def of(
        cls,
        requested: Iterable[Format],
        split: SplitSpec | None,
        drop_duplicates: bool,
        pair_filter: PairFilter | None = None,
    ) -> OutputPlan:
        wanted = {f.name for f in requested}
        return cls(
            tuple(f for f in formats.FORMATS.values() if f.splittable and f.name in wanted),
            split,
            drop_duplicates,
            pair_filter or PairFilter(),
        )

    @classmethod
    def stored(cls, record: TrainingFileRecord, more: Iterable[Format] = ()) -> OutputPlan:
        """The plan of a file's versions, with formats `more` added."""
        known = [formats.FORMATS[name] for name in record.output_formats]
        return cls.of(
            [*known, *more],
            split_from_json(record.split_spec),
            record.drop_duplicates,
            PairFilter.from_json(record.pair_filter),
        )

    @property
    def format_names(self) -> list[str]:
        return [f.name for f in self.trainer_formats]

    @property
    def sides(self) -> tuple[Split, ...]:
        return (Split.TRAIN, Split.VALIDATION) if self.split else (Split.ALL,)

    def keys(
        self, file_id: UUID, name: str, moment: datetime, *, v4: bool = True
    ) -> dict[tuple[str, Split], str]:
        """Every object key of the build, by (format, split); `name` is validated.

        `<id>/<name>_<YYYYMMDDTHHMMSSZ>` then `.json`/`.jsonl` for the v4 outputs (as
        they always were), `.<format>[.<split>].<ext>` for a trainer format and
        `.README.md` for the card (`rules.key_base`).
        """
        base = key_base(file_id, name, moment)
        json_key, jsonl_key = object_keys(file_id, name, moment)
        keys = {(formats.CARD.name, Split.ALL): f"{base}.README.md"}
        if v4:
            keys[("v4_json", Split.ALL)] = json_key
            keys[("v4_jsonl", Split.ALL)] = jsonl_key
        for fmt in self.trainer_formats:
            for side in self.sides:
                suffix = "" if side is Split.ALL else f".{side.value}"
                keys[(fmt.name, side)] = f"{base}.{fmt.name}{suffix}.{fmt.extension}"
        return keys

    def validation(
        self,
        conversations: Sequence[tuple[UUID, UUID | None, UUID | None]],
    ) -> frozenset[UUID] | None:
        """The validation side, from (conversation, persona, training topic) triples.

        A side that would be empty is INVALID_ARGUMENT on the split's size field.
        """
        if self.split is None:
            return None
        column = {Stratify.PERSONA: 1, Stratify.TRAINING_TOPIC: 2}.get(self.split.stratify)
        strata = [
            (c[0], None if column is None or c[column] is None else str(c[column]))
            for c in conversations
        ]
        try:
            return assign(strata, self.split)
        except SplitError as exc:
            raise InvalidArgument.field(exc.field, str(exc), "SPLIT_SIDE_EMPTY") from None


def split_to_json(spec: SplitSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
        "validation_fraction": spec.validation_fraction,
        "validation_count": spec.validation_count,
        "seed": spec.seed,
        "stratify": spec.stratify.value,
    }


def split_from_json(value: dict[str, Any] | None) -> SplitSpec | None:
    if value is None:
        return None
    return SplitSpec(
        validation_fraction=value["validation_fraction"],
        validation_count=value["validation_count"],
        seed=value["seed"],
        stratify=Stratify(value["stratify"]),
    )
