"""The train/validation split (splits.py): the rule its docstring promises, as properties."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction
from hashlib import blake2b
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainingfiles_server.splits import (
    TRAIN,
    VALIDATION,
    SplitError,
    SplitSpec,
    Stratify,
    assign,
    rank,
    side,
)

# No deadline: the machine running the tests may be busy.
PROPERTY = settings(deadline=None, max_examples=150)
UINT64_MAX = 2**64 - 1

seeds = st.integers(0, UINT64_MAX)
strata = st.sampled_from([None, "persona-a", "persona-b", "persona-c", "persona-d"])
conversation_lists = st.lists(st.tuples(st.uuids(), strata), min_size=2, max_size=150).map(
    # Unique ids: assign takes each conversation once.
    lambda entries: list(dict(entries).items())
)
fractions = st.floats(0, 1, exclude_min=True, exclude_max=True)


def expected_size(fraction: float, n: int) -> int:
    """round-half-up(fraction × n), with the fraction as written (its shortest repr)."""
    return math.floor(Fraction(repr(fraction)) * n + Fraction(1, 2))


def ranked(entries: list[tuple[UUID, str | None]], seed: int) -> list[UUID]:
    return sorted((cid for cid, _ in entries), key=lambda cid: (rank(seed, cid), cid.bytes))


@st.composite
def splits(draw: st.DrawFn) -> tuple[list[tuple[UUID, str | None]], SplitSpec, int]:
    """A feasible split: conversations, a spec and the validation size it must give."""
    entries = draw(conversation_lists.filter(lambda e: len(e) >= 2))
    n = len(entries)
    seed = draw(seeds)
    stratify = draw(st.sampled_from(Stratify))
    if draw(st.booleans()):
        count = draw(st.integers(1, n - 1))
        return entries, SplitSpec(validation_count=count, seed=seed, stratify=stratify), count
    fraction = draw(fractions.filter(lambda f: 0 < expected_size(f, n) < n))
    spec = SplitSpec(validation_fraction=fraction, seed=seed, stratify=stratify)
    return entries, spec, expected_size(fraction, n)


# --- the rank ---------------------------------------------------------------------------


def test_rank_is_the_documented_hash() -> None:
    cid = UUID("0b5d7a52-3c1e-4f8a-9d62-7e1f0c2a4b11")
    digest = blake2b((42).to_bytes(8, "big") + cid.bytes, digest_size=8).digest()
    assert rank(42, cid) == int.from_bytes(digest, "big")
    # Pinned, so that a change of the rule (which would move files' conversations between
    # sides) cannot pass unnoticed.
    assert rank(0, UUID(int=0)) == 0x2BB6AE06AD472028
    assert 0 <= rank(UINT64_MAX, cid) <= UINT64_MAX


PINNED_SPLIT = frozenset({UUID(int=2), UUID(int=6), UUID(int=8)})


def test_a_pinned_split_never_changes() -> None:
    ids = [UUID(int=i) for i in range(1, 11)]
    validation = assign([(cid, None) for cid in ids], SplitSpec(validation_count=3, seed=7))
    assert validation == PINNED_SPLIT


# --- the partition --------------------------------------------------------------------


@PROPERTY
@given(splits())
def test_sides_are_disjoint_and_cover_every_conversation(
    case: tuple[list[tuple[UUID, str | None]], SplitSpec, int],
) -> None:
    entries, spec, k = case
    validation = assign(entries, spec)
    ids = {cid for cid, _ in entries}
    assert validation <= ids
    sides = Counter(side(cid, validation) for cid in ids)
    assert sides == Counter({VALIDATION: k, TRAIN: len(ids) - k})


@PROPERTY
@given(splits(), st.randoms(use_true_random=False))
def test_the_split_does_not_depend_on_the_request_order(
    case: tuple[list[tuple[UUID, str | None]], SplitSpec, int], rng: random.Random
) -> None:
    entries, spec, _ = case
    shuffled = list(entries)
    rng.shuffle(shuffled)
    assert assign(shuffled, spec) == assign(entries, spec)
    assert assign(tuple(reversed(entries)), spec) == assign(entries, spec)


@PROPERTY
@given(splits())
def test_same_seed_same_split(case: tuple[list[tuple[UUID, str | None]], SplitSpec, int]) -> None:
    entries, spec, _ = case
    again = SplitSpec(
        validation_fraction=spec.validation_fraction,
        validation_count=spec.validation_count,
        seed=spec.seed,
        stratify=spec.stratify,
    )
    assert assign(entries, again) == assign(entries, spec)


@PROPERTY
@given(st.lists(st.uuids(), min_size=100, max_size=100, unique=True), seeds, seeds)
def test_a_different_seed_gives_a_different_split(
    ids: list[UUID], seed: int, other_seed: int
) -> None:
    if seed == other_seed:
        return
    entries = [(cid, None) for cid in ids]
    # 50 of 100: two seeds agree with probability 1 / C(100, 50), about 1e-29.
    first = assign(entries, SplitSpec(validation_count=50, seed=seed))
    second = assign(entries, SplitSpec(validation_count=50, seed=other_seed))
    assert first != second


# --- sizes ------------------------------------------------------------------------------


@PROPERTY
@given(conversation_lists, fractions, seeds)
def test_a_fraction_puts_its_rounded_half_up_share_on_the_validation_side(
    entries: list[tuple[UUID, str | None]], fraction: float, seed: int
) -> None:
    n, k = len(entries), expected_size(fraction, len(entries))
    spec = SplitSpec(validation_fraction=fraction, seed=seed)
    if 0 < k < n:
        assert len(assign(entries, spec)) == k
    else:
        with pytest.raises(SplitError, match=r"leaves the (validation|train) side empty"):
            assign(entries, spec)


@pytest.mark.parametrize(
    ("fraction", "n", "k"),
    [
        (0.5, 3, 2),  # 1.5 rounds up
        (0.25, 2, 1),  # 0.5 rounds up
        (0.145, 100, 15),  # 14.5 as written, though the double is below 0.145
        (0.1, 25, 3),  # 2.5
        (0.1, 24, 2),  # 2.4
        (0.35, 10, 4),  # 3.5
        (0.001, 500, 1),  # 0.5
        (0.001, 499, 0),  # 0.499: refused by assign
    ],
)
def test_rounding_examples(fraction: float, n: int, k: int) -> None:
    spec = SplitSpec(validation_fraction=fraction)
    entries = [(UUID(int=i), None) for i in range(n)]
    if k == 0:
        with pytest.raises(SplitError, match="rounds to 0"):
            spec.validation_size(n)
    else:
        assert spec.validation_size(n) == k
        assert len(assign(entries, spec)) == k


@PROPERTY
@given(conversation_lists, st.data())
def test_a_count_puts_exactly_that_many_on_the_validation_side(
    entries: list[tuple[UUID, str | None]], data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, len(entries) - 1))
    stratify = data.draw(st.sampled_from(Stratify))
    spec = SplitSpec(validation_count=count, seed=data.draw(seeds), stratify=stratify)
    assert len(assign(entries, spec)) == count


@PROPERTY
@given(splits())
def test_without_strata_the_validation_side_is_the_lowest_ranks(
    case: tuple[list[tuple[UUID, str | None]], SplitSpec, int],
) -> None:
    entries, spec, k = case
    spec = SplitSpec(
        validation_fraction=spec.validation_fraction,
        validation_count=spec.validation_count,
        seed=spec.seed,
    )
    assert assign(entries, spec) == frozenset(ranked(entries, spec.seed)[:k])


# --- stratification ---------------------------------------------------------------------


@PROPERTY
@given(splits())
def test_every_stratum_gets_its_proportional_share_within_one(
    case: tuple[list[tuple[UUID, str | None]], SplitSpec, int],
) -> None:
    entries, spec, k = case
    if spec.stratify is Stratify.NONE:
        spec = SplitSpec(
            validation_fraction=spec.validation_fraction,
            validation_count=spec.validation_count,
            seed=spec.seed,
            stratify=Stratify.PERSONA,
        )
    validation = assign(entries, spec)
    n = len(entries)
    sizes = Counter(stratum for _, stratum in entries)
    taken = Counter(stratum for cid, stratum in entries if cid in validation)
    for stratum, size in sizes.items():
        assert abs(taken[stratum] - Fraction(k * size, n)) < 1, stratum
        # Within a stratum, the lowest ranks go to the validation side.
        members = [(cid, s) for cid, s in entries if s == stratum]
        assert {cid for cid, _ in members} & validation == set(
            ranked(members, spec.seed)[: taken[stratum]]
        )


def test_equal_remainders_go_to_strata_in_key_order_the_keyless_last() -> None:
    # Three strata of 2 and one seat: every share is 1/3, so the first key wins.
    entries = [(UUID(int=i), stratum) for i, stratum in enumerate(["b", "b", None, None, "a", "a"])]
    validation = assign(entries, SplitSpec(validation_count=1, stratify=Stratify.PERSONA))
    assert {stratum for cid, stratum in entries if cid in validation} == {"a"}
    validation = assign(entries, SplitSpec(validation_count=2, stratify=Stratify.PERSONA))
    assert sorted(str(s) for cid, s in entries if cid in validation) == ["a", "b"]


def test_conversations_without_a_key_form_their_own_stratum() -> None:
    entries = [(UUID(int=i), None if i < 10 else "topic") for i in range(20)]
    spec = SplitSpec(validation_fraction=0.5, seed=3, stratify=Stratify.TRAINING_TOPIC)
    validation = assign(entries, spec)
    assert sum(1 for cid, s in entries if s is None and cid in validation) == 5


def test_strata_are_ignored_without_stratification() -> None:
    entries = [(UUID(int=i), "a" if i % 3 else "b") for i in range(30)]
    plain = [(cid, None) for cid, _ in entries]
    spec = SplitSpec(validation_count=7, seed=11)
    assert assign(entries, spec) == assign(plain, spec)


# --- stability --------------------------------------------------------------------------


@PROPERTY
@given(conversation_lists, st.uuids(), seeds, st.data())
def test_adding_a_conversation_moves_at_most_one_earlier_conversation(
    entries: list[tuple[UUID, str | None]], added: UUID, seed: int, data: st.DataObject
) -> None:
    if any(cid == added for cid, _ in entries):
        return
    n = len(entries)
    if data.draw(st.booleans()):
        spec = SplitSpec(validation_count=data.draw(st.integers(1, n - 1)), seed=seed)
    else:
        fraction = data.draw(
            fractions.filter(lambda f: expected_size(f, n) > 0 and expected_size(f, n + 1) < n)
        )
        spec = SplitSpec(validation_fraction=fraction, seed=seed)
    before = assign(entries, spec)
    after = assign([*entries, (added, None)], spec)
    moved = (before ^ after) - {added}
    assert len(moved) <= 1


def test_a_fraction_split_of_many_conversations_keeps_most_sides_when_more_are_added() -> None:
    first = [(UUID(int=i), None) for i in range(1000)]
    more = [*first, *((UUID(int=i), None) for i in range(1000, 1100))]
    spec = SplitSpec(validation_fraction=0.2, seed=5)
    before, after = assign(first, spec), assign(more, spec)
    moved = {cid for cid, _ in first if (cid in before) != (cid in after)}
    # Only conversations next to the cut-off can move: far fewer than the 100 added.
    assert len(moved) < 20


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "message"),
    [
        (
            SplitSpec(validation_fraction=0.01),
            20,
            "a validation fraction of 0.01 of 20 conversations leaves the validation side "
            "empty (0.01 × 20 = 0.2 rounds to 0)",
        ),
        (
            SplitSpec(validation_fraction=0.99),
            20,
            "a validation fraction of 0.99 of 20 conversations leaves the train side empty "
            "(0.99 × 20 = 19.8 rounds to 20)",
        ),
        (
            SplitSpec(validation_count=20),
            20,
            "a validation count of 20 of 20 conversations leaves the train side empty "
            "(at most 19 fits)",
        ),
        (
            SplitSpec(validation_count=25, stratify=Stratify.PERSONA),
            20,
            "a validation count of 25 of 20 conversations leaves the train side empty "
            "(at most 19 fits)",
        ),
        (
            SplitSpec(validation_fraction=0.5),
            1,
            "a split needs at least 2 conversations, one for each side; there is 1 conversation",
        ),
        (
            SplitSpec(validation_count=1),
            1,
            "a split needs at least 2 conversations, one for each side; there is 1 conversation",
        ),
        (
            SplitSpec(validation_count=1),
            0,
            "a split needs at least 2 conversations, one for each side; there are 0 conversations",
        ),
    ],
)
def test_a_split_with_an_empty_side_is_refused_with_the_sizes(
    spec: SplitSpec, n: int, message: str
) -> None:
    entries = [(UUID(int=i), None) for i in range(n)]
    with pytest.raises(SplitError) as refused:
        assign(entries, spec)
    assert str(refused.value) == message
    assert refused.value.field == (
        "split.validation_count"
        if spec.validation_count is not None
        else "split.validation_fraction"
    )


def test_a_repeated_conversation_is_a_bug_not_a_refusal() -> None:
    cid = UUID(int=1)
    with pytest.raises(ValueError, match="more than once") as raised:
        assign([(cid, None), (cid, None), (UUID(int=2), None)], SplitSpec(validation_count=1))
    assert not isinstance(raised.value, SplitError)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({}, "split", "set exactly one of split.validation_fraction and split.validation_count"),
        (
            {"validation_fraction": 0.1, "validation_count": 1},
            "split",
            "set exactly one of split.validation_fraction and split.validation_count (both",
        ),
        ({"validation_fraction": 0.0}, "split.validation_fraction", "got 0.0"),
        ({"validation_fraction": 1.0}, "split.validation_fraction", "got 1.0"),
        ({"validation_fraction": -0.5}, "split.validation_fraction", "got -0.5"),
        ({"validation_fraction": 1.5}, "split.validation_fraction", "got 1.5"),
        ({"validation_fraction": math.nan}, "split.validation_fraction", "got nan"),
        ({"validation_fraction": math.inf}, "split.validation_fraction", "got inf"),
        ({"validation_fraction": True}, "split.validation_fraction", "got True"),
        ({"validation_fraction": "0.1"}, "split.validation_fraction", "got '0.1'"),
        ({"validation_count": 0}, "split.validation_count", "got 0"),
        ({"validation_count": -3}, "split.validation_count", "got -3"),
        ({"validation_count": True}, "split.validation_count", "got True"),
        ({"validation_count": 2.0}, "split.validation_count", "got 2.0"),
        ({"validation_count": 1, "seed": -1}, "split.seed", "got -1"),
        ({"validation_count": 1, "seed": 2**64}, "split.seed", f"got {2**64}"),
        ({"validation_count": 1, "seed": 1.0}, "split.seed", "got 1.0"),
        ({"validation_count": 1, "stratify": "persona"}, "split.stratify", "'persona'"),
    ],
)
def test_an_invalid_spec_is_refused_naming_the_field(
    kwargs: dict[str, object], field: str, text: str
) -> None:
    with pytest.raises(SplitError) as refused:
        SplitSpec(**kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert field in str(refused.value)
    assert text in str(refused.value)


@pytest.mark.parametrize("seed", [0, 1, UINT64_MAX])
def test_every_uint64_seed_is_valid(seed: int) -> None:
    spec = SplitSpec(validation_count=1, seed=seed)
    assert len(assign([(UUID(int=1), None), (UUID(int=2), None)], spec)) == 1


def test_a_valid_spec_checks_again_cleanly() -> None:
    SplitSpec(validation_fraction=0.1).check()


def test_side_names() -> None:
    cid = UUID(int=1)
    assert side(cid, frozenset({cid})) == "validation"
    assert side(cid, frozenset()) == "train"


def test_a_hundred_thousand_conversations() -> None:
    entries = [
        (UUID(int=i * 7919), ("abcdefgh"[i % 8] if i % 13 else None)) for i in range(100_000)
    ]
    for stratify in Stratify:
        spec = SplitSpec(validation_fraction=0.1, seed=1, stratify=stratify)
        assert len(assign(entries, spec)) == 10_000
