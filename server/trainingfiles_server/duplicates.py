"""Duplicate training pairs: pairs whose normalised content is identical.

A pair's *content* is its system prompt, its conversation history, its current user input
and its target response; ids, turn numbers and metadata are not content. Two pairs are
duplicates when their content is identical after normalisation:

- every text is put in Unicode NFC (so a precomposed "é" equals "e" + combining acute),
  every run of whitespace (as `str.split` sees it: spaces, tabs, newlines, the Unicode
  spaces) becomes one space, and leading and trailing whitespace goes;
- case is kept: "No." and "no." can mean different things to a model;
- each history item counts only by its role and its content (normalised, in order); its
  other fields (turn, emotional state, ...) are annotations, not what the model sees.
  An item that is not an object counts as itself (a text normalised);
- a missing target response equals ``null``, which differs from an empty one.

The fields are hashed separately and their digests combined in a fixed layout, so text
cannot move from one field (or one history item) to the next without changing the digest:
"a b" + "c" is not "a" + "b c". A pair's digest is 16 bytes of BLAKE2b (collisions are
out of reach for any file size). `conversation_digests` digests a whole conversation at
once, normalising each distinct text once.

`DuplicateCounter` keeps the digests seen so far packed in bytearrays (~18 bytes a
digest: ~18 MB for a million pairs, and no object per pair). The build stores each
conversation's digests in the database, packed by `Digests` into one ``bytes``, so that
an Add can count the file's duplicates from the database without reading the stored
file; `iter_digests` unpacks them.

Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from hashlib import blake2b
from typing import Any

import orjson

__all__ = [
    "DIGEST_SIZE",
    "MAX_FIRST_DUPLICATES",
    "Digests",
    "DuplicateCounter",
    "conversation_digests",
    "iter_digests",
    "normalise_text",
    "pair_digest",
]

DIGEST_SIZE = 16
#: How many duplicate pair ids `DuplicateCounter.first_duplicates` keeps for a warning.
MAX_FIRST_DUPLICATES = 20


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped at both ends; case kept."""
    # NFC before splitting, so the result is NFC too: a space never combines with its
    # neighbours.
    return " ".join(unicodedata.normalize("NFC", text).split())


def pair_digest(pair: Mapping[str, Any]) -> bytes:
    """The 16-byte digest of the pair's normalised content (see the module docstring)."""
    return _Digester().pair(pair)


def conversation_digests(pairs: Iterable[Mapping[str, Any]]) -> Digests:
    """`pair_digest` of each of a conversation's pairs, in order, packed.

    Faster than one `pair_digest` per pair: the pairs of a conversation repeat the same
    system prompt and ever longer prefixes of the same history, so each distinct text is
    normalised and hashed once.
    """
    digester = _Digester()
    return Digests(digester.pair(pair) for pair in pairs)


def _hash(data: bytes) -> bytes:
    return blake2b(data, digest_size=DIGEST_SIZE).digest()


# Domain tags keep a text and a JSON value apart: the text "null" is not null.
_NULL = _hash(b"j" + b"null")
_NO_ROLE = bytes(DIGEST_SIZE)  # fills the role slot of a history item that is not an object


class _Digester:
    """Digests pairs, remembering each distinct text's digest (so: one per conversation).

    A pair's digest hashes a fixed-width record of digests: the system prompt's, the number
    of history items (8 bytes), per item a tag byte and the digests of role and content,
    then the user input's and the target response's. Every part has a known width, so
    the record parses one way only — text cannot move between fields unnoticed — and the
    per-pair work is proportional to the number of history items, not their length.
    Changing this layout changes every digest: the stored digests would need recomputing.
    """

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[str, bytes] = {}

    def value(self, value: Any) -> bytes:
        if isinstance(value, str):
            digest = self._texts.get(value)
            if digest is None:
                digest = self._texts[value] = _hash(b"t" + normalise_text(value).encode())
            return digest
        if value is None:
            return _NULL
        # Any other JSON value (a document's history may hold anything) counts as itself.
        return _hash(b"j" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS))

    def pair(self, pair: Mapping[str, Any]) -> bytes:
        value = self.value
        history = pair.get("conversation_history") or ()
        parts = [value(pair.get("system_prompt")), len(history).to_bytes(8, "big")]
        for item in history:
            if isinstance(item, dict):
                parts += (b"o", value(item.get("role")), value(item.get("content")))
            else:
                parts += (b"v", _NO_ROLE, value(item))
        parts += (value(pair.get("current_user_input")), value(pair.get("target_response")))
        return _hash(b"".join(parts))


class DuplicateCounter:
    """Counts the pairs whose digest came before, in the order `seen` is called.

    `known` preloads digests without counting them (pairs whose duplicates were already
    counted elsewhere).

    The digests seen are kept packed, 16 bytes each, in one of `BUCKETS` bytearrays
    chosen by the digest's first bytes (BLAKE2b output: uniform as it is); a lookup is
    one `bytearray.find` (C, over a bucket's few kilobytes even at millions of pairs). So
    ~18 bytes a digest (a bytearray's spare room included) and no Python object per pair:
    a set of `bytes` cost ~100 bytes a digest in ~1 million small objects, which made a
    build's memory grow with its pairs.
    """

    __slots__ = ("_buckets", "_count", "_first", "_used")

    BUCKETS = 1 << 12

    def __init__(self, known: Iterable[bytes] = ()) -> None:
        self._buckets = [bytearray() for _ in range(self.BUCKETS)]
        self._used = 0
        self._first: list[str] = []
        self._count = 0
        for digest in known:
            self._insert(digest)

    def _insert(self, digest: bytes) -> bool:
        """Record `digest`; False if it was recorded already."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a pair digest is {DIGEST_SIZE} bytes, got {len(digest)}")
        bucket = self._buckets[int.from_bytes(digest[:2], "little") & (self.BUCKETS - 1)]
        at = bucket.find(digest)
        while at >= 0:
            if not at % DIGEST_SIZE:
                return False
            at = bucket.find(digest, at + 1)  # a match across two digests: look on
        bucket += digest
        self._used += 1
        return True

    @classmethod
    def counted(cls, count: int, first: Iterable[str]) -> DuplicateCounter:
        """A counter that reports duplicates counted elsewhere (no digest recorded)."""
        counter = cls()
        counter._count = count
        counter._first = list(first)[:MAX_FIRST_DUPLICATES]
        return counter

    def seen(self, digest: bytes, pair_id: str | Callable[[], str] | None = None) -> bool:
        """True if an identical pair came earlier (and count it); otherwise record it.

        `pair_id` is kept for `first_duplicates` when the pair is one of the first
        duplicates (a callable is asked for it only then); without it the duplicate is
        only counted.
        """
        if self._insert(digest):
            return False
        self._count += 1
        if pair_id is not None and len(self._first) < MAX_FIRST_DUPLICATES:
            self._first.append(pair_id() if callable(pair_id) else pair_id)
        return True

    @property
    def count(self) -> int:
        """The number of duplicates seen so far."""
        return self._count

    @property
    def first_duplicates(self) -> tuple[str, ...]:
        """The ids of the first (at most `MAX_FIRST_DUPLICATES`) duplicates, in order."""
        return tuple(self._first)

    def __len__(self) -> int:
        """The number of distinct digests recorded."""
        return self._used


class Digests:
    """One conversation's pair digests, in pair order, packed as their concatenation.

    ``bytes(digests)`` is the packed form (16 bytes per pair) the database stores;
    `iter_digests` reads it back.
    """

    __slots__ = ("_parts",)

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._parts: list[bytes] = []
        for digest in digests:
            self.append(digest)

    def append(self, digest: bytes) -> None:
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a pair digest is {DIGEST_SIZE} bytes, got {len(digest)}")
        self._parts.append(digest)

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._parts)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


def iter_digests(blob: bytes) -> Iterator[bytes]:
    """The digests packed in `blob` by `Digests`, in order.

    Raises ValueError (before yielding anything) if the length is not a whole number of
    digests: a truncated value must not pass for fewer pairs.
    """
    if len(blob) % DIGEST_SIZE:
        raise ValueError(
            f"packed digests are a multiple of {DIGEST_SIZE} bytes, got {len(blob)} bytes"
        )
    return (blob[i : i + DIGEST_SIZE] for i in range(0, len(blob), DIGEST_SIZE))
