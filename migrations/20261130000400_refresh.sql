-- Re-generation: each member remembers the enriched document it was built from, and a
-- trigger on `conversations` records every change of a conversation's enrichment, so a
-- member whose conversation changed after its build is known to be stale.
--
-- A Refresh replaces stale members by new rows at the same position (the old row says
-- which version removed it), so a position is unique among current members only.

-- migrate:up
ALTER TABLE training_file_conversations
    -- The enriched document as fetched: its key, ETag and Last-Modified time (when the
    -- enrichment wrote it). NULL for members built before they were kept.
    ADD COLUMN document_key text,
    ADD COLUMN document_etag text,
    ADD COLUMN document_modified_at timestamptz,
    -- When the build that fetched the document began: a change of the conversation after
    -- it makes the member stale.
    ADD COLUMN built_at timestamptz;
UPDATE training_file_conversations SET built_at = added_at;
ALTER TABLE training_file_conversations ALTER COLUMN built_at SET NOT NULL;
ALTER TABLE training_file_conversations ALTER COLUMN built_at SET DEFAULT now();

DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO STRICT name FROM pg_constraint
    WHERE conrelid = 'training_file_conversations'::regclass
      AND pg_get_constraintdef(oid) IN ('UNIQUE (training_file_id, "position")',
                                         'UNIQUE (training_file_id, position)');
    EXECUTE format('ALTER TABLE training_file_conversations DROP CONSTRAINT %I', name);
END;
$$;
CREATE UNIQUE INDEX training_file_conversations_current_position
    ON training_file_conversations (training_file_id, position)
    WHERE removed_in_version IS NULL;
CREATE INDEX training_file_conversations_file_position
    ON training_file_conversations (training_file_id, position);

ALTER TABLE training_file_versions DROP CONSTRAINT training_file_versions_reason_check;
ALTER TABLE training_file_versions
    ADD CONSTRAINT training_file_versions_reason_check
    CHECK (reason IN ('created', 'added', 'removed', 'refreshed', 'recorded'));

-- The latest change of each conversation's enrichment (key or status), kept by a trigger:
-- a durable record (a restart loses nothing), and a notification to wake whoever waits.
CREATE TABLE conversation_changes (
    conversation_id  uuid PRIMARY KEY,
    changed_at       timestamptz NOT NULL
);

CREATE FUNCTION trainingfiles_conversation_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_changes (conversation_id, changed_at)
    VALUES (NEW.conversation_id, clock_timestamp())
    ON CONFLICT (conversation_id) DO UPDATE SET changed_at = EXCLUDED.changed_at;
    PERFORM pg_notify('trainingfiles_conversation_changed', NEW.conversation_id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER trainingfiles_conversation_changed
    AFTER UPDATE OF enriched_file_path, enrichment_status ON conversations
    FOR EACH ROW
    WHEN (OLD.enriched_file_path IS DISTINCT FROM NEW.enriched_file_path
          OR OLD.enrichment_status IS DISTINCT FROM NEW.enrichment_status)
    EXECUTE FUNCTION trainingfiles_conversation_changed();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        -- Service-side only, like storage_intents: no API role reads or writes it.
        EXECUTE 'ALTER TABLE conversation_changes ENABLE ROW LEVEL SECURITY';
    END IF;
END;
$$;

-- migrate:down
DROP TRIGGER trainingfiles_conversation_changed ON conversations;
DROP FUNCTION trainingfiles_conversation_changed();
DROP TABLE conversation_changes;
ALTER TABLE training_file_versions DROP CONSTRAINT training_file_versions_reason_check;
ALTER TABLE training_file_versions
    ADD CONSTRAINT training_file_versions_reason_check
    CHECK (reason IN ('created', 'added', 'removed', 'recorded'));
DELETE FROM training_file_conversations WHERE removed_in_version IS NOT NULL;
DROP INDEX training_file_conversations_file_position;
DROP INDEX training_file_conversations_current_position;
ALTER TABLE training_file_conversations ADD UNIQUE (training_file_id, position);
ALTER TABLE training_file_conversations
    DROP COLUMN built_at,
    DROP COLUMN document_modified_at,
    DROP COLUMN document_etag,
    DROP COLUMN document_key;
