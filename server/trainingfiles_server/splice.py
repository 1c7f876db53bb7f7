"""A Remove's or a Refresh's v4 outputs, spliced from the stored version's.

The new JSONL is the stored one with some conversations' lines left out (a Remove) or
replaced by new ones (a Refresh); the JSON holds the same lines joined by commas. So
most of each new object is ranges of the stored object, which the store copies itself
(`storage.ObjectWriter.start_range`), while the stored JSONL is streamed through the
process once: for the new objects' checksums, for the bytes of ranges too short to be
copied, and, when the file has trainer formats, to render them again.

Where a conversation's lines are is found by counting newlines, not by decoding them:
each member's number of lines is the number of its stored pair digests (16 bytes per
pair, as written, a pair filter's leavings excluded), and its first and last lines must
name it, or the build fails (INTERNAL; its uploads aborted, the file as it was). A file with a
member whose digests were never stored is rewritten the way it was before
(`outputs.OutputSet.replay`).

Without trainer formats nothing kept is decoded: duplicates are counted from the stored
digests (a duplicate's line is decoded for its id, for the warning's first few), and the
untrainable pairs are the stored version's count less those of the members that go,
whose lines are decoded.

The JSON's pairs are the JSONL's bytes with each newline turned into a comma, between
its header and `JSON_FOOTER`; so a range [s, e) of whole JSONL lines is the JSON range
[H + s, H + e) with H = json_size - len(JSON_FOOTER) - (jsonl_size - 1), ending with
the comma after its last line. A range is copied with the comma before it and without
the one after it ([H + s - 1, H + e - 1); the first piece of the file has none before
it), and new lines are written the same way, so the last piece needs nothing taken off.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import orjson

from . import formats
from .aggregate import JSON_FOOTER, JsonlToJsonPairs
from .duplicates import DIGEST_SIZE, iter_digests
from .errors import ServiceError
from .models import StoredConversation
from .outputs import REPLAY_REPORT_EVERY, OutputSet, PairFacts, Replacements, V4Outputs, too_large
from .storage import COPY_PART_SIZE, Storage, UploadHook


@dataclass(frozen=True, slots=True)
class Member:
    """A conversation of the stored file: its id and where its lines are counted from."""

    conversation_id: str
    lines: int
    digests: bytes


def members_of(existing: Sequence[StoredConversation]) -> list[Member] | None:
    """The stored members, in file order; None if one's digests were never stored (or
    do not agree with its pair count): its lines cannot be counted without decoding."""
    members = []
    for conversation in existing:
        summary, digests = conversation.summary, conversation.digests
        lines = summary.training_pair_count
        if digests is None or not lines or len(digests) != DIGEST_SIZE * lines:
            return None
        members.append(Member(summary.conversation_id, lines, digests))
    return members


class _Fate(enum.Enum):
    KEEP = "keep"
    LEAVE = "leave"
    REPLACE = "replace"


def parts_needed(
    members: Sequence[Member],
    leave_out: frozenset[str],
    replace: Replacements | None,
    size: int,
    part_size: int,
) -> int:
    """At most how many parts an object of `size` bytes spliced so needs with a part per
    kept range: each range may be copied in parts of COPY_PART_SIZE behind the part
    pending before it; written parts are `part_size` long; and a held first part."""
    runs, keeping = 0, False
    for member in members:
        kept = _fate(member, leave_out, replace) is _Fate.KEEP
        runs += kept and not keeping
        keeping = kept
    return 2 + 2 * runs + size // part_size + size // COPY_PART_SIZE


def _fate(member: Member, leave_out: frozenset[str], replace: Replacements | None) -> _Fate:
    if member.conversation_id in leave_out:
        return _Fate.LEAVE
    if replace is not None and member.conversation_id in replace:
        return _Fate.REPLACE
    return _Fate.KEEP


class SplicedV4(V4Outputs):
    """The v4 JSON and JSONL of a new version: kept ranges of the stored objects (their
    bytes streamed in order through `keep`) and new lines between them (`write`)."""

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        max_bytes: int,
        *,
        stored_json: tuple[str, int],
        stored_jsonl: tuple[str, int],
        small_parts: bool,
        on_upload: UploadHook | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        super().__init__(
            storage, bucket, json_key, jsonl_key, max_bytes, on_upload=on_upload, slots=slots
        )
        self._stored_json, self._stored_jsonl = stored_json[0], stored_jsonl[0]
        # Where the stored JSON's pairs start (H in the module docstring).
        self._pairs_at = stored_json[1] - len(JSON_FOOTER) - (stored_jsonl[1] - 1)
        self._small_parts = small_parts
        self._empty = True  # no pair yet: the next piece has no comma before it
        self._lead = b""  # the comma the current range starts with, until its first bytes
        self._range_pairs = JsonlToJsonPairs()  # holds back the range's last newline

    def start_kept(self, start: int) -> None:
        """The stored JSONL's lines from byte `start` on are kept, until `end_kept`."""
        self._lead = b"" if self._empty else b","
        self._empty = False
        self._range_pairs = JsonlToJsonPairs()
        self.jsonl.start_range(self._stored_jsonl, start, small_parts=self._small_parts)
        self.json.start_range(
            self._stored_json,
            self._pairs_at + start - len(self._lead),
            small_parts=self._small_parts,
        )

    async def keep(self, chunk: memoryview) -> None:
        """The next bytes of the kept range, as streamed from the stored JSONL."""
        if not chunk:
            return
        if self.jsonl.size + len(chunk) > self._max_bytes:
            raise too_large(self._max_bytes)
        assert self.jsonl_sha256 is not None and self._json_rest is not None
        self.jsonl_sha256.update(chunk)
        await self.jsonl.keep(chunk)
        body = self._lead + self._range_pairs.feed(bytes(chunk))
        self._lead = b""
        if body:
            self._json_rest.write(body)
            await self.json.keep(body)

    async def end_kept(self) -> None:
        """The range ends with a line; its newline's comma is not the JSON's to keep:
        what follows brings its own."""
        await self.jsonl.end_range()
        await self.json.end_range()

    async def write(self, lines: bytes) -> None:
        """New lines, between kept ranges."""
        if not lines:
            return
        if self.jsonl.size + len(lines) > self._max_bytes:
            raise too_large(self._max_bytes)
        assert self.jsonl_sha256 is not None
        self.jsonl_sha256.update(lines)
        await self.jsonl.write(lines)
        body = (b"" if self._empty else b",") + lines[:-1].replace(b"\n", b",")
        self._empty = False
        await self._write_json(body)

    def _json_end(self) -> bytes:
        return JSON_FOOTER


def _mismatch(key: str) -> ServiceError:
    return ServiceError(
        f"the stored JSONL {key!r} does not hold the lines its members' pair counts say"
    )


def _untrainable(pairs: Sequence[formats.Pair]) -> int:
    return sum(not formats.trainable(pair) for pair in pairs)


def _decoded(data: bytes) -> list[formats.Pair]:
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


# A member's bytes: (chunk, start, end) of each stored chunk it spans, in order.
_Parts = list[tuple[bytes, int, int]]


def _joined(parts: _Parts) -> bytes:
    return b"".join(memoryview(chunk)[start:end] for chunk, start, end in parts)


def _first_line(parts: _Parts) -> bytes:
    pieces = []
    for chunk, start, end in parts:
        newline = chunk.find(b"\n", start, end)
        if newline >= 0:
            pieces.append(chunk[start : newline + 1])
            break
        pieces.append(chunk[start:end])
    return b"".join(pieces)


def _last_line(parts: _Parts) -> bytes:
    pieces: list[bytes] = []
    for chunk, start, end in reversed(parts):
        newline = chunk.rfind(b"\n", start, end if pieces else end - 1)
        if newline >= 0:
            pieces.append(chunk[newline + 1 : end])
            break
        pieces.append(chunk[start:end])
    return b"".join(reversed(pieces))


async def splice(
    outputs: OutputSet,
    v4: SplicedV4,
    storage: Storage,
    bucket: str,
    jsonl_key: str,
    members: Sequence[Member],
    leave_out: frozenset[str],
    replace: Replacements | None,
    stored_untrainable: int,
) -> AsyncGenerator[int, None]:
    """Stream the stored JSONL once into the new version's outputs; yields the pairs
    done (left-out ones too). See the module docstring."""
    trainers = bool(outputs.trainers)
    if not trainers:
        outputs.untrainable = stored_untrainable
    count = len(members)
    index = 0  # the member being read
    left = members[0].lines if members else 0  # its lines still to come
    started = keeping = False
    parts: _Parts = []  # its bytes so far
    offset = done = reported = 0

    async def finish(member: Member, parts: _Parts) -> None:
        # Miscounted lines would leave out or keep the wrong pairs. A conversation's
        # lines are consecutive, so when each member's first and last lines name it
        # (orjson writes no spaces), every member has exactly its own lines.
        name = b'"conversation_id":"' + member.conversation_id.encode() + b'"'
        if name not in _first_line(parts) or name not in _last_line(parts):
            raise _mismatch(jsonl_key)
        fate = _fate(member, leave_out, replace)
        if fate is _Fate.KEEP:
            if trainers:
                pairs = _decoded(_joined(parts))
                await outputs.count_and_render(PairFacts.of(pairs, member.digests), pairs)
                return
            lines: list[bytes] = []

            def pair_id(number: int) -> str:
                if not lines:
                    lines.extend(_joined(parts).split(b"\n"))
                return str(orjson.loads(lines[number]).get("id", ""))

            for number, digest in enumerate(iter_digests(member.digests)):
                outputs.duplicates.seen(digest, functools.partial(pair_id, number))
            return
        if not trainers:
            outputs.untrainable -= _untrainable(_decoded(_joined(parts)))
        if fate is _Fate.REPLACE:
            assert replace is not None
            new_lines, facts = replace.take(member.conversation_id)
            await v4.write(new_lines)
            await outputs.count_and_render(facts, _decoded(new_lines) if trainers else None)
            outputs.new_digests.append(facts.digests)

    chunks = storage.stream(bucket, jsonl_key)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            view, position, size = memoryview(chunk), 0, len(chunk)
            kept_from = 0  # where this chunk's kept bytes not yet given to `v4` start
            while position < size:
                if index == count:
                    raise _mismatch(jsonl_key)
                member = members[index]
                if not started:
                    started = True
                    kept = _fate(member, leave_out, replace) is _Fate.KEEP
                    if kept and not keeping:
                        v4.start_kept(offset)
                        kept_from = position
                    elif keeping and not kept:
                        await v4.keep(view[kept_from:position])
                        await v4.end_kept()
                    keeping = kept
                end = position
                while left:
                    newline = chunk.find(b"\n", end)
                    if newline < 0:
                        end = size
                        break
                    end, left = newline + 1, left - 1
                parts.append((chunk, position, end))
                offset += end - position
                position = end
                if not left:
                    await finish(member, parts)
                    done += member.lines
                    parts, started = [], False
                    index += 1
                    left = members[index].lines if index < count else 0
            if keeping:  # kept runs go to `v4` a chunk at a time, not a member at a time
                await v4.keep(view[kept_from:size])
            if done - reported >= REPLAY_REPORT_EVERY:
                yield done
                reported = done
    if index != count:
        raise _mismatch(jsonl_key)
    if keeping:
        await v4.end_kept()
    yield done
