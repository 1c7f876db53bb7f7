"""The fetch scheduler: every enriched document fetched, checked and turned into lines.

A bounded pool of workers (`fetch_concurrency`) fetches and parses documents in any
order; the lines go into the outputs in add order. Workers run a bounded distance ahead
of the oldest conversation not yet written, so one slow document holds the others back
rather than letting lines pile up in memory. Progress goes out at least every 5 % of the
conversations or every second.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from . import aggregate, failpoints, metrics, tokens
from .aggregate import ConsistencyCheck, ConversationSummary
from .config import Settings
from .documents import DocumentError, decode_json_object, validate_enriched_document
from .filters import DocumentFilter, FilterTally, PairFilter, Verdict, judge
from .leases import Lease
from .models import CandidateConversation, Progress, Provenance, Stage
from .outputs import OutputSet, PairFacts, Replacements
from .rules import bad_document
from .storage import ObjectMissing, ObjectTooLarge, Storage

# Progress at least every 5 % of the conversations or every second, whichever is sooner.
PROGRESS_FRACTION = 0.05
PROGRESS_SECONDS = 1.0
# How many documents each fetch worker may run ahead of the oldest one not yet written.
_AHEAD_PER_WORKER = 8


class MemberSink(Protocol):
    """Where the fetch puts each conversation it wrote, in add order (`staging.py`)."""

    async def add(
        self,
        summary: ConversationSummary,
        facts: PairFacts,
        document_key: str,
        etag: str | None,
        modified: datetime | None,
    ) -> None: ...


class KeptMembers:
    """A sink that keeps the summaries and provenance in memory (a Refresh's stale
    members: as many as are stale, never the whole file)."""

    def __init__(self) -> None:
        self.summaries = aggregate.Summaries()
        self.provenance = Provenance()

    async def add(
        self,
        summary: ConversationSummary,
        facts: PairFacts,
        document_key: str,
        etag: str | None,
        modified: datetime | None,
    ) -> None:
        self.summaries.append(summary)
        self.provenance.append(document_key, etag, modified)


class Targets:
    """The conversations to fetch, in add order, kept small for requests of any size.

    An enriched document's key is `<user_id>/<conversation_id>/enriched.json` (SPEC), so
    a key is kept as its conversation's id and a *template*, the key's text around the
    id (one per user: `<user_id>/` and `/enriched.json`): 16 bytes for the id and 4 for
    the template's index, ~20 bytes a conversation. A key without its id in it (or
    beyond `MAX_TEMPLATES` distinct ones) is kept whole, joined with the others into one
    string, with where it starts (8 bytes) and the key's length. No small object per
    conversation survives, to keep the allocator's arenas from going back to the system.
    `TargetsBuilder` makes them a page of records at a time (a selector's).
    """

    def __init__(
        self, candidates: Sequence[CandidateConversation], selected_from: int | None = None
    ) -> None:
        builder = TargetsBuilder()
        for c in candidates:
            builder.add(c.conversation_id, c.enriched_file_path or "")
        builder.packed(self)
        self._selected_from = len(candidates) if selected_from is None else selected_from

    # Set by `TargetsBuilder.packed`.
    _ids: bytearray
    _kinds: array[int]  # >= 0: a template's index; < 0: -(raw index) - 1
    _templates: list[tuple[str, str]]  # the text before and after the id
    _raw: str
    _raw_starts: array[int]
    _selected_from: int

    def __len__(self) -> int:
        return len(self._kinds)

    def take(self, index: int) -> tuple[str, str]:
        """Conversation `index`: its id and its enriched document's key."""
        conversation_id = str(UUID(bytes=bytes(self._ids[16 * index : 16 * index + 16])))
        kind = self._kinds[index]
        if kind >= 0:
            before, after = self._templates[kind]
            return conversation_id, before + conversation_id + after
        raw = -kind - 1
        return conversation_id, self._raw[self._raw_starts[raw] : self._raw_starts[raw + 1]]

    def selected(self, index: int) -> bool:
        """Whether conversation `index` was chosen by a selector (not listed)."""
        return index >= self._selected_from


class TargetsBuilder:
    """`Targets` made one conversation at a time: the listed ones, then (from
    `selecting()` on) those a selector chose, as its pages of records arrive."""

    MAX_TEMPLATES = 4_096

    def __init__(self) -> None:
        self._ids = bytearray()
        self._kinds = array("i")
        self._templates: dict[tuple[str, str], int] = {}
        self._raw_pages: list[str] = []  # the whole keys, joined a page at a time
        self._raw_page: list[str] = []
        self._raw_starts = array("q", [0])
        self._selected_from: int | None = None

    def __len__(self) -> int:
        return len(self._kinds)

    def add(self, conversation_id: UUID, path: str) -> None:
        self._ids += conversation_id.bytes
        before, found, after = path.partition(str(conversation_id))
        template = self._templates.get((before, after)) if found else None
        if template is None and found and len(self._templates) < self.MAX_TEMPLATES:
            template = self._templates[(before, after)] = len(self._templates)
        if template is not None:
            self._kinds.append(template)
            return
        self._kinds.append(-len(self._raw_starts))  # -(raw index) - 1
        self._raw_page.append(path)
        self._raw_starts.append(self._raw_starts[-1] + len(path))
        if len(self._raw_page) >= 1_000:
            self._raw_pages.append("".join(self._raw_page))
            self._raw_page = []

    def selecting(self) -> None:
        """The conversations added from now on were chosen by a selector."""
        self._selected_from = len(self)

    def packed(self, targets: Targets) -> None:
        targets._ids = self._ids
        targets._kinds = self._kinds
        targets._templates = list(self._templates)
        targets._raw = "".join([*self._raw_pages, *self._raw_page])
        targets._raw_starts = self._raw_starts
        targets._selected_from = len(self) if self._selected_from is None else self._selected_from

    def build(self) -> Targets:
        targets = Targets(())
        self.packed(targets)
        return targets


@dataclass(frozen=True, slots=True)
class _Fetched:
    index: int
    summary: ConversationSummary
    vertical: str
    consultant_profile: bytes
    lines: bytes
    facts: PairFacts
    pairs: list[dict[str, Any]] | None  # only when trainer formats render them
    etag: str | None
    modified: datetime | None
    verdict: Verdict
    size: int


@dataclass(frozen=True, slots=True)
class _Dropped:
    """A document the filters left out: nothing of it is written."""

    index: int
    verdict: Verdict
    size: int  # bytes read all the same


async def fetch_all(
    settings: Settings,
    storage: Storage,
    file_id: UUID,
    targets: Targets,
    outputs: OutputSet | Replacements,
    consistency: ConsistencyCheck,
    members: MemberSink,
    lease: Lease,
    *,
    document_filter: DocumentFilter | None = None,
    pair_filter: PairFilter | None = None,
    tally: FilterTally | None = None,
) -> AsyncGenerator[Progress, None]:
    """Fetch, validate and transform every document with bounded concurrency.

    Results arrive in any order; `members`, the consistency check and the outputs
    advance in add order, so warnings name conversations deterministically. A worker
    takes a document only while fewer than `_AHEAD_PER_WORKER` per worker are fetched
    but not yet written. The filters' verdict on each document (`filters.judge`) is
    counted in `tally`; a conversation left with no pair is not written at all.
    """
    total = len(targets)
    indices = iter(range(total))  # shared by the workers
    # What arrived ahead of the oldest not yet written (at most the workers' lead).
    results: dict[int, _Fetched | _Dropped] = {}
    # What the loop below waits for: a result, a worker's failure, or a tick (None).
    finished: asyncio.Queue[_Fetched | _Dropped | BaseException | None] = asyncio.Queue()
    pairs_kept = pair_filter or PairFilter()
    tally = tally if tally is not None else FilterTally()
    max_bytes = settings.max_object_bytes
    ahead = asyncio.Semaphore(_AHEAD_PER_WORKER * settings.fetch_concurrency)
    keep_pairs = bool(outputs.trainers)
    counter = tokens.counter(settings.tokenizer_json) if settings.count_tokens else None

    async def worker() -> None:
        try:
            await fetch()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            finished.put_nowait(exc)  # the loop raises it at once

    async def tick() -> None:
        while True:  # progress at least every PROGRESS_SECONDS, even when nothing arrives
            await asyncio.sleep(PROGRESS_SECONDS)
            finished.put_nowait(None)

    async def fetch() -> None:
        while True:
            await ahead.acquire()
            index = next(indices, None)
            if index is None:
                ahead.release()
                return
            conversation_id, path = targets.take(index)
            try:
                stored = await storage.get_document(path, max_bytes)
                raw = decode_json_object(stored.data)
                document = validate_enriched_document(raw)
                verdict = judge(document, targets.selected(index), document_filter, pairs_kept)
                if not verdict.kept:
                    finished.put_nowait(_Dropped(index, verdict, len(stored.data)))
                    continue
                transformed = aggregate.transform_conversation(
                    conversation_id,
                    raw,
                    document,
                    verdict.kept if verdict.excluded_pairs else None,
                    counter,
                )
            except ObjectMissing:
                metrics.DOCUMENT_FAILURES.labels("missing").inc()
                raise bad_document(
                    conversation_id,
                    f"enriched document {path!r} is missing from storage",
                ) from None
            except ObjectTooLarge as exc:
                metrics.DOCUMENT_FAILURES.labels("too_large").inc()
                raise bad_document(
                    conversation_id,
                    f"enriched document is {exc.size} bytes, above the limit of {max_bytes}",
                ) from None
            except DocumentError as exc:
                metrics.DOCUMENT_FAILURES.labels("invalid").inc()
                raise bad_document(conversation_id, exc.reason) from None
            finished.put_nowait(
                _Fetched(
                    index,
                    transformed.summary,
                    transformed.vertical,
                    transformed.consultant_profile,
                    transformed.lines,
                    PairFacts.of(transformed.pairs),
                    transformed.pairs if keep_pairs else None,
                    stored.etag,
                    stored.modified,
                    verdict,
                    len(stored.data),
                )
            )
            del stored

    workers = [asyncio.create_task(worker()) for _ in range(min(settings.fetch_concurrency, total))]
    workers.append(asyncio.create_task(tick()))
    done = 0
    next_in_order = 0
    last_sent_done = 0
    last_sent_at = time.monotonic()
    step = max(1, int(total * PROGRESS_FRACTION))
    # Documents and bytes fetched, counted into the metrics once per progress message.
    counted_done = counted_bytes = 0
    try:
        while done < total:
            # One plain wait per wake-up, then whatever else has arrived meanwhile;
            # progress is considered after each arrival, so a burst of arrivals
            # still reports every 5 %.
            arrived = [await finished.get()]
            while not finished.empty():
                arrived.append(finished.get_nowait())
            for fetched in arrived:
                if isinstance(fetched, BaseException):
                    raise fetched
                if fetched is not None:
                    results[fetched.index] = fetched
                    done += 1
                    counted_bytes += fetched.size
                while next_in_order < total and (item := results.pop(next_in_order, None)):
                    tally.count(targets.take(next_in_order)[0], item.verdict)
                    if isinstance(item, _Dropped):
                        next_in_order += 1
                        outputs.skip_conversation()
                        ahead.release()
                        continue
                    consistency.observe(
                        item.summary.conversation_id, item.vertical, item.consultant_profile
                    )
                    key = targets.take(next_in_order)[1]
                    next_in_order += 1
                    await outputs.write_conversation(item.lines, item.facts, item.pairs)
                    await members.add(item.summary, item.facts, key, item.etag, item.modified)
                    ahead.release()
                    await failpoints.reach("build.fetched")
                lease.check()
                now = time.monotonic()
                if (
                    done - last_sent_done >= step
                    or now - last_sent_at >= PROGRESS_SECONDS
                    or done == total
                ):
                    metrics.DOCUMENTS_FETCHED.inc(done - counted_done)
                    metrics.DOCUMENT_BYTES.inc(counted_bytes)
                    counted_done, counted_bytes = done, 0
                    yield Progress(
                        Stage.FETCHING, done, total, file_id, warnings=consistency.drain()
                    )
                    last_sent_done, last_sent_at = done, now
    finally:
        if done > counted_done:  # what arrived after the last progress message
            metrics.DOCUMENTS_FETCHED.inc(done - counted_done)
            metrics.DOCUMENT_BYTES.inc(counted_bytes)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
