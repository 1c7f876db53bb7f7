"""PostgreSQL access: one asyncpg pool per process, queries as named SQL constants.

Library errors are translated into the domain's errors here (`translate_errors`), so the
rest of the service never sees an asyncpg exception. Functions return domain records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg
import orjson

from . import tracing
from .aggregate import ConversationSummary, FileMetrics
from .analytics import Analytics
from .config import Settings
from .errors import AlreadyExists, ServiceError, Unavailable
from .models import (
    CandidateConversation,
    EligibleConversation,
    FileConversation,
    OutputRecord,
    Provenance,
    Selector,
    Split,
    StagedMember,
    Status,
    StoredConversation,
    TrainingFileRecord,
    VersionReason,
    VersionRecord,
)

Connection: TypeAlias = "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"
Pool: TypeAlias = "asyncpg.Pool[Any]"

PING = "SELECT 1"
# How long a statement that timed out may take to confirm its cancellation (db.connection).
_CANCEL_GRACE = 1.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _outputs_of(file_id: str, version: str) -> str:
    """A version's outputs as one jsonb array column (one round trip for a page)."""
    return f"""(SELECT coalesce(jsonb_agg(jsonb_build_array(o.format, o.split, o.object_key,
                                                 o.size_bytes, o.record_count,
                                                 o.content_type, o.sha256)), '[]')
     FROM training_file_outputs o
     WHERE o.training_file_id = {file_id} AND o.version = {version}) AS outputs"""


# A file's row; with its current version's outputs (TRAINING_FILE_COLUMNS) or, in the
# BASIC view of a list, none (their subquery and bytes are most of a page's cost).
_FILE_COLUMNS = """
    id, name, description, status, storage_bucket, json_file_path, jsonl_file_path,
    conversation_count, total_training_pairs, json_file_size, jsonl_file_size,
    avg_quality_score, min_quality_score, max_quality_score, human_reviewed_count,
    scaffolding_distribution, vertical, consultant_profile, error_message, version,
    created_by, created_at, updated_at, output_formats, split_spec, drop_duplicates,
    duplicate_pair_count, untrainable_pair_count, auto_refresh, refresh_attempts,
    refresh_error, refresh_after, pair_filter, excluded_pair_count,
    filtered_out_conversation_count, row_version"""
TRAINING_FILE_COLUMNS = (
    f"{_FILE_COLUMNS},\n    {_outputs_of('training_files.id', 'training_files.version')}\n"
)

# One round trip answers every eligibility question about every requested id, in
# request order, and returns the enriched paths the fetch needs.
CHECK_CONVERSATIONS = """
SELECT r.id AS conversation_id,
       c.conversation_id IS NOT NULL AS known,
       c.enrichment_status,
       c.enriched_file_path,
       c.created_by,
       m.conversation_id IS NOT NULL AS in_file,
       c.persona_id,
       c.training_topic_id
FROM unnest($1::uuid[]) WITH ORDINALITY AS r (id, ord)
LEFT JOIN conversations c ON c.conversation_id = r.id
LEFT JOIN training_file_conversations m
       ON m.training_file_id = $2 AND m.conversation_id = r.id
      AND m.removed_in_version IS NULL
ORDER BY r.ord
"""

# A new file, 'processing' under the Create's lease ($8 token, $9 seconds), with the
# build settings every version keeps ($10 formats, $11 split, $12 drop duplicates,
# $14 pair filter).
INSERT_PROCESSING_FILE = f"""
INSERT INTO training_files
    (id, name, description, status, storage_bucket, json_file_path, jsonl_file_path,
     created_by, lease_token, lease_expires_at, output_formats, split_spec, drop_duplicates,
     auto_refresh, pair_filter)
VALUES ($1, $2, $3, 'processing', $4, $5, $6, $7, $8,
        clock_timestamp() + make_interval(secs => $9), $10, $11, $12, $13, $14)
RETURNING {TRAINING_FILE_COLUMNS}
"""

# The objects a build is about to write ($3), owned by its lease ($4).
INSERT_INTENTS = """
INSERT INTO storage_intents (bucket, object_key, training_file_id, lease_token)
SELECT $1, key, $2, $4 FROM unnest($3::text[]) AS key
ON CONFLICT (bucket, object_key) DO NOTHING
"""

# Objects to delete once `delete_after` has passed, whoever wrote them.
INSERT_DUE_INTENTS = """
INSERT INTO storage_intents (bucket, object_key, training_file_id, delete_after)
SELECT $1, key, $2, $4 FROM unnest($3::text[]) AS key
ON CONFLICT (bucket, object_key)
DO UPDATE SET lease_token = NULL, delete_after = EXCLUDED.delete_after
"""

RECORD_UPLOAD = """
UPDATE storage_intents SET upload_id = $3
WHERE bucket = $1 AND object_key = $2 AND lease_token = $4
"""

DELETE_INTENTS = """
DELETE FROM storage_intents WHERE bucket = $1 AND object_key = ANY($2::text[])
"""

# Take an active file's lease for an Add, unless another build holds a live one.
CLAIM_FILE = f"""
UPDATE training_files
SET lease_token = $2, lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND status = 'active'
  AND (lease_token IS NULL OR lease_expires_at <= clock_timestamp())
RETURNING {TRAINING_FILE_COLUMNS}
"""

# An expired lease is never renewed: once the sweeper may have acted on it, it is lost.
RENEW_LEASE = """
UPDATE training_files
SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
"""

RELEASE_LEASE = """
UPDATE training_files SET lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2
"""

# Make a build's content live, only while it still holds its lease ($15) and the file is
# still in the status the build started from ($16): metrics, paths, sizes, version.
ACTIVATE_FILE = """
UPDATE training_files
SET status = 'active', json_file_path = $2, jsonl_file_path = $3,
    json_file_size = $4, jsonl_file_size = $5,
    conversation_count = $6, total_training_pairs = $7,
    avg_quality_score = $8, min_quality_score = $9, max_quality_score = $10,
    human_reviewed_count = $11, scaffolding_distribution = $12,
    vertical = $13, consultant_profile = $14, version = version + 1,
    lease_token = NULL, lease_expires_at = NULL,
    output_formats = $17, duplicate_pair_count = $18, untrainable_pair_count = $19,
    excluded_pair_count = $20, filtered_out_conversation_count = $21
WHERE id = $1 AND lease_token = $15 AND lease_expires_at > clock_timestamp()
  AND status = $16
RETURNING version
"""

# An export's outputs join the version, only while the build holds its lease.
RECORD_EXPORT = """
UPDATE training_files
SET output_formats = $3, lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
  AND status = 'active'
RETURNING version
"""

# The outputs of version $2 an export replaces: their rows go, their keys are returned
# to be retired.
DROP_OUTPUTS = """
DELETE FROM training_file_outputs o
USING unnest($3::text[], $4::text[]) AS r (format, split)
WHERE o.training_file_id = $1 AND o.version = $2 AND o.format = r.format
  AND o.split = r.split
RETURNING o.object_key
"""

INSERT_OUTPUTS = """
INSERT INTO training_file_outputs
    (training_file_id, version, format, split, object_key, size_bytes, record_count,
     content_type, sha256)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[],
                             $7::bigint[], $8::text[], $9::text[])
"""

# A version as its build made it ($1 file, $2 version, $3 reason, $4 change count, $5 by).
INSERT_VERSION = """
INSERT INTO training_file_versions
    (training_file_id, version, reason, change_count, created_by, conversation_count,
     total_training_pairs, avg_quality_score, min_quality_score, max_quality_score,
     human_reviewed_count, scaffolding_distribution, duplicate_pair_count,
     untrainable_pair_count, excluded_pair_count, filtered_out_conversation_count,
     analytics)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
"""

# A version's stored analytics (NULL: built before they were kept); no row: no version.
GET_VERSION_ANALYTICS = """
SELECT analytics FROM training_file_versions WHERE training_file_id = $1 AND version = $2
"""

# The members of version $2 as the analytics need them, in file order.
VERSION_SUMMARIES = """
SELECT conversation_id, training_pair_count, quality_score, human_reviewed, persona_key,
       emotional_arc_key, training_topic_key, pair_stats
FROM training_file_conversations
WHERE training_file_id = $1 AND added_in_version <= $2
  AND (removed_in_version IS NULL OR removed_in_version > $2)
ORDER BY position
"""

# Retention: versions older than the last $2 (the current one, $3, among them) lose their
# objects; their keys are returned to be retired, their rows stay as the record.
PRUNE_VERSIONS = """
WITH pruned AS (
    UPDATE training_file_versions SET pruned_at = now()
    WHERE training_file_id = $1 AND version <= $3::int - $2::int AND pruned_at IS NULL
    RETURNING version
)
SELECT o.object_key FROM training_file_outputs o
WHERE o.training_file_id = $1 AND o.version IN (SELECT version FROM pruned)
"""

_VERSION_COLUMNS = """
    v.training_file_id, v.version, v.reason, v.change_count, v.created_by, v.created_at,
    v.conversation_count, v.total_training_pairs, v.avg_quality_score,
    v.min_quality_score, v.max_quality_score, v.human_reviewed_count,
    v.scaffolding_distribution, v.duplicate_pair_count, v.untrainable_pair_count,
    v.pruned_at, v.excluded_pair_count, v.filtered_out_conversation_count,
    {outputs}
""".format(outputs=_outputs_of("v.training_file_id", "v.version"))

GET_VERSION = f"""
SELECT {_VERSION_COLUMNS} FROM training_file_versions v
WHERE v.training_file_id = $1 AND v.version = $2
"""

# Newest first; $2 the last version seen (NULL: from the newest), $3 the page size + 1.
LIST_VERSIONS = f"""
SELECT {_VERSION_COLUMNS} FROM training_file_versions v
WHERE v.training_file_id = $1 AND ($2::int IS NULL OR v.version < $2)
ORDER BY v.version DESC
LIMIT $3
"""

# The build's own intents for the objects it made live; fewer than expected means the
# sweeper condemned them (the lease was lost) and the commit must not happen.
CLAIM_BUILD_INTENTS = """
DELETE FROM storage_intents
WHERE bucket = $1 AND object_key = ANY($2::text[]) AND lease_token = $3
"""

# Replaced objects wait for the last link handed out for the file to expire.
RETIRE_OBJECTS = """
INSERT INTO storage_intents (bucket, object_key, training_file_id, delete_after)
SELECT $1, key, f.id, greatest(now(), f.links_valid_until)
FROM unnest($3::text[]) AS key, training_files f
WHERE f.id = $2
ON CONFLICT (bucket, object_key)
DO UPDATE SET lease_token = NULL, delete_after = EXCLUDED.delete_after
RETURNING delete_after <= now() AS due
"""

# A download link is about to be handed out: remember until when it may be used, and
# read the keys in the same statement, so an Add that replaces them sees the expiry.
NOTE_LINK = f"""
UPDATE training_files
SET links_valid_until = greatest(links_valid_until, $2)
WHERE id = $1 AND status IN ('active', 'archived')
  AND ($3::uuid IS NULL OR created_by = $3)
RETURNING {TRAINING_FILE_COLUMNS}
"""

# A build's new members, staged as it fetches them (`staging.py`): $1 file, $2 the
# build's lease, $3 the first row's ordinal (add order).
STAGE_MEMBERS = """
INSERT INTO staged_members
    (training_file_id, lease_token, ordinal, conversation_id, training_pair_count,
     quality_score, human_reviewed, persona_key, emotional_arc_key, training_topic_key,
     pair_digests, document_key, document_etag, document_modified_at, pair_stats,
     pair_ids)
SELECT $1, $2, $3 + c.ord - 1, c.conversation_id, c.pairs, c.quality, c.reviewed,
       c.persona, c.arc, c.topic, c.digests, c.key, c.etag, c.modified, c.stats::jsonb,
       c.ids
FROM unnest($4::uuid[], $5::int[], $6::float8[], $7::bool[], $8::text[], $9::text[],
            $10::text[], $11::bytea[], $12::text[], $13::text[], $14::timestamptz[],
            $15::text[], $16::text[])
     WITH ORDINALITY AS c (conversation_id, pairs, quality, reviewed, persona, arc, topic,
                           digests, key, etag, modified, stats, ids, ord)
"""

# The duplicates among a build's staged pairs ($2 its lease), after the file's current
# members' pairs when $3 (an Add): every pair whose digest came earlier in file order,
# counted; the ids of the first $4 staged ones. `DuplicateCounter`'s answer, in SQL.
STAGED_DUPLICATES = """
WITH pairs AS (
    SELECT 0 AS part, m.position AS at, i,
           substring(m.pair_digests FROM i * 16 + 1 FOR 16) AS digest
    FROM training_file_conversations m
    CROSS JOIN LATERAL generate_series(0, length(m.pair_digests) / 16 - 1) AS i
    WHERE $3 AND m.training_file_id = $1 AND m.removed_in_version IS NULL
    UNION ALL
    SELECT 1, s.ordinal, i, substring(s.pair_digests FROM i * 16 + 1 FOR 16)
    FROM staged_members s
    CROSS JOIN LATERAL generate_series(0, length(s.pair_digests) / 16 - 1) AS i
    WHERE s.training_file_id = $1 AND s.lease_token = $2
),
repeated AS (
    SELECT part, at, i FROM (
        SELECT part, at, i,
               row_number() OVER (PARTITION BY digest ORDER BY part, at, i) AS nth
        FROM pairs
    ) numbered
    WHERE nth > 1
)
SELECT (SELECT count(*) FROM repeated) AS count,
       ARRAY(
           SELECT split_part(s.pair_ids, E'\n', r.i + 1)
           FROM (SELECT at, i FROM repeated WHERE part = 1 ORDER BY at, i LIMIT $4) r
           JOIN staged_members s
             ON s.training_file_id = $1 AND s.lease_token = $2 AND s.ordinal = r.at
           ORDER BY r.at, r.i
       ) AS first
"""

# The commit: the build's staged members ($4 its lease) become members of version $5, in
# add order. New members go after every position ever used ($2 is only a floor): a
# removed member keeps its position, so every version's members keep their order.
MOVE_STAGED_MEMBERS = """
INSERT INTO training_file_conversations
    (training_file_id, conversation_id, position, added_by, training_pair_count,
     quality_score, human_reviewed, persona_key, emotional_arc_key, training_topic_key,
     pair_digests, added_in_version, document_key, document_etag, document_modified_at,
     built_at, pair_stats)
SELECT $1, s.conversation_id, greatest($2::int, n.next) + s.ordinal, $3,
       s.training_pair_count, s.quality_score, s.human_reviewed, s.persona_key,
       s.emotional_arc_key, s.training_topic_key, s.pair_digests, $5, s.document_key,
       s.document_etag, s.document_modified_at, $6, s.pair_stats
FROM staged_members s,
     (SELECT coalesce(max(position) + 1, 0)::int AS next
      FROM training_file_conversations WHERE training_file_id = $1) AS n
WHERE s.training_file_id = $1 AND s.lease_token = $4
ORDER BY s.ordinal
"""

# A build's staged rows, once committed or abandoned.
DROP_STAGED_MEMBERS = """
DELETE FROM staged_members WHERE training_file_id = $1 AND lease_token = $2
"""

# Current members whose conversation changed after their build began: the trigger on
# `conversations` marks them (`stale_since`), and a commit marks the members it adds whose
# conversation changed while it ran (see the stale-members migration).
STALE_COUNT = """
SELECT count(*) FROM training_file_conversations
WHERE training_file_id = $1 AND removed_in_version IS NULL AND stale_since IS NOT NULL
"""

# The members a commit added (version $2) whose conversation changed after their build
# began (while the build ran): stale from the start.
MARK_STALE_ON_ARRIVAL = """
UPDATE training_file_conversations m SET stale_since = ch.changed_at
FROM conversation_changes ch
WHERE m.training_file_id = $1 AND m.added_in_version = $2
  AND m.removed_in_version IS NULL AND m.stale_since IS NULL
  AND ch.conversation_id = m.conversation_id AND ch.changed_at > m.built_at
"""

# Files due for an automatic refresh ($1: the debounce in seconds), oldest change first:
# opted in, active, free, not backing off, with a stale member, and no member changed
# within the debounce (a burst of changes makes one refresh).
DUE_REFRESHES = """
SELECT f.id FROM training_files f
WHERE f.auto_refresh AND f.status = 'active'
  AND (f.lease_token IS NULL OR f.lease_expires_at <= clock_timestamp())
  AND (f.refresh_after IS NULL OR f.refresh_after <= now())
  AND EXISTS (
      SELECT 1 FROM training_file_conversations m
      WHERE m.training_file_id = f.id AND m.removed_in_version IS NULL
        AND m.stale_since IS NOT NULL)
  AND NOT EXISTS (
      SELECT 1 FROM training_file_conversations m
      JOIN conversation_changes ch ON ch.conversation_id = m.conversation_id
      WHERE m.training_file_id = f.id AND m.removed_in_version IS NULL
        AND m.stale_since IS NOT NULL
        AND ch.changed_at > now() - make_interval(secs => $1))
ORDER BY f.updated_at
"""

NEXT_REFRESH_CHECK = """
SELECT extract(epoch FROM least(
    (SELECT min(refresh_after) FROM training_files
     WHERE auto_refresh AND status = 'active' AND refresh_after > now()),
    (SELECT min(ch.changed_at) + make_interval(secs => $1)
     FROM conversation_changes ch
     WHERE ch.changed_at > now() - make_interval(secs => $1)
       AND EXISTS (SELECT 1 FROM training_file_conversations m
                   JOIN training_files f ON f.id = m.training_file_id
                   WHERE m.conversation_id = ch.conversation_id
                     AND m.removed_in_version IS NULL
                     AND f.auto_refresh AND f.status = 'active'))
) - now())::float8
"""

REFRESH_SUCCEEDED = """
UPDATE training_files SET refresh_attempts = 0, refresh_error = NULL, refresh_after = NULL
WHERE id = $1
"""

# A failed automatic refresh: counted, its reason kept, the next try after
# 2^(failures before) × $3 seconds, at most $4; returns that wait.
REFRESH_FAILED = """
UPDATE training_files
SET refresh_attempts = refresh_attempts + 1, refresh_error = $2,
    refresh_after = now() + make_interval(secs => least($4, $3 * 2 ^ refresh_attempts))
WHERE id = $1
RETURNING least($4, $3 * 2 ^ (refresh_attempts - 1))::float8 AS retry_in
"""

SET_AUTO_REFRESH_FILE = f"""
UPDATE training_files
SET auto_refresh = $2, refresh_attempts = 0, refresh_error = NULL, refresh_after = NULL
WHERE id = $1
RETURNING {TRAINING_FILE_COLUMNS}
"""
STALE_MEMBERS = """
SELECT m.conversation_id, c.conversation_id IS NOT NULL AS known, c.enrichment_status,
       c.enriched_file_path, c.created_by, false AS in_file, c.persona_id,
       c.training_topic_id
FROM training_file_conversations m
LEFT JOIN conversations c ON c.conversation_id = m.conversation_id
WHERE m.training_file_id = $1 AND m.removed_in_version IS NULL
  AND m.stale_since IS NOT NULL
ORDER BY m.position
"""

# A Refresh's members: the stale rows end with version $2, their replacements take
# their places (same position, same added_at and added_by) from it.
RETIRE_REFRESHED = """
UPDATE training_file_conversations SET removed_in_version = $2
WHERE training_file_id = $1 AND conversation_id = ANY($3::uuid[])
  AND removed_in_version IS NULL
RETURNING conversation_id, position, added_at, added_by
"""
INSERT_REFRESHED = """
INSERT INTO training_file_conversations
    (training_file_id, conversation_id, position, added_at, added_by, training_pair_count,
     quality_score, human_reviewed, persona_key, emotional_arc_key, training_topic_key,
     pair_digests, added_in_version, document_key, document_etag, document_modified_at,
     built_at, pair_stats)
SELECT $1, c.conversation_id, c.position, c.added_at, c.added_by, c.pairs, c.quality,
       c.reviewed, c.persona, c.arc, c.topic, c.digests, $2, c.key, c.etag, c.modified, $3,
       c.stats::jsonb
FROM unnest($4::uuid[], $5::int[], $6::timestamptz[], $7::uuid[], $8::int[],
            $9::float8[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::bytea[],
            $15::text[], $16::text[], $17::timestamptz[], $18::text[])
     AS c (conversation_id, position, added_at, added_by, pairs, quality, reviewed,
           persona, arc, topic, digests, key, etag, modified, stats)
"""

# Members a Remove takes out ($2), as of version $3.
REMOVE_MEMBERS = """
UPDATE training_file_conversations SET removed_in_version = $3
WHERE training_file_id = $1 AND conversation_id = ANY($2::uuid[])
  AND removed_in_version IS NULL
"""

MARK_FAILED = """
UPDATE training_files
SET status = 'failed', error_message = $2, json_file_path = NULL, jsonl_file_path = NULL,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'processing' AND lease_token = $3
"""

GET_FILE = f"SELECT {TRAINING_FILE_COLUMNS} FROM training_files WHERE id = $1"
# The same with its stale member count when it has content (STALE_COUNT), in one trip.
GET_FILE_WITH_STALENESS = f"""
SELECT {TRAINING_FILE_COLUMNS},
       CASE WHEN status IN ('active', 'archived') THEN
           (SELECT count(*) FROM training_file_conversations m
            WHERE m.training_file_id = training_files.id AND m.removed_in_version IS NULL
              AND m.stale_since IS NOT NULL)
       END AS stale_conversation_count
FROM training_files WHERE id = $1
"""

FILE_SUMMARIES = """
SELECT m.conversation_id, m.training_pair_count, m.quality_score, m.human_reviewed,
       m.persona_key, m.emotional_arc_key, m.training_topic_key, m.pair_digests,
       m.pair_stats, c.persona_id, c.training_topic_id
FROM training_file_conversations m
JOIN conversations c ON c.conversation_id = m.conversation_id
WHERE m.training_file_id = $1 AND m.removed_in_version IS NULL
ORDER BY m.position
"""

ARCHIVE_FILE = f"""
UPDATE training_files SET status = 'archived'
WHERE id = $1 AND status = 'active'
RETURNING {TRAINING_FILE_COLUMNS}
"""

# Keyset pagination, newest first. $1 status filter (NULL: all but excluded), $2 whether
# archived files are included when no status is given, $3/$4 the last (created_at, id)
# seen, $5 the page size + 1, $6 owner filter (NULL: everyone).
_LIST_FILES = """
SELECT {columns} FROM training_files
WHERE ($1::text IS NULL OR status = $1)
  AND ($1::text IS NOT NULL OR $2 OR status <> 'archived')
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
  AND ($6::uuid IS NULL OR created_by = $6)
ORDER BY created_at DESC, id DESC
LIMIT $5
"""
# A page as its rows' versions only (`row_version`, see its migration): the rows a list
# has read before at that version are not read again (reads.py, `ListedRows`).
LIST_FILE_VERSIONS = _LIST_FILES.format(columns="id, row_version, created_at")
_BASIC_COLUMNS = f"{_FILE_COLUMNS}, '[]'::jsonb AS outputs"
# $1 the ids whose rows to read, in any order.
_FILES_BY_ID = "SELECT {columns} FROM training_files WHERE id = ANY($1::uuid[])"
FILES_BY_ID = _FILES_BY_ID.format(columns=TRAINING_FILE_COLUMNS)
FILES_BY_ID_BASIC = _FILES_BY_ID.format(columns=_BASIC_COLUMNS)

# $4: the version whose members to list (NULL: the current version's).
LIST_FILE_CONVERSATIONS = """
SELECT conversation_id, position, added_at, added_by, training_pair_count, quality_score,
       human_reviewed, persona_key, emotional_arc_key, training_topic_key
FROM training_file_conversations
WHERE training_file_id = $1 AND position > $2
  AND CASE WHEN $4::int IS NULL THEN removed_in_version IS NULL
           ELSE added_in_version <= $4
                AND (removed_in_version IS NULL OR removed_in_version > $4) END
ORDER BY position
LIMIT $3
"""


def _selected(first: int) -> str:
    """A selector's filters over `conversations c`, from parameter `first` on: personas,
    arcs, topics (empty: any), created at or after, created before."""
    p, a, t, after, before = (f"${first + i}" for i in range(5))
    return f"""
  AND (cardinality({p}::uuid[]) = 0 OR c.persona_id = ANY({p}::uuid[]))
  AND (cardinality({a}::uuid[]) = 0 OR c.emotional_arc_id = ANY({a}::uuid[]))
  AND (cardinality({t}::uuid[]) = 0 OR c.training_topic_id = ANY({t}::uuid[]))
  AND ({after}::timestamptz IS NULL OR c.created_at >= {after})
  AND ({before}::timestamptz IS NULL OR c.created_at < {before})
"""


LIST_ELIGIBLE = (
    """
SELECT c.conversation_id, c.persona_id, c.emotional_arc_id, c.training_topic_id,
       c.created_by, c.created_at, known.quality_score, known.training_pair_count
FROM conversations c
-- What a build found in its current document, if one did: the latest member summary
-- built from it since its last change, of a file without a pair filter (one with a
-- filter summarises only the pairs it kept).
LEFT JOIN LATERAL (
    SELECT m.quality_score, m.training_pair_count
    FROM training_file_conversations m
    JOIN training_files f ON f.id = m.training_file_id AND f.pair_filter IS NULL
    WHERE m.conversation_id = c.conversation_id
      AND m.document_key = c.enriched_file_path
      AND NOT EXISTS (SELECT 1 FROM conversation_changes ch
                      WHERE ch.conversation_id = c.conversation_id
                        AND ch.changed_at > m.built_at)
    ORDER BY m.built_at DESC
    LIMIT 1
) known ON true
WHERE c.enrichment_status = 'completed' AND c.enriched_file_path IS NOT NULL
  AND ($1::uuid IS NULL OR NOT EXISTS (
        SELECT 1 FROM training_file_conversations m
        WHERE m.training_file_id = $1 AND m.conversation_id = c.conversation_id
          AND m.removed_in_version IS NULL))
  AND ($2::timestamptz IS NULL OR (c.created_at, c.conversation_id) < ($2, $3::uuid))
  AND ($5::uuid IS NULL OR c.created_by = $5)
"""
    + _selected(6)
    + """
ORDER BY c.created_at DESC, c.conversation_id DESC
LIMIT $4
"""
)

# What a selector chooses for a build, oldest first, as validated candidates: $1 the
# file whose members are left out (an Add), $2 the row limit, $3 the owner.
SELECT_CONVERSATIONS = (
    """
SELECT c.conversation_id, true AS known, c.enrichment_status, c.enriched_file_path,
       c.created_by, false AS in_file, c.persona_id, c.training_topic_id
FROM conversations c
WHERE c.enrichment_status = 'completed' AND c.enriched_file_path IS NOT NULL
  AND ($1::uuid IS NULL OR NOT EXISTS (
        SELECT 1 FROM training_file_conversations m
        WHERE m.training_file_id = $1 AND m.conversation_id = c.conversation_id
          AND m.removed_in_version IS NULL))
  AND ($3::uuid IS NULL OR c.created_by = $3)
"""
    + _selected(4)
    + """
ORDER BY c.created_at, c.conversation_id
LIMIT $2
"""
)

# The sweeper (sweeper.py). Builds whose lease expired: a Create fails, an Add lets go.
FAIL_EXPIRED_BUILDS = """
UPDATE training_files
SET status = 'failed', error_message = 'interrupted: the server building it stopped',
    json_file_path = NULL, jsonl_file_path = NULL,
    lease_token = NULL, lease_expires_at = NULL
WHERE status = 'processing'
  AND (lease_token IS NULL OR lease_expires_at <= clock_timestamp())
RETURNING id
"""

RELEASE_EXPIRED_LEASES = """
UPDATE training_files SET lease_token = NULL, lease_expires_at = NULL
WHERE status <> 'processing' AND lease_token IS NOT NULL
  AND lease_expires_at <= clock_timestamp()
"""

# Staged members of builds that no longer hold a live lease (their server died): gone.
DROP_ORPHAN_STAGED_MEMBERS = """
DELETE FROM staged_members s
WHERE NOT EXISTS (
    SELECT 1 FROM training_files f
    WHERE f.id = s.training_file_id AND f.lease_token = s.lease_token
      AND f.lease_expires_at > clock_timestamp())
"""

# Intents whose build no longer holds a live lease become the sweeper's, due now.
CONDEMN_ORPHAN_INTENTS = """
UPDATE storage_intents i
SET lease_token = NULL, delete_after = now()
WHERE i.lease_token IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM training_files f
      WHERE f.id = i.training_file_id AND f.lease_token = i.lease_token
        AND f.lease_expires_at > clock_timestamp())
"""

DUE_INTENTS = """
SELECT bucket, object_key, upload_id FROM storage_intents
WHERE lease_token IS NULL AND delete_after <= now()
ORDER BY delete_after
LIMIT $1
"""

DELETE_DUE_INTENTS = """
DELETE FROM storage_intents
WHERE bucket = $1 AND object_key = ANY($2::text[]) AND lease_token IS NULL
"""

# Upload ids a live build still accounts for.
LIVE_UPLOADS = """
SELECT upload_id FROM storage_intents
WHERE bucket = $1 AND upload_id IS NOT NULL AND lease_token IS NOT NULL
"""

# Members read per round trip when a build reads a file's stored members.
STORED_PAGE = 2_000

# One replica at a time runs each background job: a lease in `job_leases` (see its
# migration), taken when absent or expired. No row comes back when another holds it.
SWEEPER_JOB = "sweeper"
REFRESHER_JOB = "refresher"
TAKE_JOB_LEASE = """
INSERT INTO job_leases AS held (job, holder, expires_at)
VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE held.expires_at <= clock_timestamp()
RETURNING holder
"""
RENEW_JOB_LEASE = """
UPDATE job_leases SET expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE job = $1 AND holder = $2 AND expires_at > clock_timestamp()
"""
DROP_JOB_LEASE = "DELETE FROM job_leases WHERE job = $1 AND holder = $2"

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
    # statement_timeout or a cancelled statement on the server side
    asyncpg.exceptions.QueryCanceledError,
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity failures into `Unavailable`; everything else propagates."""
    try:
        yield
    except _UNAVAILABLE_ERRORS as exc:
        raise Unavailable("the database is unavailable; retry later") from exc


async def _init_connection(conn: Connection) -> None:
    if tracing.tracer() is not None:
        # A span per statement; without tracing asyncpg does not even time them.
        conn.add_query_logger(tracing.record_query)
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
    service keeps no session state (no SET, cursor or advisory lock; the refresher removes
    its listener itself), and an open transaction is still rolled back by the pool before
    this runs.
    """


def _file(row: asyncpg.Record) -> TrainingFileRecord:
    values = dict(row.items())
    values["status"] = Status(values["status"])
    values["outputs"] = _outputs(values["outputs"])
    return TrainingFileRecord(**values)


def _selector_arguments(selector: Selector) -> tuple[Any, ...]:
    return (
        list(selector.persona_ids),
        list(selector.emotional_arc_ids),
        list(selector.training_topic_ids),
        selector.created_after,
        selector.created_before,
    )


def _outputs(rows: list[list[Any]]) -> tuple[OutputRecord, ...]:
    return tuple(
        OutputRecord(fmt, Split(split), key, size, records, content_type, sha256)
        for fmt, split, key, size, records, content_type, sha256 in rows
    )


def _version(row: asyncpg.Record) -> VersionRecord:
    values = dict(row.items())
    values["reason"] = VersionReason(values["reason"])
    values["outputs"] = _outputs(values["outputs"])
    return VersionRecord(**values)


# Token counts as one object per distinct value (`_summary`), up to this many values.
_SHARED_COUNTS_MAX = 1 << 16
_shared_counts: dict[int, int] = {}


def _counts(values: Sequence[int]) -> tuple[int, ...]:
    """Token counts whose int objects are shared across members: a count above 256 is an
    object of 28 bytes per pair and member, and a file's counts take a few thousand
    distinct values."""
    if len(_shared_counts) >= _SHARED_COUNTS_MAX:
        return tuple(values)
    return tuple([_shared_counts.setdefault(value, value) for value in values])


def _summary(row: asyncpg.Record) -> ConversationSummary:
    """A member's summary as stored. Remove and Refresh hold every member's at once: the
    keys, emotions and tokenizer name, a handful of values repeated across members, are
    interned, and the token counts shared (one object each, not one per member and
    pair)."""
    stats = row["pair_stats"] or {}
    prompt, completion = stats.get("prompt_tokens"), stats.get("completion_tokens")
    emotions = stats.get("emotions")
    tokenizer = stats.get("tokenizer")
    return ConversationSummary(
        conversation_id=str(row["conversation_id"]),
        training_pair_count=row["training_pair_count"],
        quality_score=row["quality_score"],
        human_reviewed=row["human_reviewed"],
        persona_key=sys.intern(row["persona_key"]),
        emotional_arc_key=sys.intern(row["emotional_arc_key"]),
        training_topic_key=sys.intern(row["training_topic_key"]),
        emotions=tuple(map(sys.intern, emotions)) if emotions is not None else None,
        tokenizer=sys.intern(tokenizer) if tokenizer is not None else None,
        prompt_tokens=_counts(prompt) if prompt is not None else None,
        completion_tokens=_counts(completion) if completion is not None else None,
    )


def _pair_stats(summary: ConversationSummary) -> str | None:
    """A member's `pair_stats` (see the analytics migration), as JSON text."""
    if summary.emotions is None and summary.prompt_tokens is None:
        return None
    stats: dict[str, Any] = {"emotions": summary.emotions}
    if summary.prompt_tokens is not None:
        stats["tokenizer"] = summary.tokenizer
        stats["prompt_tokens"] = summary.prompt_tokens
        stats["completion_tokens"] = summary.completion_tokens
    return orjson.dumps(stats).decode()


def _only(outputs: Sequence[OutputRecord], format_name: str) -> OutputRecord:
    return next(o for o in outputs if o.format == format_name)


class LeaseLost(Exception):
    """The build's lease expired or was taken: it must not change anything any more."""


@dataclass(frozen=True, slots=True)
class DueIntent:
    bucket: str
    object_key: str
    upload_id: str | None


class Database:
    """The service's view of PostgreSQL; wraps the one pool of the process.

    Every call goes through `translate_errors` and honours the command timeout, also
    while waiting for a pool connection: a database that does not answer is
    `Unavailable`, never a hang and never INTERNAL.
    """

    def __init__(
        self, pool: Pool, timeout: float = 30.0, ping_timeout: float | None = None
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.ping_timeout = min(ping_timeout or timeout, timeout)
        # Calls waiting for a pool connection now (a metric, read when scraped).
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        with translate_errors():
            self.waiting += 1
            try:
                conn = await self.pool.acquire(timeout=self.timeout)
            finally:
                self.waiting -= 1
            release_within: float | None = None  # None: the acquire's timeout
            try:
                yield conn
            except TimeoutError:
                # asyncpg asked the server to cancel the statement and, by default, waits
                # up to another whole timeout for it to confirm before giving the connection
                # back. A live server confirms at once; one that stalled never does: drop
                # the connection after a short grace, so the call ends near its timeout.
                release_within = min(_CANCEL_GRACE, self.timeout)
                raise
            finally:
                await self.pool.release(conn, timeout=release_within)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection in a transaction; BEGIN and COMMIT failures are `Unavailable` too."""
        async with self.connection() as conn:
            with translate_errors():
                async with conn.transaction():
                    yield conn

    async def ping(self) -> None:
        """`SELECT 1` within `ping_timeout` (the health probe's): a database that stopped
        answering fails the probe in time. Through the pool with the command timeout, the
        probe waited that long, then for the cancelled statement: half a minute of
        SERVING. A third of the time to get a connection, a third for the query, a sixth
        to give it back (dropped if the server does not confirm the cancel)."""
        budget = self.ping_timeout
        with translate_errors():
            conn = await self.pool.acquire(timeout=budget / 3)
            release_within: float | None = None
            try:
                await conn.fetchval(PING, timeout=budget / 3)
            except TimeoutError:
                release_within = budget / 6
                raise
            finally:
                await self.pool.release(conn, timeout=release_within)

    async def check_conversations(
        self, ids: Sequence[UUID], training_file_id: UUID | None
    ) -> list[CandidateConversation]:
        async with self.connection() as conn:
            rows = await conn.fetch(CHECK_CONVERSATIONS, ids, training_file_id)
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
        keys: Sequence[str],
        created_by: UUID | None,
        lease_token: UUID,
        lease_seconds: float,
        output_formats: Sequence[str],
        split_spec: dict[str, Any] | None,
        drop_duplicates: bool,
        auto_refresh: bool = False,
        pair_filter: dict[str, Any] | None = None,
    ) -> TrainingFileRecord:
        """Take the name, the lease and record the keys to clean up, in one transaction."""
        async with self.transaction() as conn:
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
                    lease_token,
                    lease_seconds,
                    list(output_formats),
                    split_spec,
                    drop_duplicates,
                    auto_refresh,
                    pair_filter,
                )
            except asyncpg.exceptions.UniqueViolationError:
                raise AlreadyExists(
                    "training_file", name, f"a training file named {name!r} already exists"
                ) from None
            await conn.execute(INSERT_INTENTS, bucket, file_id, list(keys), lease_token)
        assert row is not None
        return _file(row)

    async def claim_file(
        self,
        file_id: UUID,
        lease_token: UUID,
        lease_seconds: float,
        bucket: str,
        keys_for: Callable[[TrainingFileRecord], Sequence[str]],
    ) -> TrainingFileRecord | None:
        """Take an active file's lease and record the keys the build will write.

        The keys depend on the file as claimed (its formats may have changed since the
        caller last read it), so `keys_for` is asked inside the transaction.
        None: the file is not active, or another build holds a live lease on it.
        """
        async with self.transaction() as conn:
            row = await conn.fetchrow(CLAIM_FILE, file_id, lease_token, lease_seconds)
            if row is None:
                return None
            record = _file(row)
            await conn.execute(INSERT_INTENTS, bucket, file_id, list(keys_for(record)), lease_token)
        return record

    async def renew_lease(self, file_id: UUID, lease_token: UUID, lease_seconds: float) -> bool:
        """Extend a live lease; False once it has expired or was taken (lost for good)."""
        async with self.connection() as conn:
            status = await conn.execute(RENEW_LEASE, file_id, lease_token, lease_seconds)
        return status == "UPDATE 1"

    async def release_lease(self, file_id: UUID, lease_token: UUID) -> None:
        async with self.connection() as conn:
            await conn.execute(RELEASE_LEASE, file_id, lease_token)

    async def record_upload(self, bucket: str, key: str, upload_id: str, lease_token: UUID) -> None:
        """Note a multipart upload before its first part goes up; `LeaseLost` if too late."""
        async with self.connection() as conn:
            status = await conn.execute(RECORD_UPLOAD, bucket, key, upload_id, lease_token)
        if status != "UPDATE 1":
            raise LeaseLost(key)

    async def condemn(self, bucket: str, file_id: UUID, keys: Sequence[str]) -> None:
        """Hand objects to the sweeper, due now (if deleting them here fails)."""
        async with self.connection() as conn:
            await conn.execute(INSERT_DUE_INTENTS, bucket, file_id, list(keys), _EPOCH)

    async def clear_intents(self, bucket: str, keys: Sequence[str]) -> None:
        async with self.connection() as conn:
            await conn.execute(DELETE_INTENTS, bucket, list(keys))

    async def activate(
        self,
        *,
        file_id: UUID,
        lease_token: UUID,
        from_status: Status,
        bucket: str,
        outputs: Sequence[OutputRecord],
        metrics: FileMetrics,
        vertical: str,
        consultant_profile: bytes,
        staged_count: int,
        first_position: int,
        added_by: UUID | None,
        output_formats: Sequence[str],
        duplicate_pair_count: int,
        untrainable_pair_count: int,
        reason: VersionReason,
        change_count: int,
        retention: int,
        removed: Sequence[UUID] = (),
        built_at: datetime | None = None,
        refreshed: Sequence[ConversationSummary] = (),
        refreshed_digests: Sequence[bytes] = (),
        refreshed_provenance: Provenance | None = None,
        excluded_pair_count: int = 0,
        filtered_out_conversation_count: int = 0,
        analytics: Analytics | None = None,
    ) -> tuple[TrainingFileRecord, list[str], bool]:
        """One transaction: the new version live, members added, the build's intents cleared.

        The new members are the `staged_count` rows the build staged under its lease
        (`stage_members`): moved, in add order, and their staged rows deleted.

        Only while the build holds its lease and the file is still `from_status`:
        otherwise nothing changes and `LeaseLost` is raised (the caller finds out which).
        The new version is recorded with its outputs; earlier versions keep theirs, but
        those beyond the last `retention` are pruned: their objects become the
        sweeper's, kept while a link to them may be valid, returned with whether they
        may be deleted at once.
        """
        json_output = _only(outputs, "v4_json")
        jsonl_output = _only(outputs, "v4_jsonl")
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                ACTIVATE_FILE,
                file_id,
                json_output.object_key,
                jsonl_output.object_key,
                json_output.size_bytes,
                jsonl_output.size_bytes,
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
                lease_token,
                from_status.value,
                list(output_formats),
                duplicate_pair_count,
                untrainable_pair_count,
                excluded_pair_count,
                filtered_out_conversation_count,
            )
            if row is None:
                raise LeaseLost(str(file_id))
            version: int = row["version"]
            await self._claim_intents(conn, bucket, outputs, lease_token, file_id)
            built = built_at or datetime.now(UTC)
            if staged_count:
                moved = await conn.execute(
                    MOVE_STAGED_MEMBERS,
                    file_id,
                    first_position,
                    added_by,
                    lease_token,
                    version,
                    built,
                )
                if moved != f"INSERT 0 {staged_count}":
                    raise ServiceError(
                        f"{moved!r}: not the {staged_count} members the build staged"
                    )
                await conn.execute(DROP_STAGED_MEMBERS, file_id, lease_token)
            if removed:
                taken = await conn.execute(REMOVE_MEMBERS, file_id, list(removed), version)
                if taken != f"UPDATE {len(removed)}":
                    raise LeaseLost(str(file_id))  # not the members the build saw
            if refreshed:
                await self._refresh_members(
                    conn,
                    file_id,
                    version,
                    refreshed,
                    refreshed_digests,
                    refreshed_provenance or Provenance(),
                    built_at or datetime.now(UTC),
                )
            await conn.execute(MARK_STALE_ON_ARRIVAL, file_id, version)
            await self._insert_outputs(conn, file_id, version, outputs)
            await conn.execute(
                INSERT_VERSION,
                file_id,
                version,
                reason.value,
                change_count,
                added_by,
                metrics.conversation_count,
                metrics.total_training_pairs,
                metrics.avg_quality_score,
                metrics.min_quality_score,
                metrics.max_quality_score,
                metrics.human_reviewed_count,
                metrics.scaffolding_distribution(),
                duplicate_pair_count,
                untrainable_pair_count,
                excluded_pair_count,
                filtered_out_conversation_count,
                analytics.to_json() if analytics is not None else None,
            )
            rows = await conn.fetch(PRUNE_VERSIONS, file_id, retention, version)
            replaced = [r["object_key"] for r in rows]
            due = await self._retire(conn, bucket, file_id, replaced)
            record = await conn.fetchrow(GET_FILE, file_id)
        assert record is not None
        return _file(record), replaced, due

    @staticmethod
    async def _refresh_members(
        conn: Connection,
        file_id: UUID,
        version: int,
        summaries: Sequence[ConversationSummary],
        digests: Sequence[bytes],
        provenance: Provenance,
        built_at: datetime,
    ) -> None:
        ids = [UUID(s.conversation_id) for s in summaries]
        old = {
            r["conversation_id"]: r
            for r in await conn.fetch(RETIRE_REFRESHED, file_id, version, ids)
        }
        if len(old) != len(ids):
            raise LeaseLost(str(file_id))  # not the members the build saw
        await conn.execute(
            INSERT_REFRESHED,
            file_id,
            version,
            built_at,
            ids,
            [old[i]["position"] for i in ids],
            [old[i]["added_at"] for i in ids],
            [old[i]["added_by"] for i in ids],
            [s.training_pair_count for s in summaries],
            [s.quality_score for s in summaries],
            [s.human_reviewed for s in summaries],
            [s.persona_key for s in summaries],
            [s.emotional_arc_key for s in summaries],
            [s.training_topic_key for s in summaries],
            list(digests),
            provenance.keys,
            provenance.etags,
            provenance.modified,
            [_pair_stats(s) for s in summaries],
        )

    async def stage_members(
        self, file_id: UUID, lease_token: UUID, first: int, rows: Sequence[StagedMember]
    ) -> None:
        """A build's new members, numbered from `first` in add order, until its commit."""
        async with self.connection() as conn:
            await conn.execute(
                STAGE_MEMBERS,
                file_id,
                lease_token,
                first,
                [UUID(r.summary.conversation_id) for r in rows],
                [r.summary.training_pair_count for r in rows],
                [r.summary.quality_score for r in rows],
                [r.summary.human_reviewed for r in rows],
                [r.summary.persona_key for r in rows],
                [r.summary.emotional_arc_key for r in rows],
                [r.summary.training_topic_key for r in rows],
                [r.digests for r in rows],
                [r.document_key for r in rows],
                [r.document_etag for r in rows],
                [r.document_modified for r in rows],
                [_pair_stats(r.summary) for r in rows],
                [r.pair_ids for r in rows],
            )

    async def staged_duplicates(
        self, file_id: UUID, lease_token: UUID, after_members: bool, first: int
    ) -> tuple[int, list[str]]:
        """See `STAGED_DUPLICATES`."""
        async with self.connection() as conn:
            row = await conn.fetchrow(STAGED_DUPLICATES, file_id, lease_token, after_members, first)
        assert row is not None
        return row["count"], list(row["first"])

    async def drop_staged_members(self, file_id: UUID, lease_token: UUID) -> None:
        """An abandoned build's staged members (what is left, the sweeper deletes)."""
        async with self.connection() as conn:
            await conn.execute(DROP_STAGED_MEMBERS, file_id, lease_token)

    async def with_staleness(self, record: TrainingFileRecord) -> TrainingFileRecord:
        """The file with its stale member count, if it has content (every response about
        one file's current version carries it; lists do not)."""
        if record.status not in (Status.ACTIVE, Status.ARCHIVED):
            return record
        stale = await self.stale_count(record.id)
        return dataclasses.replace(record, stale_conversation_count=stale)

    async def due_refreshes(self, debounce_seconds: float) -> list[UUID]:
        async with self.connection() as conn:
            rows = await conn.fetch(DUE_REFRESHES, debounce_seconds)
        return [row["id"] for row in rows]

    async def next_refresh_check(self, debounce_seconds: float) -> float | None:
        """Seconds until an opted-in file may become due: a back-off ends, or a recent
        change of one of its conversations is older than the debounce; None: neither."""
        async with self.connection() as conn:
            seconds: float | None = await conn.fetchval(NEXT_REFRESH_CHECK, debounce_seconds)
        return seconds

    async def refresh_succeeded(self, file_id: UUID) -> None:
        async with self.connection() as conn:
            await conn.execute(REFRESH_SUCCEEDED, file_id)

    async def refresh_failed(
        self, file_id: UUID, reason: str, retry_seconds: float, max_seconds: float
    ) -> float:
        """Count a failed automatic refresh; the back-off before the next try, in s."""
        async with self.connection() as conn:
            retry_in: float | None = await conn.fetchval(
                REFRESH_FAILED, file_id, reason[:2000], retry_seconds, max_seconds
            )
        return retry_in or 0.0

    async def set_auto_refresh(self, file_id: UUID, enabled: bool) -> TrainingFileRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(SET_AUTO_REFRESH_FILE, file_id, enabled)
        return _file(row) if row is not None else None

    async def stale_count(self, file_id: UUID) -> int:
        async with self.connection() as conn:
            count: int = await conn.fetchval(STALE_COUNT, file_id)
        return count

    async def stale_members(self, file_id: UUID) -> list[CandidateConversation]:
        """The file's stale members in file order, as the conversations table has them now."""
        async with self.connection() as conn:
            rows = await conn.fetch(STALE_MEMBERS, file_id)
        return [CandidateConversation(**dict(row.items())) for row in rows]

    async def record_export(
        self,
        *,
        file_id: UUID,
        lease_token: UUID,
        bucket: str,
        outputs: Sequence[OutputRecord],
        output_formats: Sequence[str],
    ) -> tuple[TrainingFileRecord, list[str], bool]:
        """One transaction: an export's outputs join the current version, replacing the
        same ones (the card, rewritten to list them)."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(RECORD_EXPORT, file_id, lease_token, list(output_formats))
            if row is None:
                raise LeaseLost(str(file_id))
            version: int = row["version"]
            await self._claim_intents(conn, bucket, outputs, lease_token, file_id)
            rows = await conn.fetch(
                DROP_OUTPUTS,
                file_id,
                version,
                [o.format for o in outputs],
                [o.split.value for o in outputs],
            )
            replaced = [r["object_key"] for r in rows]
            due = await self._retire(conn, bucket, file_id, replaced)
            await self._insert_outputs(conn, file_id, version, outputs)
            record = await conn.fetchrow(GET_FILE, file_id)
        assert record is not None
        return _file(record), replaced, due

    @staticmethod
    async def _claim_intents(
        conn: Connection,
        bucket: str,
        outputs: Sequence[OutputRecord],
        lease_token: UUID,
        file_id: UUID,
    ) -> None:
        keys = [o.object_key for o in outputs]
        claimed = await conn.execute(CLAIM_BUILD_INTENTS, bucket, keys, lease_token)
        if claimed != f"DELETE {len(keys)}":
            raise LeaseLost(str(file_id))  # rolls the transaction back

    @staticmethod
    async def _retire(conn: Connection, bucket: str, file_id: UUID, keys: list[str]) -> bool:
        if not keys:
            return True
        flags = await conn.fetch(RETIRE_OBJECTS, bucket, file_id, keys)
        return all(flag["due"] for flag in flags)

    @staticmethod
    async def _insert_outputs(
        conn: Connection, file_id: UUID, version: int, outputs: Sequence[OutputRecord]
    ) -> None:
        await conn.execute(
            INSERT_OUTPUTS,
            file_id,
            version,
            [o.format for o in outputs],
            [o.split.value for o in outputs],
            [o.object_key for o in outputs],
            [o.size_bytes for o in outputs],
            [o.record_count for o in outputs],
            [o.content_type for o in outputs],
            [o.sha256 for o in outputs],
        )

    async def mark_failed(self, file_id: UUID, lease_token: UUID, reason: str) -> None:
        async with self.connection() as conn:
            await conn.execute(MARK_FAILED, file_id, reason[:2000], lease_token)

    async def get_file(
        self, file_id: UUID, *, with_staleness: bool = False
    ) -> TrainingFileRecord | None:
        """The file; `with_staleness`, with its stale count as `with_staleness` gives it."""
        async with self.connection() as conn:
            row = await conn.fetchrow(
                GET_FILE_WITH_STALENESS if with_staleness else GET_FILE, file_id
            )
        return _file(row) if row is not None else None

    async def note_link(
        self, file_id: UUID, valid_until: datetime, owner: UUID | None
    ) -> TrainingFileRecord | None:
        """The file to link to, with `valid_until` remembered; None: not downloadable."""
        async with self.connection() as conn:
            row = await conn.fetchrow(NOTE_LINK, file_id, valid_until, owner)
        return _file(row) if row is not None else None

    async def stored_conversations(self, file_id: UUID) -> list[StoredConversation]:
        """The file's conversations in add order, with what a rebuild needs of each; read a
        page at a time, so that the rows (their decoded JSON) are never all held at once
        beside what is built from them."""
        stored: list[StoredConversation] = []
        async with self.connection() as conn, conn.transaction():
            cursor = await conn.cursor(FILE_SUMMARIES, file_id)
            while rows := await cursor.fetch(STORED_PAGE):
                stored.extend(
                    StoredConversation(
                        _summary(row),
                        row["pair_digests"],
                        row["persona_id"],
                        row["training_topic_id"],
                    )
                    for row in rows
                )
        return stored

    async def archive(self, file_id: UUID) -> TrainingFileRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(ARCHIVE_FILE, file_id)
        return _file(row) if row is not None else None

    async def list_file_versions(
        self,
        *,
        status: Status | None,
        include_archived: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
        owner: UUID | None,
    ) -> list[tuple[UUID, int, datetime]]:
        """`list_files`' page as (id, row version, created_at) only."""
        async with self.connection() as conn:
            rows = await conn.fetch(
                LIST_FILE_VERSIONS,
                status.value if status else None,
                include_archived,
                after[0] if after else None,
                after[1] if after else None,
                limit,
                owner,
            )
        return [(row["id"], row["row_version"], row["created_at"]) for row in rows]

    async def files_by_id(
        self, ids: Sequence[UUID], with_outputs: bool
    ) -> dict[UUID, TrainingFileRecord]:
        """The rows of `ids` that exist, by id."""
        async with self.connection() as conn:
            rows = await conn.fetch(FILES_BY_ID if with_outputs else FILES_BY_ID_BASIC, ids)
        return {row["id"]: _file(row) for row in rows}

    async def list_file_conversations(
        self, file_id: UUID, after_position: int, limit: int, version: int | None = None
    ) -> list[FileConversation]:
        """A page of members in file order; of `version` (None: the current one)."""
        async with self.connection() as conn:
            rows = await conn.fetch(
                LIST_FILE_CONVERSATIONS, file_id, after_position, limit, version
            )
        return [FileConversation(**dict(row.items())) for row in rows]

    async def version_analytics(
        self, file_id: UUID, version: int
    ) -> tuple[bool, Analytics | None, list[ConversationSummary]]:
        """Whether the version exists, its stored analytics, and, when it has none (built
        before they were kept), its members' summaries to compute them from."""
        async with self.connection() as conn:
            row = await conn.fetchrow(GET_VERSION_ANALYTICS, file_id, version)
            if row is None:
                return False, None, []
            if row["analytics"] is not None:
                return True, Analytics.from_json(row["analytics"]), []
            rows = await conn.fetch(VERSION_SUMMARIES, file_id, version)
        return True, None, [_summary(r) for r in rows]

    async def get_version(self, file_id: UUID, version: int) -> VersionRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(GET_VERSION, file_id, version)
        return _version(row) if row is not None else None

    async def list_versions(
        self, file_id: UUID, before: int | None, limit: int
    ) -> list[VersionRecord]:
        """A page of a file's versions, newest first, older than `before` (None: all)."""
        async with self.connection() as conn:
            rows = await conn.fetch(LIST_VERSIONS, file_id, before, limit)
        return [_version(row) for row in rows]

    async def list_eligible(
        self,
        *,
        exclude_file: UUID | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
        owner: UUID | None,
        selector: Selector | None = None,
    ) -> list[EligibleConversation]:
        async with self.connection() as conn:
            rows = await conn.fetch(
                LIST_ELIGIBLE,
                exclude_file,
                after[0] if after else None,
                after[1] if after else None,
                limit,
                owner,
                *_selector_arguments(selector or Selector()),
            )
        return [EligibleConversation(**dict(row.items())) for row in rows]

    async def select_conversations(
        self,
        selector: Selector,
        owner: UUID | None,
        exclude_file: UUID | None,
        limit: int,
        page_size: int = 1_000,
    ) -> AsyncGenerator[list[CandidateConversation], None]:
        """What `selector` chooses (of `owner`, not in `exclude_file`), oldest first, at
        most `limit`: one query, read with a cursor in one transaction (one snapshot),
        and given out `page_size` at a time, so that no list of them all is made."""
        async with self.transaction() as conn:
            cursor = await conn.cursor(
                SELECT_CONVERSATIONS,
                exclude_file,
                limit,
                owner,
                *_selector_arguments(selector),
            )
            while rows := await cursor.fetch(page_size):
                yield [CandidateConversation(**dict(row.items())) for row in rows]

    # ------------------------------------------------------------- the sweeper's

    async def take_job_lease(self, job: str, holder: UUID, seconds: float) -> bool:
        """Whether `holder` now holds `job`'s lease (it was free, or had expired)."""
        async with self.connection() as conn:
            return await conn.fetchval(TAKE_JOB_LEASE, job, holder, seconds) is not None

    async def renew_job_lease(self, job: str, holder: UUID, seconds: float) -> bool:
        """Extend a job lease still held; False once it expired or was taken over."""
        async with self.connection() as conn:
            return bool(await conn.execute(RENEW_JOB_LEASE, job, holder, seconds) == "UPDATE 1")

    async def drop_job_lease(self, job: str, holder: UUID) -> bool:
        """Give a job lease back; False if `holder` no longer held it."""
        async with self.connection() as conn:
            return bool(await conn.execute(DROP_JOB_LEASE, job, holder) == "DELETE 1")

    @contextlib.asynccontextmanager
    async def listening(self, channel: str, wake: Callable[[], None]) -> AsyncIterator[None]:
        """Call `wake` on every notification on `channel` while the block runs, on a
        connection of its own (held for as long)."""
        async with self.pool.acquire() as conn:

            def notified(*_: object) -> None:
                wake()

            await conn.add_listener(channel, notified)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, notified)

    async def expire_builds(self, conn: Connection) -> list[UUID]:
        """Fail Creates and free Adds whose lease expired; their intents become due and
        their staged members go."""
        with translate_errors():
            async with conn.transaction():
                rows = await conn.fetch(FAIL_EXPIRED_BUILDS)
                await conn.execute(RELEASE_EXPIRED_LEASES)
                await conn.execute(CONDEMN_ORPHAN_INTENTS)
                await conn.execute(DROP_ORPHAN_STAGED_MEMBERS)
        return [row["id"] for row in rows]

    async def due_intents(self, conn: Connection, limit: int) -> list[DueIntent]:
        with translate_errors():
            rows = await conn.fetch(DUE_INTENTS, limit)
        return [DueIntent(row["bucket"], row["object_key"], row["upload_id"]) for row in rows]

    async def forget_due(self, conn: Connection, bucket: str, keys: Sequence[str]) -> None:
        with translate_errors():
            await conn.execute(DELETE_DUE_INTENTS, bucket, list(keys))

    async def live_uploads(self, conn: Connection, bucket: str) -> set[str]:
        with translate_errors():
            rows = await conn.fetch(LIVE_UPLOADS, bucket)
        return {row["upload_id"] for row in rows}


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
        yield Database(
            pool,
            settings.database_command_timeout_seconds,
            ping_timeout=settings.health_check_timeout_seconds,
        )
    finally:
        await pool.close()
