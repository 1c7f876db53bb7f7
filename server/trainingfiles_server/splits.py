"""The train/validation split of a build: which conversations go to the validation side.

A build may ask for its pairs to be split into a train side and a validation side. The
split is **by conversation**: every pair of a conversation is on the same side, so the
validation side never holds turns of a conversation the model was trained on.

How the validation side is chosen
---------------------------------

1. Every conversation gets a *rank* from the split's seed (an unsigned 64-bit integer,
   default 0) and its conversation id::

       rank = int.from_bytes(
           blake2b(seed.to_bytes(8, "big") + conversation_id.bytes, digest_size=8).digest(),
           "big",
       )

   Equal ranks (which practically never happen) are ordered by the id's 16 bytes. The rank
   depends on nothing else, so the split is the same whatever the order the conversations
   were requested in, on every run and every machine; `rank` reproduces it outside the
   service.

2. The size ``k`` of the validation side among ``n`` conversations is either the
   requested ``validation_count``, or ``validation_fraction × n`` rounded half up (0.5
   rounds to 1). The fraction is taken as the decimal it is written as: 0.145 of 100 is
   14.5, which rounds to 15, even though the nearest double is a hair below 0.145.

3. Without stratification the validation side is the ``k`` conversations of lowest rank.

4. With stratification (by persona or by training topic), the conversations are grouped
   by that key, taken from the database; conversations without one form a stratum of
   their own. Each stratum gets the whole part of its proportional share
   ``k × stratum size / n``, and the seats still left go one each to the strata with the
   largest remainders (the largest-remainder method); equal remainders are ordered by
   stratum key, in ascending order, the stratum without a key last. So every stratum's
   validation size differs from its proportional share by less than one. Within a
   stratum the conversations of lowest rank go to the validation side.

Refusals: a split whose validation side or train side would be empty is refused, with the
sizes in the message — one conversation cannot be split, a count must be below the number
of conversations, and a fraction must not round to 0 or to all of them ("a validation
fraction of 0.01 of 20 conversations leaves the validation side empty").

Stability: the split is a function of the seed and the *set* of conversations (with their
strata). A conversation's side can change only when that set changes — for instance a
count-based split after an Add: the count stays, so a newly added conversation of low rank
takes a validation seat from an earlier one. For a fraction the expected side of each
conversation is stable: a conversation is on the validation side roughly when its rank
lies in the lowest ``fraction`` of the 64-bit range, which does not depend on the other
conversations, so only conversations near that cut-off can move.

Pure: no I/O. One hash per conversation and one sort per stratum (100,000 conversations
take well under a second).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from hashlib import blake2b
from typing import Literal
from uuid import UUID

__all__ = [
    "TRAIN",
    "VALIDATION",
    "Side",
    "SplitError",
    "SplitSpec",
    "Stratify",
    "assign",
    "rank",
    "side",
]

TRAIN: Literal["train"] = "train"
VALIDATION: Literal["validation"] = "validation"
Side = Literal["train", "validation"]

_UINT64_MAX = 2**64 - 1
# Wide enough that fraction × n is exact: a double's shortest repr has at most 17 digits.
_EXACT = Context(prec=60)


class SplitError(ValueError):
    """A split that cannot be made: an invalid spec, or an empty side for these sizes.

    ``field`` names the request field at fault (``split.validation_fraction``,
    ``split.validation_count``, ``split.seed``, ``split.stratify``, or ``split`` when
    neither or both of fraction and count are set).
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Stratify(enum.Enum):
    """What the validation side is proportional to, besides its size."""

    NONE = "none"
    PERSONA = "persona"
    TRAINING_TOPIC = "training_topic"


@dataclass(frozen=True, slots=True)
class SplitSpec:
    """A requested split; exactly one of the fraction and the count is set.

    Invalid values raise `SplitError` on construction, so a spec that exists is valid.
    """

    validation_fraction: float | None = None
    validation_count: int | None = None
    seed: int = 0
    stratify: Stratify = Stratify.NONE

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `SplitError` naming the first invalid field."""
        fraction, count = self.validation_fraction, self.validation_count
        if (fraction is None) == (count is None):
            which = "both" if fraction is not None else "neither"
            raise SplitError(
                "set exactly one of split.validation_fraction and split.validation_count "
                f"({which} is set)",
                "split",
            )
        if fraction is not None and (
            # bool is an int; True is not a fraction.
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (math.isfinite(fraction) and 0 < fraction < 1)
        ):
            raise SplitError(
                f"split.validation_fraction must be between 0 and 1 (exclusive), got {fraction!r}",
                "split.validation_fraction",
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise SplitError(
                f"split.validation_count must be at least 1, got {count!r}",
                "split.validation_count",
            )
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _UINT64_MAX:
            raise SplitError(
                f"split.seed must be an unsigned 64-bit integer (0 to {_UINT64_MAX}), got {seed!r}",
                "split.seed",
            )
        if not isinstance(self.stratify, Stratify):
            raise SplitError(f"split.stratify: unknown value {self.stratify!r}", "split.stratify")

    def validation_size(self, n: int) -> int:
        """``k``, the number of the `n` conversations on the validation side.

        Raises `SplitError` when either side would be empty.
        """
        fraction, count = self.validation_fraction, self.validation_count
        field = "split.validation_count" if count is not None else "split.validation_fraction"
        if n < 2:
            raise SplitError(
                f"a split needs at least 2 conversations, one for each side; "
                f"there {'is' if n == 1 else 'are'} {_conversations(n)}",
                field,
            )
        if count is not None:
            if count >= n:
                raise SplitError(
                    f"a validation count of {count} of {_conversations(n)} leaves the train "
                    f"side empty (at most {n - 1} fits)",
                    field,
                )
            return count
        assert fraction is not None  # check() guarantees exactly one is set
        # repr is the shortest decimal that reads back as this double: what the caller wrote.
        exact = _EXACT.multiply(Decimal(repr(float(fraction))), Decimal(n))
        k = int(exact.to_integral_value(rounding=ROUND_HALF_UP))
        if k == 0 or k == n:
            empty = "validation" if k == 0 else "train"
            raise SplitError(
                f"a validation fraction of {fraction} of {_conversations(n)} leaves the "
                f"{empty} side empty ({fraction} × {n} = {exact.normalize():f} rounds to {k})",
                field,
            )
        return k


def rank(seed: int, conversation_id: UUID) -> int:
    """The conversation's rank for `seed` (see the module docstring); lower goes first."""
    digest = blake2b(seed.to_bytes(8, "big") + conversation_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _rank_bytes(prefix: bytes, conversation_id: UUID) -> bytes:
    # The digest then the id: comparing these bytes compares (rank, id bytes).
    raw = conversation_id.bytes
    return blake2b(prefix + raw, digest_size=8).digest() + raw


def assign(conversations: Sequence[tuple[UUID, str | None]], spec: SplitSpec) -> frozenset[UUID]:
    """The ids of the conversations on the validation side.

    `conversations` holds each conversation once, with its stratum key (the persona or
    training topic id matching `spec.stratify`, None if it has none; ignored without
    stratification). Raises `SplitError` when a side would be empty, ValueError when an id
    repeats (a caller's bug: the requested ids are checked for repeats first).
    """
    n = len(conversations)
    k = spec.validation_size(n)
    if len({cid for cid, _ in conversations}) != n:
        raise ValueError("a conversation appears more than once in the split")
    prefix = spec.seed.to_bytes(8, "big")

    def key(entry: tuple[UUID, str | None]) -> bytes:
        return _rank_bytes(prefix, entry[0])

    if spec.stratify is Stratify.NONE:
        return frozenset(cid for cid, _ in sorted(conversations, key=key)[:k])

    strata: dict[str | None, list[tuple[UUID, str | None]]] = {}
    for entry in conversations:
        strata.setdefault(entry[1], []).append(entry)
    seats = _apportion(k, n, {stratum: len(members) for stratum, members in strata.items()})
    validation: list[UUID] = []
    for stratum, members in strata.items():
        if seats[stratum]:
            validation.extend(cid for cid, _ in sorted(members, key=key)[: seats[stratum]])
    return frozenset(validation)


def _apportion(k: int, n: int, sizes: dict[str | None, int]) -> dict[str | None, int]:
    """Largest-remainder apportionment of `k` seats by `sizes` (which sum to `n`).

    Integer arithmetic only: the share of a stratum of size m is k·m/n, whole part
    k·m // n and remainder k·m % n (in units of 1/n), so no float ever decides a tie.
    """
    seats = {stratum: k * size // n for stratum, size in sizes.items()}
    left = k - sum(seats.values())
    by_remainder = sorted(
        sizes, key=lambda s: (-(k * sizes[s] % n), s is None, "" if s is None else s)
    )
    for stratum in by_remainder[:left]:
        seats[stratum] += 1
    return seats


def side(conversation_id: UUID, validation: frozenset[UUID]) -> Side:
    """The conversation's side: `VALIDATION` if it is in `validation`, else `TRAIN`."""
    return VALIDATION if conversation_id in validation else TRAIN


def _conversations(n: int) -> str:
    return f"{n} conversation" if n == 1 else f"{n} conversations"
