"""A build's new members, staged in the database as they are fetched, and its figures.

A Create or an Add used to keep every new member's summary, pair digests and document
provenance in lists until the commit inserted them: about 3 KB a conversation with its
token counts and emotions, the part of a build's memory that grew with its size.
`StagedMembers` is the fetch's sink instead: each conversation, in add order, feeds the
accumulators of the file's metrics, analytics and split sides (counters, whatever the
number of members), and its row waits in a batch of `STAGE_BATCH` that `Staging.write`
puts in the `staged_members` table (`Database.stage_members`, keyed by the build's
lease). A build that decides nothing per pair by its duplicates (it does not drop them
from trainer formats) counts them there too, at the end (`Staging.duplicates`), rather
than in a structure of every pair's digest. The
commit moves the staged rows into the members table with one INSERT ... SELECT
(`Database.activate`); a failed build's cleanup and the sweeper delete them.

What stays per conversation is only what the figures must name: the ids of the
conversations with a pair over the context length (the warning lists them).

No I/O of its own: the `Staging` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from . import analytics
from .aggregate import ConversationSummary, FileMetrics, MetricsAccumulator
from .models import StagedMember
from .outputs import PairFacts

# Rows per statement: a batch's arrays cost about a kilobyte a member while encoded.
STAGE_BATCH = 2_000


class Staging(Protocol):
    """A build's staged rows in the database (`Database`, bound to the build's lease)."""

    async def write(self, first: int, rows: Sequence[StagedMember]) -> None:
        """A batch of rows, the first numbered `first` (add order, from 0)."""

    async def duplicates(self, after_members: bool) -> tuple[int, list[str]]:
        """The staged pairs that repeat an earlier pair (of the file's current members
        first, with `after_members`), and the ids of the first `MAX_FIRST_DUPLICATES`
        staged ones: what `DuplicateCounter` would have counted, in SQL."""


@dataclass(frozen=True, slots=True)
class SplitSides:
    """Conversations and pairs on each side of the split (the dataset card's)."""

    train_conversations: int = 0
    train_pairs: int = 0
    validation_conversations: int = 0
    validation_pairs: int = 0


class Figures:
    """A version's metrics, analytics and split sides, fed one member at a time in file
    order (the stored members first, for an Add)."""

    def __init__(self, context_length: int, validation: frozenset[UUID] | None) -> None:
        self.metrics = MetricsAccumulator()
        self.analytics = analytics.AnalyticsAccumulator(context_length)
        self._context_length = context_length
        self._validation = validation
        self._sides = [0, 0, 0, 0]  # train conversations, pairs; validation ones
        # Members with a pair over the context length, in file order (the warning's).
        self.over_context: list[str] = []

    def add(self, summary: ConversationSummary) -> None:
        self.metrics.add(summary)
        self.analytics.add(summary)
        if self._validation is not None:
            side = 2 if UUID(summary.conversation_id) in self._validation else 0
            self._sides[side] += 1
            self._sides[side + 1] += summary.training_pair_count
        tokens = summary.pair_tokens()
        if tokens and max(tokens) > self._context_length:
            self.over_context.append(summary.conversation_id)

    def extend(self, summaries: Iterable[ConversationSummary]) -> Figures:
        for summary in summaries:
            self.add(summary)
        return self

    def __len__(self) -> int:
        return len(self.metrics)

    def file_metrics(self) -> FileMetrics:
        return self.metrics.result()

    def sides(self) -> SplitSides | None:
        """None without a split."""
        return None if self._validation is None else SplitSides(*self._sides)


class StagedMembers:
    """The fetch's sink for a Create or an Add: see the module docstring."""

    def __init__(self, staging: Staging, figures: Figures, batch: int | None = None) -> None:
        self._staging = staging
        self.figures = figures
        self._batch = STAGE_BATCH if batch is None else batch
        self._rows: list[StagedMember] = []
        self.staged = 0  # rows written so far
        self.added = 0  # rows added (written or waiting)

    async def add(
        self,
        summary: ConversationSummary,
        facts: PairFacts,
        document_key: str,
        etag: str | None,
        modified: datetime | None,
    ) -> None:
        self.figures.add(summary)
        row = StagedMember(
            summary, facts.digests, "\n".join(facts.ids), document_key, etag, modified
        )
        self._rows.append(row)
        self.added += 1
        if len(self._rows) >= self._batch:
            await self.flush()

    async def flush(self) -> None:
        """Write what waits; every row added is staged once this returns."""
        if self._rows:
            rows, self._rows = self._rows, []
            await self._staging.write(self.staged, rows)
            self.staged += len(rows)

    def __len__(self) -> int:
        return self.added
