-- Development-only copy of the pipeline's `conversations` table (owned by the wider pipeline; the service only reads it).
--
-- In production this table belongs to the wider pipeline and already exists; this folder
-- is applied only by `make run` (embedded default), the tests and the benchmarks, with its
-- own migrations table (`schema_migrations_dev`), and never against a real deployment.

-- migrate:up
CREATE TABLE IF NOT EXISTS conversations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id     uuid NOT NULL UNIQUE,
    file_path           text,
    raw_response_path   text,
    enriched_file_path  text,
    enrichment_status   text NOT NULL DEFAULT 'not_started'
        CHECK (enrichment_status IN ('not_started', 'enrichment_in_progress', 'completed')),
    persona_id          uuid,
    emotional_arc_id    uuid,
    training_topic_id   uuid,
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS conversations_eligible_idx
    ON conversations (created_at DESC, conversation_id DESC)
    WHERE enrichment_status = 'completed' AND enriched_file_path IS NOT NULL;

-- migrate:down
DROP TABLE IF EXISTS conversations;
