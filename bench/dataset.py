"""The benchmark's conversations: generated once per seed, loaded once, reused by every run.

Conversation ``i`` of a seed is `generate_one(seed, i)` owned by a user derived from the
seed, created at the generator's base time + ``i`` minutes; so the rows already present
tell which indices are loaded, a larger N loads only the missing ones, and the first N
rows by ``created_at`` are always the same N conversations. Every 50th conversation
carries unknown extra fields (which the service must keep), as real data sometimes does.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from trainingfiles_dev.generator import GeneratedConversation, Kind, generate_one, load

from .stack import CONVERSATIONS_BUCKET, Stack, s3_client

STEP = dt.timedelta(minutes=1)  # the generator's spacing of `created_at`
_NAMESPACE = uuid.UUID("6b1f0c36-3c55-4a57-9d0e-5be0c8b3b7a1")


def owner_for(seed: int) -> uuid.UUID:
    """The user who owns a seed's conversations (so seeds never mix)."""
    return uuid.uuid5(_NAMESPACE, f"bench-seed-{seed}")


def _kind(index: int) -> Kind:
    return Kind.EXTRA_FIELDS if index % 50 == 49 else Kind.ELIGIBLE


def _conversations(seed: int, indices: list[int]) -> Iterator[GeneratedConversation]:
    owners = (owner_for(seed),)
    for index in indices:
        yield generate_one(seed, index, owners=owners, kind=_kind(index))


@dataclass(frozen=True)
class Dataset:
    """The first `count` conversations of `seed`, in index order."""

    seed: int
    ids: list[str]
    paths: list[str]
    loaded_now: int
    load_seconds: float
    # Whose they are and when the first was created: a selector for the first N is this
    # owner's conversations created before `base + N * STEP`.
    owner: uuid.UUID | None = None
    base: dt.datetime | None = None

    def created_before(self, n: int) -> dt.datetime:
        """The end of the first `n` conversations' creation times (exclusive)."""
        assert self.base is not None
        return self.base + n * STEP


async def ensure_loaded(stack: Stack, seed: int, count: int) -> Dataset:
    """Load whatever of conversations 0..count-1 is missing, then list them in order."""
    owner = owner_for(seed)
    base = generate_one(seed, 0, owners=(owner,)).created_at
    conn = await asyncpg.connect(stack.database_url)
    try:
        present = {
            round((row["created_at"] - base) / STEP)
            for row in await conn.fetch(
                "SELECT created_at FROM conversations WHERE created_by = $1", owner
            )
        }
        missing = [i for i in range(count) if i not in present]
        started = time.perf_counter()
        if missing:
            print(
                f"Loading {len(missing):,} generated conversations (seed {seed}; cached in "
                "the benchmark's database for later runs) …",
                flush=True,
            )
            async with s3_client(stack, 32) as s3:
                await load(
                    conn, s3, CONVERSATIONS_BUCKET, _conversations(seed, missing), concurrency=32
                )
        load_seconds = time.perf_counter() - started
        rows = await conn.fetch(
            "SELECT conversation_id, enriched_file_path FROM conversations "
            "WHERE created_by = $1 AND created_at < $2 ORDER BY created_at",
            owner,
            base + count * STEP,
        )
    finally:
        await conn.close()
    if len(rows) != count:
        raise RuntimeError(f"expected {count} conversations for seed {seed}, found {len(rows)}")
    return Dataset(
        seed=seed,
        ids=[str(row["conversation_id"]) for row in rows],
        paths=[row["enriched_file_path"] for row in rows],
        loaded_now=len(missing),
        load_seconds=load_seconds,
        owner=owner,
        base=base,
    )
