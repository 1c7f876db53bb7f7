"""The outputs of one build, written in one pass as the pairs arrive in file order.

A build writes the v4.0 JSON and JSONL (`V4Outputs`), and each requested trainer format
once per side of the split (`FormatOutput`), each through its own streaming
`storage.ObjectWriter`; `OutputSet` routes every pair to them, counts duplicates and
untrainable pairs, and stores the dataset card last. An Add starts from the stored
version: the store copies its v4 pairs (UploadPartCopy) while the stored JSONL is
streamed once through the service, for the new objects' checksums and, when the file
has trainer formats, to render them again (a conversation's side of the split may
change when conversations are added).
An export is the same pass over the stored JSONL, with no v4 outputs and no new documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import orjson

from . import aggregate, formats
from .aggregate import JsonlToJsonPairs
from .duplicates import DIGEST_SIZE, DuplicateCounter, conversation_digests, iter_digests
from .errors import ResourceExhausted
from .formats import Format, Pair
from .models import OutputRecord, Split
from .storage import ObjectWriter, Storage, UploadHook

_T = TypeVar("_T")
# How often (in pairs) a replay of the stored JSONL reports its progress.
REPLAY_REPORT_EVERY = 2000


def too_large(max_bytes: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"an output of the training file would exceed the per-object limit of {max_bytes} bytes",
        "max_object_bytes",
        reason="OBJECT_TOO_LARGE",
    )


@dataclass(frozen=True, slots=True)
class PairFacts:
    """What a pass needs of a conversation's pairs besides rendering them: computed as
    soon as the document is transformed, so the pairs themselves need not be kept when no
    trainer format renders them (holding them cost the collector more than keeping this)."""

    digests: bytes  # packed `duplicates` digests, in turn order
    ids: tuple[str, ...]  # the pairs' ids, to name the first duplicates
    trainable: bytes  # 1 per pair with a target response, else 0

    @classmethod
    def of(cls, pairs: Sequence[Pair], digests: bytes | None = None) -> PairFacts:
        """The facts of a conversation's pairs; `digests`, when stored, are not redone."""
        if digests is None or len(digests) != DIGEST_SIZE * len(pairs):
            digests = bytes(conversation_digests(pairs))
        return cls(
            digests,
            tuple(str(p.get("id", "")) for p in pairs),
            bytes(formats.trainable(p) for p in pairs),
        )


class Replacements:
    """New lines for some conversations of a stored file (a Refresh), in file order.

    Filled by the fetch (it is its sink: `write_conversation`, in the order of
    `conversation_ids`), read by the replay of the stored JSONL (`take`). The lines are
    spooled to an unnamed temporary file, so refreshing many conversations holds no more
    memory than a few; what stays per conversation is its facts and where its lines are.
    """

    trainers: Sequence[FormatOutput] = ()  # the fetch keeps no decoded pairs for it

    def __init__(self, conversation_ids: Sequence[str]) -> None:
        self._order = list(conversation_ids)
        self._at: dict[str, tuple[int, int, PairFacts]] = {}
        self._next = 0  # the next conversation of `_order` to arrive
        self._file: io.BufferedRandom = tempfile.TemporaryFile()  # noqa: SIM115
        self._size = 0

    async def write_conversation(
        self, lines: bytes, facts: PairFacts, pairs: Sequence[Pair] | None
    ) -> None:
        conversation_id = self._order[self._next]
        self._next += 1
        self._file.seek(self._size)
        self._file.write(lines)
        self._at[conversation_id] = (self._size, len(lines), facts)
        self._size += len(lines)

    def skip_conversation(self) -> None:
        """The next conversation has no lines (the filters left it out)."""
        self._next += 1

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._at

    def take(self, conversation_id: str) -> tuple[bytes, PairFacts]:
        start, size, facts = self._at[conversation_id]
        self._file.seek(start)
        return self._file.read(size), facts

    @property
    def size(self) -> int:
        """The bytes of every new line spooled."""
        return self._size

    def close(self) -> None:
        self._file.close()


class V4Outputs:
    """The JSON and the JSONL of one version of a file, written as lines arrive in order.

    Each line goes to both objects at once (the JSON's copy with its newline turned into
    a comma), so both uploads proceed while documents are still being fetched. The JSON's
    first part waits for the header, which needs every conversation's metrics: `close`
    sends it last. Nothing is visible in the bucket before `close`; `abort` drops it all.
    The JSONL is checksummed as it is written (an Add's stored pairs as they are streamed,
    `absorb_stored`). The JSON's header comes last but is its first bytes, so its
    checksum needs the rest again at the end: what the JSON gets after the header (an
    Add's stored pairs included, as streamed) is also spooled to an unnamed temporary
    file (the page cache, as much temporary space as the JSON's size) and hashed behind
    the header at `close`. Nothing is read back from the store.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        max_bytes: int,
        on_upload: UploadHook | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self._storage = storage
        self._bucket = bucket
        self.json = storage.writer(
            bucket,
            json_key,
            "application/json",
            hold_first=True,
            on_upload=on_upload,
            slots=slots,
        )
        self.jsonl = storage.writer(
            bucket, jsonl_key, "application/x-ndjson", on_upload=on_upload, slots=slots
        )
        # None: the JSONL holds bytes this process never sees; it is read back for its
        # checksum (no build leaves it so today: an Add streams what the store copies).
        self.jsonl_sha256: hashlib._Hash | None = hashlib.sha256()
        # Everything the JSON gets after its header; None: the JSON is read back instead.
        self._json_rest: io.BufferedRandom | None = tempfile.TemporaryFile()  # noqa: SIM115
        self._pairs = JsonlToJsonPairs()
        self._stored_pairs = JsonlToJsonPairs()  # an Add's stored JSONL, as the JSON has it
        self._max_bytes = max_bytes

    @property
    def jsonl_size(self) -> int:
        return self.jsonl.size

    def copy_stored(
        self, json_key: str, json_size: int, jsonl_key: str, jsonl_size: int
    ) -> Awaitable[list[None]]:
        """Have the store append a version's stored pairs; new lines must wait for it.

        The JSON holds the JSONL's lines joined by commas between its header and
        `JSON_FOOTER`, so the pairs are a byte range of each stored object.
        """
        pairs = jsonl_size - 1
        start = json_size - len(aggregate.JSON_FOOTER) - pairs
        self._pairs.feed(b"\n")  # the stored pairs ended a line: the next pair follows a comma
        return together(
            self.jsonl.append_object(jsonl_key, 0, jsonl_size),
            self.json.append_object(json_key, start, start + pairs),
        )

    def absorb_stored(self, chunk: bytes) -> None:
        """A chunk of the stored JSONL the store copies (an Add), streamed in order before
        any new line: into both checksums, as the new JSONL and the new JSON hold it."""
        if self.jsonl_sha256 is not None:
            self.jsonl_sha256.update(chunk)
        if self._json_rest is not None:
            self._json_rest.write(self._stored_pairs.feed(chunk))

    async def write(self, lines: bytes) -> None:
        if self.jsonl.size + len(lines) > self._max_bytes:
            raise too_large(self._max_bytes)
        if self.jsonl_sha256 is not None:
            self.jsonl_sha256.update(lines)
        await self.jsonl.write(lines)
        body = self._pairs.feed(lines)
        if body:
            await self._write_json(body)

    async def _write_json(self, body: bytes) -> None:
        if self._json_rest is not None:
            self._json_rest.write(body)
        await self.json.write(body)

    def _drop_json_rest(self) -> None:
        if self._json_rest is not None:
            self._json_rest.close()
            self._json_rest = None

    def _json_checksum(self, header: bytes) -> str:
        """SHA-256 of the header and the spooled rest: the JSON's bytes, in order."""
        assert self._json_rest is not None
        digest = hashlib.sha256(header)
        self._json_rest.seek(0)
        while chunk := self._json_rest.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    def _json_end(self) -> bytes:
        """What the JSON gets after its last pair."""
        return self._pairs.close()

    async def close(self, header: bytes, pair_count: int) -> list[OutputRecord]:
        """Store both objects; their records, with checksums of what was stored."""
        await self._write_json(self._json_end())
        json_size, jsonl_size = await together(self.json.close(header), self.jsonl.close())
        try:
            read_back = []
            if self._json_rest is None:
                read_back.append(self._storage.sha256(self._bucket, self.json.key))
            if self.jsonl_sha256 is None:
                read_back.append(self._storage.sha256(self._bucket, self.jsonl.key))
            checksums = await together(*read_back)
            if self._json_rest is None:
                json_sha256 = checksums.pop(0)
            else:
                # Hashing ~1 GB/s: off the event loop, which keeps serving other calls.
                json_sha256 = await asyncio.to_thread(self._json_checksum, header)
        finally:
            self._drop_json_rest()
        jsonl_sha256 = checksums[0] if self.jsonl_sha256 is None else self.jsonl_sha256.hexdigest()
        return [
            _record(
                formats.FORMATS["v4_json"],
                Split.ALL,
                self.json.key,
                json_size,
                pair_count,
                json_sha256,
            ),
            _record(
                formats.FORMATS["v4_jsonl"],
                Split.ALL,
                self.jsonl.key,
                jsonl_size,
                pair_count,
                jsonl_sha256,
            ),
        ]

    async def abort(self) -> None:
        self._drop_json_rest()
        await asyncio.gather(self.json.abort(), self.jsonl.abort())


class FormatOutput:
    """One trainer format on one side of the split: a renderer feeding one object."""

    def __init__(
        self,
        writer: ObjectWriter,
        fmt: Format,
        split: Split,
        max_bytes: int,
    ) -> None:
        assert fmt.new_renderer is not None
        self.format = fmt
        self.split = split
        self._writer = writer
        self._renderer = fmt.new_renderer()
        self._sha256 = hashlib.sha256()
        self._max_bytes = max_bytes
        self.records = 0

    async def write(self, pair: Pair) -> None:
        self.records += 1
        await self._put(self._renderer.feed(pair))

    async def _put(self, data: bytes) -> None:
        if not data:
            return
        if self._writer.size + len(data) > self._max_bytes:
            raise too_large(self._max_bytes)
        self._sha256.update(data)
        await self._writer.write(data)

    async def close(self) -> OutputRecord:
        await self._put(self._renderer.close())
        size = await self._writer.close()
        return _record(
            self.format, self.split, self._writer.key, size, self.records, self._sha256.hexdigest()
        )

    async def abort(self) -> None:
        await self._writer.abort()


class OutputSet:
    """Every output of one build, fed pairs in file order; see the module docstring.

    `validation` is the split's validation side (conversation ids), None without a
    split. Duplicates are counted over the whole version, in file order: the first of
    identical pairs is the original, the others are duplicates.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        keys: dict[tuple[str, Split], str],
        trainer_formats: Sequence[Format],
        validation: frozenset[UUID] | None,
        drop_duplicates: bool,
        max_bytes: int,
        v4: V4Outputs | None = None,
        on_upload: UploadHook | None = None,
        slots: asyncio.Semaphore | None = None,
        count_duplicates: bool = True,
    ) -> None:
        self._storage = storage
        self._bucket = bucket
        self._keys = keys
        self.v4 = v4
        # False: nothing here depends on a pair being a duplicate (none is dropped), and
        # the build counts them in the database afterwards (`settle_duplicates`).
        self._counting = count_duplicates
        self._validation = validation
        self.drops_duplicates = drop_duplicates
        sides = (Split.TRAIN, Split.VALIDATION) if validation is not None else (Split.ALL,)
        self._by_side: dict[Split, list[FormatOutput]] = {
            side: [
                FormatOutput(
                    storage.writer(
                        bucket,
                        keys[(f.name, side)],
                        f.content_type,
                        on_upload=on_upload,
                        slots=slots,
                        spool=True,  # a dozen parts filling at once stay out of memory
                    ),
                    f,
                    side,
                    max_bytes,
                )
                for f in trainer_formats
            ]
            for side in sides
        }
        self.trainers = [o for side in sides for o in self._by_side[side]]
        self.duplicates = DuplicateCounter()
        self.untrainable = 0
        # A Refresh's new conversations' pair digests, in file order (a Create's or an
        # Add's go to the staged members with their summaries, `staging.py`).
        self.new_digests: list[bytes] = []
        self._stored: asyncio.Future[None] | None = None
        self._last_conversation: tuple[str, Split] = ("", Split.ALL)

    # ---------------------------------------------------------------- the stored version

    def start_from_stored(
        self,
        jsonl_key: str,
        json_key: str,
        json_size: int,
        jsonl_size: int,
        stored_digests: Sequence[bytes | None],
        stored_untrainable: int,
    ) -> None:
        """An Add: the stored version's pairs come first; new pairs wait until they are in.

        Without trainer outputs the stored pairs are not decoded: the duplicates are
        counted from their stored digests and the untrainable ones are as counted before.
        """
        assert self.v4 is not None
        copies = self.v4.copy_stored(json_key, json_size, jsonl_key, jsonl_size)
        if not self.trainers:
            # Nothing to render from the stored pairs: they are streamed once for the new
            # objects' checksums (while the documents are fetched), not decoded.
            for blob in stored_digests if self._counting else ():
                for digest in iter_digests(blob or b""):
                    self.duplicates.seen(digest)
            self.untrainable = stored_untrainable
            v4 = self.v4

            async def absorb() -> None:
                chunks = self._storage.stream(self._bucket, jsonl_key)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        v4.absorb_stored(chunk)

            async def copied() -> None:
                await together(copies, absorb())

            self._stored = asyncio.ensure_future(copied())
            return

        async def stored() -> None:
            async def replay() -> None:
                replaying = self.replay(jsonl_key, stored_digests)
                async with contextlib.aclosing(replaying):
                    async for _ in replaying:
                        pass

            await together(copies, replay())

        self._stored = asyncio.ensure_future(stored())

    async def replay(
        self,
        jsonl_key: str,
        stored_digests: Sequence[bytes | None] = (),
        *,
        leave_out: frozenset[str] | None = None,
        replace: Replacements | None = None,
    ) -> AsyncGenerator[int, None]:
        """Stream a stored v4 JSONL through the trainer outputs; yields the pairs done.

        `stored_digests` are the conversations' pair digests as stored, in file order:
        they are not computed again. Without `leave_out` (an Add, an export) the bytes
        also go to the new JSONL's checksum (an Add's store-side copy never passes through
        here). With it (a Remove, a Refresh of a file whose members' digests were not all
        stored; otherwise `splice.py` does it without decoding), the conversations it
        names are left out, those `replace` has are written with their new lines (a
        Refresh), and the others' lines are written to the new v4 outputs as they were
        stored.
        """
        rest = b""
        done = reported = 0
        conversation: list[Pair] = []  # the pairs of one conversation, taken together
        raw: list[bytes] = []  # and their lines, for a Remove's v4 outputs
        index = 0  # of that conversation in the file
        removing = leave_out is not None

        async def flush() -> None:
            if removing:
                assert leave_out is not None
                conversation_id = conversation[0]["conversation_id"]
                if conversation_id in leave_out:
                    return
                if replace is not None and conversation_id in replace:
                    lines, facts = replace.take(conversation_id)
                    if self.v4 is not None:
                        await self.v4.write(lines)
                    pairs = (
                        [orjson.loads(line) for line in lines.splitlines()]
                        if self.trainers
                        else None
                    )
                    await self.count_and_render(facts, pairs)
                    self.new_digests.append(facts.digests)
                    return
                if self.v4 is not None:
                    await self.v4.write(b"".join(raw))
            known = stored_digests[index] if index < len(stored_digests) else None
            await self.count_and_render(
                PairFacts.of(conversation, known), conversation if self.trainers else None
            )

        chunks = self._storage.stream(self._bucket, jsonl_key)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if not removing and self.v4 is not None:
                    self.v4.absorb_stored(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    pair = orjson.loads(line)
                    if (
                        conversation
                        and pair["conversation_id"] != conversation[0]["conversation_id"]
                    ):
                        await flush()
                        done += len(conversation)
                        conversation = []
                        raw.clear()
                        index += 1
                    conversation.append(pair)
                    if removing:
                        raw.append(line + b"\n")
                if done - reported >= REPLAY_REPORT_EVERY:
                    yield done
                    reported = done
        if rest:
            raise ValueError(f"stored JSONL {jsonl_key!r} does not end with a newline")
        if conversation:
            await flush()
            done += len(conversation)
        yield done

    # ---------------------------------------------------------------------- the pass

    async def write_conversation(
        self, lines: bytes, facts: PairFacts, pairs: Sequence[Pair] | None
    ) -> None:
        """A new conversation: its JSONL lines, what the pass needs of each pair, and the
        same pairs decoded (only when there are trainer outputs to render them into)."""
        if self._stored is not None:
            await self._stored
        if self.v4 is not None:
            await self.v4.write(lines)
        await self.count_and_render(facts, pairs)

    def skip_conversation(self) -> None:
        """The next conversation has no lines (the filters left it out): nothing to do."""

    def settle_duplicates(self, count: int, first: Sequence[str]) -> None:
        """The duplicates as counted elsewhere (a set not `count_duplicates`)."""
        assert not self._counting
        self.duplicates = DuplicateCounter.counted(count, first)

    async def count_and_render(self, facts: PairFacts, pairs: Sequence[Pair] | None) -> None:
        """One conversation's pairs counted, and rendered into the trainer outputs."""
        for index, digest in enumerate(iter_digests(facts.digests)):
            duplicate = self._counting and self.duplicates.seen(digest, facts.ids[index])
            if not facts.trainable[index]:
                self.untrainable += 1
            elif pairs is not None and not (duplicate and self.drops_duplicates):
                pair = pairs[index]
                for output in self._by_side[self._side(pair)]:
                    await output.write(pair)

    def _side(self, pair: Pair) -> Split:
        if self._validation is None:
            return Split.ALL
        conversation_id = pair["conversation_id"]
        if self._last_conversation[0] != conversation_id:  # pairs come by conversation
            side = Split.VALIDATION if UUID(conversation_id) in self._validation else Split.TRAIN
            self._last_conversation = (conversation_id, side)
        return self._last_conversation[1]

    # -------------------------------------------------------------------------- close

    async def close_trainers(self) -> list[OutputRecord]:
        if self._stored is not None:
            await self._stored
        return await together(*(output.close() for output in self.trainers))

    async def store_card(self, text: bytes) -> OutputRecord:
        key = self._keys[(formats.CARD.name, Split.ALL)]
        size = await self._storage.upload(self._bucket, key, _one(text), formats.CARD.content_type)
        return _record(formats.CARD, Split.ALL, key, size, 0, hashlib.sha256(text).hexdigest())

    async def abort(self) -> None:
        if self._stored is not None:
            self._stored.cancel()
            await asyncio.gather(self._stored, return_exceptions=True)
        aborts = [output.abort() for output in self.trainers]
        if self.v4 is not None:
            aborts.append(self.v4.abort())
        await asyncio.gather(*aborts)


def _record(
    fmt: Format, split: Split, key: str, size: int, records: int, sha256: str
) -> OutputRecord:
    return OutputRecord(fmt.name, split, key, size, records, fmt.content_type, sha256)


async def _one(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def together(*calls: Awaitable[_T]) -> list[_T]:
    """Like `gather`, but the first failure cancels the others before it propagates."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
