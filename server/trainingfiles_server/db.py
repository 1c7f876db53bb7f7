"""PostgreSQL access: one asyncpg pool per process, queries as named SQL constants.

Library errors are translated into the domain's errors here (`translate_errors`), so the
rest of the service never sees an asyncpg exception. Functions return domain records.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg
import orjson

from .aggregate import ConversationSummary, FileMetrics
from .config import Settings
from .errors import AlreadyExists, Unavailable
from .models import (
    CandidateConversation,
    EligibleConversation,
    FileConversation,
    Status,
    TrainingFileRecord,
)

Connection: TypeAlias = "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"
Pool: TypeAlias = "asyncpg.Pool[Any]"

PING = "SELECT 1"

TRAINING_FILE_COLUMNS = """
    id, name, description, status, storage_bucket, json_file_path, jsonl_file_path,
    conversation_count, total_training_pairs, json_file_size, jsonl_file_size,
    avg_quality_score, min_quality_score, max_quality_score, human_reviewed_count,
    scaffolding_distribution, vertical, consultant_profile, error_message, version,
    created_by, created_at, updated_at
"""

# One round trip answers every eligibility question about every requested id, in
# request order, and returns the enriched paths the fetch needs.
CHECK_CONVERSATIONS = """
SELECT r.id AS conversation_id,
       c.conversation_id IS NOT NULL AS known,
       c.enrichment_status,
       c.enriched_file_path,
       c.created_by,
       m.conversation_id IS NOT NULL AS in_file
FROM unnest($1::uuid[]) WITH ORDINALITY AS r (id, ord)
LEFT JOIN conversations c ON c.conversation_id = r.id
LEFT JOIN training_file_conversations m
       ON m.training_file_id = $2 AND m.conversation_id = r.id
ORDER BY r.ord
"""

INSERT_PROCESSING_FILE = f"""
INSERT INTO training_files
    (id, name, description, status, storage_bucket, json_file_path, jsonl_file_path,
     created_by)
VALUES ($1, $2, $3, 'processing', $4, $5, $6, $7)
RETURNING {TRAINING_FILE_COLUMNS}
"""

INSERT_INTENTS = """
INSERT INTO storage_intents (bucket, object_key, training_file_id)
SELECT $1, key, $2 FROM unnest($3::text[]) AS key
ON CONFLICT (bucket, object_key) DO NOTHING
"""

DELETE_INTENTS = """
DELETE FROM storage_intents WHERE bucket = $1 AND object_key = ANY($2::text[])
"""

# Make a file's new content live: metrics, paths, sizes, status, version.
ACTIVATE_FILE = f"""
UPDATE training_files
SET status = 'active', json_file_path = $2, jsonl_file_path = $3,
    json_file_size = $4, jsonl_file_size = $5,
    conversation_count = $6, total_training_pairs = $7,
    avg_quality_score = $8, min_quality_score = $9, max_quality_score = $10,
    human_reviewed_count = $11, scaffolding_distribution = $12,
    vertical = $13, consultant_profile = $14, version = version + 1
WHERE id = $1
RETURNING {TRAINING_FILE_COLUMNS}
"""

INSERT_FILE_CONVERSATIONS = """
INSERT INTO training_file_conversations
    (training_file_id, conversation_id, position, added_by, training_pair_count,
     quality_score, human_reviewed, persona_key, emotional_arc_key, training_topic_key)
SELECT $1, c.conversation_id, $2 + c.ord - 1, $3, c.pairs, c.quality, c.reviewed,
       c.persona, c.arc, c.topic
FROM unnest($4::uuid[], $5::int[], $6::float8[], $7::bool[], $8::text[], $9::text[],
            $10::text[])
     WITH ORDINALITY AS c (conversation_id, pairs, quality, reviewed, persona, arc, topic, ord)
"""

MARK_FAILED = """
UPDATE training_files
SET status = 'failed', error_message = $2, json_file_path = NULL, jsonl_file_path = NULL
WHERE id = $1 AND status = 'processing'
"""

GET_FILE = f"SELECT {TRAINING_FILE_COLUMNS} FROM training_files WHERE id = $1"

LOCK_FILE = f"""
SELECT {TRAINING_FILE_COLUMNS} FROM training_files WHERE id = $1 FOR NO KEY UPDATE
"""

FILE_SUMMARIES = """
SELECT conversation_id, training_pair_count, quality_score, human_reviewed,
       persona_key, emotional_arc_key, training_topic_key
FROM training_file_conversations
WHERE training_file_id = $1
ORDER BY position
"""

ARCHIVE_FILE = f"""
UPDATE training_files SET status = 'archived'
WHERE id = $1 AND status = 'active'
RETURNING {TRAINING_FILE_COLUMNS}
"""

# Keyset pagination, newest first. $1 status filter (NULL: all but excluded), $2 whether
# archived files are included when no status is given, $3/$4 the last (created_at, id)
# seen, $5 the page size + 1, $6 owner filter (NULL: everyone).
LIST_FILES = f"""
SELECT {TRAINING_FILE_COLUMNS} FROM training_files
WHERE ($1::text IS NULL OR status = $1)
  AND ($1::text IS NOT NULL OR $2 OR status <> 'archived')
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
  AND ($6::uuid IS NULL OR created_by = $6)
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

LIST_FILE_CONVERSATIONS = """
SELECT conversation_id, position, added_at, added_by, training_pair_count, quality_score,
       human_reviewed, persona_key, emotional_arc_key, training_topic_key
FROM training_file_conversations
WHERE training_file_id = $1 AND position > $2
ORDER BY position
LIMIT $3
"""

LIST_ELIGIBLE = """
SELECT c.conversation_id, c.persona_id, c.emotional_arc_id, c.training_topic_id,
       c.created_by, c.created_at
FROM conversations c
WHERE c.enrichment_status = 'completed' AND c.enriched_file_path IS NOT NULL
  AND ($1::uuid IS NULL OR NOT EXISTS (
        SELECT 1 FROM training_file_conversations m
        WHERE m.training_file_id = $1 AND m.conversation_id = c.conversation_id))
  AND ($2::timestamptz IS NULL OR (c.created_at, c.conversation_id) < ($2, $3::uuid))
  AND ($5::uuid IS NULL OR c.created_by = $5)
ORDER BY c.created_at DESC, c.conversation_id DESC
LIMIT $4
"""

# Start-up repair: files a dead process left in 'processing', and intents of objects
# that were never committed (or were replaced but not yet deleted).
FAIL_STALE_PROCESSING = """
UPDATE training_files
SET status = 'failed', error_message = 'interrupted: the server stopped while building it',
    json_file_path = NULL, jsonl_file_path = NULL
WHERE status = 'processing' AND updated_at < now() - make_interval(secs => $1)
RETURNING id
"""

STALE_INTENTS = """
SELECT bucket, object_key FROM storage_intents
WHERE created_at < now() - make_interval(secs => $1)
ORDER BY created_at
"""

# Errors that mean "the database cannot be reached right now", as opposed to a bug or a
# constraint violation: the caller may retry.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity failures into `Unavailable`; everything else propagates."""
    try:
        yield
    except _UNAVAILABLE_ERRORS as exc:
        raise Unavailable("the database is unavailable; retry later") from exc


async def _init_connection(conn: Connection) -> None:
    # jsonb in and out through orjson, as every JSON byte of the service.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: Connection) -> None:
    """Release a connection without asyncpg's reset query.

    The default reset (`RESET ALL`, `UNLISTEN *`, `CLOSE ALL`, advisory unlock) is one more
    round trip on every release, which doubled the database work of a Get or List. The
    service keeps no session state (no SET, LISTEN, cursors or advisory locks), and an
    open transaction is still rolled back by the pool before this runs.
    """


def _file(row: asyncpg.Record) -> TrainingFileRecord:
    values = dict(row.items())
    values["status"] = Status(values["status"])
    return TrainingFileRecord(**values)


def _summary(row: asyncpg.Record) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=str(row["conversation_id"]),
        training_pair_count=row["training_pair_count"],
        quality_score=row["quality_score"],
        human_reviewed=row["human_reviewed"],
        persona_key=row["persona_key"],
        emotional_arc_key=row["emotional_arc_key"],
        training_topic_key=row["training_topic_key"],
    )


class Database:
    """The service's view of PostgreSQL; wraps the one pool of the process."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        with translate_errors():
            await self.pool.fetchval(PING)

    async def check_conversations(
        self, ids: Sequence[UUID], training_file_id: UUID | None, conn: Connection | None = None
    ) -> list[CandidateConversation]:
        with translate_errors():
            rows = await (conn or self.pool).fetch(CHECK_CONVERSATIONS, ids, training_file_id)
        return [CandidateConversation(**dict(row.items())) for row in rows]

    async def insert_processing_file(
        self,
        *,
        file_id: UUID,
        name: str,
        description: str | None,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        created_by: UUID | None,
    ) -> TrainingFileRecord:
        """Take the name and record the keys to clean up, in one transaction."""
        with translate_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                try:
                    row = await conn.fetchrow(
                        INSERT_PROCESSING_FILE,
                        file_id,
                        name,
                        description,
                        bucket,
                        json_key,
                        jsonl_key,
                        created_by,
                    )
                except asyncpg.exceptions.UniqueViolationError:
                    raise AlreadyExists(
                        "training_file", name, f"a training file named {name!r} already exists"
                    ) from None
                await conn.execute(INSERT_INTENTS, bucket, file_id, [json_key, jsonl_key])
        assert row is not None
        return _file(row)

    async def record_intents(self, bucket: str, file_id: UUID, keys: Sequence[str]) -> None:
        with translate_errors():
            await self.pool.execute(INSERT_INTENTS, bucket, file_id, list(keys))

    async def clear_intents(self, bucket: str, keys: Sequence[str]) -> None:
        with translate_errors():
            await self.pool.execute(DELETE_INTENTS, bucket, list(keys))

    async def activate(
        self,
        conn: Connection,
        *,
        file_id: UUID,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        json_size: int,
        jsonl_size: int,
        metrics: FileMetrics,
        vertical: str,
        consultant_profile: bytes,
        new_conversations: Sequence[ConversationSummary],
        first_position: int,
        added_by: UUID | None,
    ) -> TrainingFileRecord:
        """Within the caller's transaction: new content live, members added, intents cleared."""
        with translate_errors():
            row = await conn.fetchrow(
                ACTIVATE_FILE,
                file_id,
                json_key,
                jsonl_key,
                json_size,
                jsonl_size,
                metrics.conversation_count,
                metrics.total_training_pairs,
                metrics.avg_quality_score,
                metrics.min_quality_score,
                metrics.max_quality_score,
                metrics.human_reviewed_count,
                metrics.scaffolding_distribution(),
                vertical,
                # A `json` column: the text is stored as written, keys in their order.
                consultant_profile.decode(),
            )
            await conn.execute(
                INSERT_FILE_CONVERSATIONS,
                file_id,
                first_position,
                added_by,
                [UUID(s.conversation_id) for s in new_conversations],
                [s.training_pair_count for s in new_conversations],
                [s.quality_score for s in new_conversations],
                [s.human_reviewed for s in new_conversations],
                [s.persona_key for s in new_conversations],
                [s.emotional_arc_key for s in new_conversations],
                [s.training_topic_key for s in new_conversations],
            )
            await conn.execute(DELETE_INTENTS, bucket, [json_key, jsonl_key])
        assert row is not None
        return _file(row)

    async def mark_failed(self, file_id: UUID, reason: str) -> None:
        with translate_errors():
            await self.pool.execute(MARK_FAILED, file_id, reason[:2000])

    async def get_file(self, file_id: UUID) -> TrainingFileRecord | None:
        with translate_errors():
            row = await self.pool.fetchrow(GET_FILE, file_id)
        return _file(row) if row is not None else None

    @contextlib.asynccontextmanager
    async def locked_file(
        self, file_id: UUID
    ) -> AsyncIterator[tuple[Connection, TrainingFileRecord | None]]:
        """A transaction holding the file's row lock: concurrent Adds run one at a time."""
        with translate_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(LOCK_FILE, file_id)
                yield conn, (_file(row) if row is not None else None)

    async def file_summaries(self, conn: Connection, file_id: UUID) -> list[ConversationSummary]:
        with translate_errors():
            rows = await conn.fetch(FILE_SUMMARIES, file_id)
        return [_summary(row) for row in rows]

    async def archive(self, file_id: UUID) -> TrainingFileRecord | None:
        with translate_errors():
            row = await self.pool.fetchrow(ARCHIVE_FILE, file_id)
        return _file(row) if row is not None else None

    async def list_files(
        self,
        *,
        status: Status | None,
        include_archived: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
        owner: UUID | None,
    ) -> list[TrainingFileRecord]:
        with translate_errors():
            rows = await self.pool.fetch(
                LIST_FILES,
                status.value if status else None,
                include_archived,
                after[0] if after else None,
                after[1] if after else None,
                limit,
                owner,
            )
        return [_file(row) for row in rows]

    async def list_file_conversations(
        self, file_id: UUID, after_position: int, limit: int
    ) -> list[FileConversation]:
        with translate_errors():
            rows = await self.pool.fetch(LIST_FILE_CONVERSATIONS, file_id, after_position, limit)
        return [FileConversation(**dict(row.items())) for row in rows]

    async def list_eligible(
        self,
        *,
        exclude_file: UUID | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
        owner: UUID | None,
    ) -> list[EligibleConversation]:
        with translate_errors():
            rows = await self.pool.fetch(
                LIST_ELIGIBLE,
                exclude_file,
                after[0] if after else None,
                after[1] if after else None,
                limit,
                owner,
            )
        return [EligibleConversation(**dict(row.items())) for row in rows]

    async def fail_stale_processing(self, older_than_seconds: float) -> list[UUID]:
        with translate_errors():
            rows = await self.pool.fetch(FAIL_STALE_PROCESSING, older_than_seconds)
        return [row["id"] for row in rows]

    async def stale_intents(self, older_than_seconds: float) -> list[tuple[str, str]]:
        with translate_errors():
            rows = await self.pool.fetch(STALE_INTENTS, older_than_seconds)
        return [(row["bucket"], row["object_key"]) for row in rows]


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """Create the pool (connecting `database_pool_min_size` connections) and close it."""
    with translate_errors():
        pool = await asyncpg.create_pool(
            dsn=settings.database_url.get_secret_value(),
            min_size=settings.database_pool_min_size,
            max_size=settings.database_pool_max_size,
            statement_cache_size=settings.database_statement_cache_size,
            command_timeout=settings.database_command_timeout_seconds,
            init=_init_connection,
            reset=_keep_session,
        )
    try:
        yield Database(pool)
    finally:
        await pool.close()
