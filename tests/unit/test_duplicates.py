"""Duplicate pairs (duplicates.py): what counts as the same pair, the counter, the packing."""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainingfiles_server.duplicates import (
    DIGEST_SIZE,
    MAX_FIRST_DUPLICATES,
    Digests,
    DuplicateCounter,
    conversation_digests,
    iter_digests,
    normalise_text,
    pair_digest,
)

# No deadline: the machine running the tests may be busy.
PROPERTY = settings(deadline=None, max_examples=200)

WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", " \n\t "]

texts = st.text(max_size=40)
# A tiny alphabet makes equal-after-normalisation and shifted-boundary cases common.
tiny_texts = st.text(alphabet="ab \n", max_size=5)


def pairs(text: st.SearchStrategy[str] = texts) -> st.SearchStrategy[dict[str, Any]]:
    item = st.fixed_dictionaries(
        {
            "turn": st.integers(1, 9),
            "role": st.sampled_from(["user", "assistant"]),
            "content": text,
        },
        optional={"emotional_state": st.fixed_dictionaries({"primary": text})},
    )
    return st.fixed_dictionaries(
        {
            "id": st.just("c_turn1"),
            "system_prompt": text,
            "conversation_history": st.lists(item, max_size=3),
            "current_user_input": text,
            "target_response": st.none() | text,
        }
    )


def normalised(pair: dict[str, Any]) -> tuple[object, ...]:
    """The pair's content as the module docstring defines it, written independently."""

    def norm(text: str | None) -> str | None:
        return None if text is None else " ".join(unicodedata.normalize("NFC", text).split())

    return (
        norm(pair["system_prompt"]),
        tuple((item["role"], norm(item["content"])) for item in pair["conversation_history"]),
        norm(pair["current_user_input"]),
        norm(pair["target_response"]),
    )


def map_texts(pair: dict[str, Any], change: Any) -> dict[str, Any]:
    """The pair with `change` applied to every text of its content."""
    target = pair["target_response"]
    return pair | {
        "system_prompt": change(pair["system_prompt"]),
        "conversation_history": [
            item | {"content": change(item["content"])} for item in pair["conversation_history"]
        ],
        "current_user_input": change(pair["current_user_input"]),
        "target_response": None if target is None else change(target),
    }


def respace(text: str, rng: random.Random) -> str:
    """The same words with other whitespace between them and around them."""
    words = text.split()
    gaps = [rng.choice(WHITESPACE) for _ in range(len(words) + 1)]
    body = "".join(gap + word for gap, word in zip(gaps, words, strict=False))
    return body + gaps[-1] if words else rng.choice(["", *WHITESPACE])


# --- normalisation ----------------------------------------------------------------------


@PROPERTY
@given(st.text())
def test_normalised_text_is_nfc_single_spaced_stripped_and_stable(text: str) -> None:
    result = normalise_text(text)
    assert unicodedata.is_normalized("NFC", result)
    assert result == result.strip()
    assert "  " not in result
    assert all(not c.isspace() or c == " " for c in result)
    assert normalise_text(result) == result


def test_normalisation_examples() -> None:
    assert normalise_text("  Hello,\t\tworld!\n") == "Hello, world!"
    assert normalise_text("caf\u0065\u0301") == "caf\u00e9"
    assert normalise_text("a\u00a0\u2003b") == "a b"
    assert normalise_text("No.") != normalise_text("no.")
    assert normalise_text(" \n ") == ""


# --- what is a duplicate ----------------------------------------------------------------


@PROPERTY
@given(pairs(), st.randoms(use_true_random=False))
def test_other_whitespace_is_the_same_pair(pair: dict[str, Any], rng: random.Random) -> None:
    assert pair_digest(map_texts(pair, lambda text: respace(text, rng))) == pair_digest(pair)


@PROPERTY
@given(pairs())
def test_nfc_and_nfd_are_the_same_pair(pair: dict[str, Any]) -> None:
    digest = pair_digest(pair)
    assert pair_digest(map_texts(pair, lambda t: unicodedata.normalize("NFD", t))) == digest
    assert pair_digest(map_texts(pair, lambda t: unicodedata.normalize("NFC", t))) == digest


@PROPERTY
@given(pairs(tiny_texts), pairs(tiny_texts))
def test_digests_are_equal_exactly_when_the_normalised_content_is(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    # With two-letter texts, equal content after normalisation and text shifted from one
    # field (or history item) to the next both come up often.
    same = normalised(first) == normalised(second)
    assert (pair_digest(first) == pair_digest(second)) == same


@PROPERTY
@given(st.lists(st.text(alphabet="ab", min_size=1, max_size=3), min_size=4, max_size=4), st.data())
def test_moving_text_between_fields_is_not_a_duplicate(
    words: list[str], data: st.DataObject
) -> None:
    # The same words, cut into the four fields at different places.
    def cut(bounds: list[int]) -> dict[str, Any]:
        a, b, c = sorted(bounds)
        parts = [" ".join(words[:a]), " ".join(words[a:b]), " ".join(words[b:c])]
        return {
            "system_prompt": parts[0],
            "conversation_history": [{"role": "user", "content": parts[1]}],
            "current_user_input": parts[2],
            "target_response": " ".join(words[c:]),
        }

    bounds = st.lists(st.integers(0, 4), min_size=3, max_size=3)
    first, second = cut(data.draw(bounds)), cut(data.draw(bounds))
    assert (pair_digest(first) == pair_digest(second)) == (first == second)


def base_pair() -> dict[str, Any]:
    return {
        "id": "c1_turn2",
        "conversation_id": "c1",
        "turn_number": 2,
        "system_prompt": "You are a planner.",
        "conversation_history": [
            {
                "turn": 1,
                "role": "user",
                "content": "Hi there",
                "emotional_state": {"primary": "anxious", "intensity": 0.8},
            },
            {"turn": 1, "role": "assistant", "content": "Hello."},
        ],
        "current_user_input": "Should I pay off my loan?",
        "target_response": "Let's look at the rate first.",
        "training_metadata": {"quality_score": 4.5},
    }


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("case", lambda p: p | {"current_user_input": "should I pay off my loan?"}),
        ("a word", lambda p: p | {"target_response": "Let's look at the rate later."}),
        ("no reply", lambda p: p | {"target_response": None}),
        ("an empty reply", lambda p: p | {"target_response": ""}),
        ("another prompt", lambda p: p | {"system_prompt": "You are a planner!"}),
        (
            "text moved into the prompt",
            lambda p: (
                p
                | {
                    "system_prompt": "You are a planner. Should I",
                    "current_user_input": "pay off my loan?",
                }
            ),
        ),
        ("a swapped role", lambda p: p | {"conversation_history": _swap_roles(p)}),
        ("an item fewer", lambda p: p | {"conversation_history": p["conversation_history"][:1]}),
        (
            "items in another order",
            lambda p: p | {"conversation_history": p["conversation_history"][::-1]},
        ),
        (
            "history moved into the input",
            lambda p: (
                p
                | {
                    "conversation_history": p["conversation_history"][:1],
                    "current_user_input": "Hello. Should I pay off my loan?",
                }
            ),
        ),
        (
            "a text item for an object item",
            lambda p: p | {"conversation_history": ["Hi there", p["conversation_history"][1]]},
        ),
        (
            "a null content",
            lambda p: p | {"conversation_history": [{"role": "user", "content": None}, "Hello."]},
        ),
    ],
)
def test_different_pairs_are_not_duplicates(name: str, change: Any) -> None:
    pair = base_pair()
    assert pair_digest(change(pair)) != pair_digest(pair), name


def _swap_roles(pair: dict[str, Any]) -> list[dict[str, Any]]:
    swap = {"user": "assistant", "assistant": "user"}
    return [item | {"role": swap[item["role"]]} for item in pair["conversation_history"]]


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("another id and turn", lambda p: p | {"id": "c9_turn7", "turn_number": 7}),
        ("other metadata", lambda p: p | {"training_metadata": {"quality_score": 1.0}}),
        (
            "other history annotations",
            lambda p: (
                p
                | {
                    "conversation_history": [
                        {"role": item["role"], "content": item["content"], "turn": 5}
                        for item in p["conversation_history"]
                    ]
                }
            ),
        ),
        (
            "other whitespace",
            lambda p: p | {"current_user_input": "  Should  I pay\noff my\tloan?\n"},
        ),
    ],
)
def test_the_same_content_is_a_duplicate(name: str, change: Any) -> None:
    pair = base_pair()
    assert pair_digest(change(pair)) == pair_digest(pair), name


def test_accents_compare_after_nfc() -> None:
    composed = base_pair() | {"target_response": "Caf\u00e9 budget."}
    decomposed = base_pair() | {"target_response": "Cafe\u0301 budget."}
    assert pair_digest(composed) == pair_digest(decomposed)


def test_a_missing_field_counts_as_null_or_empty() -> None:
    pair = base_pair()
    without_reply = {k: v for k, v in pair.items() if k != "target_response"}
    assert pair_digest(without_reply) == pair_digest(pair | {"target_response": None})
    without_history = {k: v for k, v in pair.items() if k != "conversation_history"}
    assert pair_digest(without_history) == pair_digest(pair | {"conversation_history": []})
    # No reply is not an empty reply, and the text "null" is not null.
    assert pair_digest(pair | {"target_response": " "}) != pair_digest(without_reply)
    assert pair_digest(pair | {"target_response": "null"}) != pair_digest(without_reply)


def test_a_digest_is_16_bytes() -> None:
    assert len(pair_digest(base_pair())) == DIGEST_SIZE == 16


@PROPERTY
@given(st.lists(pairs(tiny_texts), max_size=6))
def test_conversation_digests_are_the_pair_digests(conversation: list[dict[str, Any]]) -> None:
    packed = conversation_digests(conversation)
    assert list(packed) == [pair_digest(pair) for pair in conversation]
    assert len(packed) == len(conversation)


# --- the counter ------------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.sampled_from([bytes([i]) * DIGEST_SIZE for i in range(8)]), max_size=60))
def test_the_counter_counts_repeats_and_keeps_the_first_ids(digests: list[bytes]) -> None:
    counter = DuplicateCounter()
    answers = [counter.seen(digest, f"pair{i}") for i, digest in enumerate(digests)]
    assert answers == [digest in digests[:i] for i, digest in enumerate(digests)]
    assert counter.count == len(digests) - len(set(digests))
    repeats = [f"pair{i}" for i, repeat in enumerate(answers) if repeat]
    assert counter.first_duplicates == tuple(repeats[:MAX_FIRST_DUPLICATES])
    assert len(counter) == len(set(digests))


def test_the_counter_keeps_at_most_twenty_ids() -> None:
    counter = DuplicateCounter()
    digest = bytes(DIGEST_SIZE)
    assert counter.seen(digest, "first") is False
    for i in range(30):
        assert counter.seen(digest, f"again{i}") is True
    assert counter.count == 30
    assert counter.first_duplicates == tuple(f"again{i}" for i in range(20))


def test_known_digests_are_not_counted_but_are_duplicated() -> None:
    earlier = [bytes([1]) * DIGEST_SIZE, bytes([2]) * DIGEST_SIZE]
    counter = DuplicateCounter(earlier)
    assert counter.count == 0
    assert counter.seen(earlier[0], "new_turn1") is True
    assert counter.seen(bytes([3]) * DIGEST_SIZE, "new_turn2") is False
    assert counter.count == 1
    assert counter.first_duplicates == ("new_turn1",)


def test_a_duplicate_without_an_id_is_counted_only() -> None:
    counter = DuplicateCounter()
    digest = bytes(DIGEST_SIZE)
    counter.seen(digest)
    assert counter.seen(digest) is True
    assert counter.count == 1
    assert counter.first_duplicates == ()


def test_the_counter_over_real_pairs() -> None:
    pair = base_pair()
    counter = DuplicateCounter()
    same = pair | {"id": "c2_turn2", "current_user_input": " Should I pay off my loan? "}
    other = pair | {"id": "c3_turn2", "current_user_input": "Should I pay off my car?"}
    assert [counter.seen(pair_digest(p), p["id"]) for p in (pair, same, other)] == [
        False,
        True,
        False,
    ]
    assert counter.first_duplicates == ("c2_turn2",)


def test_the_counter_agrees_with_a_set_on_random_digests_with_repeats() -> None:
    """Random digests, a tenth of them repeats of earlier ones (and digests that share
    their first bytes, so a bucket holds several): the same answers as a set."""
    rng = random.Random(20261130)
    fresh = [rng.randbytes(DIGEST_SIZE) for _ in range(20_000)]
    # Same bucket, different digest: shares the first two bytes of another.
    fresh += [d[:2] + rng.randbytes(DIGEST_SIZE - 2) for d in fresh[:2_000]]
    stream = fresh + [rng.choice(fresh) for _ in range(2_200)]
    rng.shuffle(stream)
    counter, seen = DuplicateCounter(), set()
    for i, digest in enumerate(stream):
        assert counter.seen(digest, f"p{i}") is (digest in seen)
        seen.add(digest)
    assert counter.count == len(stream) - len(seen)
    assert len(counter) == len(seen)


def test_a_match_across_two_packed_digests_is_not_a_duplicate() -> None:
    """Two digests of one bucket are packed side by side; a digest equal to the 16
    bytes straddling them (and of the same bucket) was never seen."""
    a = b"\x01\x02" + bytes(6) + b"\x01\x02" + bytes(range(3, 9))
    b = b"\x01\x02" + bytes(range(20, 34))
    straddling = a[8:] + b[:8]
    assert straddling in a + b and straddling not in (a, b)
    counter = DuplicateCounter([a, b])
    assert counter.seen(straddling, "new") is False
    assert counter.seen(straddling, "again") is True
    assert counter.first_duplicates == ("again",)


def test_the_counter_costs_at_most_24_bytes_a_digest() -> None:
    """No object per pair: 200,000 digests recorded cost at most 24 bytes each (the
    packed 16 and a bytearray's spare room), where a set cost ~100."""
    import tracemalloc

    rng = random.Random(7)
    digests = [rng.randbytes(DIGEST_SIZE) for _ in range(200_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        counter = DuplicateCounter()
        for digest in digests:
            counter.seen(digest, "pair")
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(counter) == len(digests)
    assert (after - before) / len(digests) <= 24


# --- packing ----------------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE), max_size=50))
def test_packed_digests_round_trip(digests: list[bytes]) -> None:
    packed = Digests(digests)
    blob = bytes(packed)
    assert blob == b"".join(digests)
    assert len(blob) == DIGEST_SIZE * len(digests) == DIGEST_SIZE * len(packed)
    assert list(iter_digests(blob)) == digests


def test_digests_append_in_order() -> None:
    packed = Digests()
    packed.append(bytes([1]) * DIGEST_SIZE)
    packed.append(bytes([2]) * DIGEST_SIZE)
    assert list(iter_digests(bytes(packed))) == list(packed)
    assert bytes(Digests()) == b""
    assert list(iter_digests(b"")) == []


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_a_digest_of_another_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Digests().append(bytes(size))


@pytest.mark.parametrize("size", [1, 15, 17, 33])
def test_a_truncated_blob_is_refused_at_once(size: int) -> None:
    with pytest.raises(ValueError, match=f"got {size} bytes"):
        iter_digests(bytes(size))
