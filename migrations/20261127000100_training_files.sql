-- The tables this service owns.
--
-- `training_files` holds one row per training file; `training_file_conversations` the
-- conversations in each file, in add order, with a small per-conversation summary so that
-- adding conversations never has to fetch the documents already in the file again.
-- Both apply to plain PostgreSQL; row-level security is added by a later migration only
-- where a Supabase `auth` schema exists.

-- migrate:up
CREATE TABLE training_files (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                      text NOT NULL
        CHECK (name ~ '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$'),
    description               text CHECK (char_length(description) <= 2000),
    json_file_path            text,
    jsonl_file_path           text,
    storage_bucket            text NOT NULL DEFAULT 'training-files',
    conversation_count        integer NOT NULL DEFAULT 0 CHECK (conversation_count >= 0),
    total_training_pairs      integer NOT NULL DEFAULT 0 CHECK (total_training_pairs >= 0),
    json_file_size            bigint NOT NULL DEFAULT 0 CHECK (json_file_size >= 0),
    jsonl_file_size           bigint NOT NULL DEFAULT 0 CHECK (jsonl_file_size >= 0),
    avg_quality_score         numeric(3, 2) CHECK (avg_quality_score >= 0),
    min_quality_score         numeric(3, 2) CHECK (min_quality_score >= 0),
    max_quality_score         numeric(3, 2) CHECK (max_quality_score >= 0),
    human_reviewed_count      integer NOT NULL DEFAULT 0 CHECK (human_reviewed_count >= 0),
    scaffolding_distribution  jsonb NOT NULL
        DEFAULT '{"personas": {}, "emotional_arcs": {}, "training_topics": {}}'::jsonb,
    status                    text NOT NULL DEFAULT 'processing'
        CHECK (status IN ('processing', 'active', 'archived', 'failed')),
    -- The first conversation's `vertical` and `consultant_profile`, as written into the
    -- JSON document; kept so that adding conversations never refetches old documents.
    -- `json`, not `jsonb`: the text is kept verbatim (jsonb reorders keys), so a rebuilt
    -- header is byte-for-byte the one a Create writes.
    vertical                  text,
    consultant_profile        json,
    -- Why a file failed; set together with status 'failed'.
    error_message             text,
    -- Bumped on every content change (create, each add); guards concurrent adds.
    version                   integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_by                uuid,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    -- A file that can be downloaded always points at both of its objects.
    CHECK (status NOT IN ('active', 'archived')
           OR (json_file_path IS NOT NULL AND jsonl_file_path IS NOT NULL)),
    CHECK (human_reviewed_count <= conversation_count)
);

-- Names are unique among files that have not failed: a failed attempt frees its name.
CREATE UNIQUE INDEX training_files_live_name_key
    ON training_files (name) WHERE status <> 'failed';
-- List newest first (keyset on created_at, id), by status, by owner.
CREATE INDEX training_files_newest_idx ON training_files (created_at DESC, id DESC);
CREATE INDEX training_files_status_newest_idx
    ON training_files (status, created_at DESC, id DESC);
CREATE INDEX training_files_owner_newest_idx
    ON training_files (created_by, created_at DESC, id DESC);
-- Start-up repair looks for rows stuck in 'processing'.
CREATE INDEX training_files_processing_idx
    ON training_files (updated_at) WHERE status = 'processing';

CREATE FUNCTION training_files_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER training_files_touch_updated_at
    BEFORE UPDATE ON training_files
    FOR EACH ROW EXECUTE FUNCTION training_files_touch_updated_at();

CREATE TABLE training_file_conversations (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    training_file_id     uuid NOT NULL REFERENCES training_files (id) ON DELETE CASCADE,
    conversation_id      uuid NOT NULL REFERENCES conversations (conversation_id),
    -- Add order within the file; the aggregate lists conversations in this order.
    position             integer NOT NULL CHECK (position >= 0),
    added_at             timestamptz NOT NULL DEFAULT now(),
    added_by             uuid,
    -- Per-conversation summary, so metrics can be recomputed without the documents.
    training_pair_count  integer NOT NULL CHECK (training_pair_count > 0),
    quality_score        double precision NOT NULL,
    human_reviewed       boolean NOT NULL,
    persona_key          text NOT NULL,
    emotional_arc_key    text NOT NULL,
    training_topic_key   text NOT NULL,
    UNIQUE (training_file_id, conversation_id),
    UNIQUE (training_file_id, position)
);

CREATE INDEX training_file_conversations_conversation_idx
    ON training_file_conversations (conversation_id);

-- Objects that may exist in storage without a committed row pointing at them: written
-- before an upload starts, removed in the transaction that makes the object live, or
-- after a replaced or failed object is deleted. Start-up repair deletes the objects of
-- intents older than the configured age. No foreign key: an Add holds a lock on its
-- file row while it records intents from another connection.
CREATE TABLE storage_intents (
    bucket            text NOT NULL,
    object_key        text NOT NULL,
    training_file_id  uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, object_key)
);

CREATE INDEX storage_intents_created_idx ON storage_intents (created_at);

-- migrate:down
DROP TABLE storage_intents;
DROP TABLE training_file_conversations;
DROP TABLE training_files;
DROP FUNCTION training_files_touch_updated_at();
