-- Staleness kept on the member rows: the trigger marks the current members of a changed
-- conversation stale at once, so a file's stale count is an index lookup (a Get counts
-- it), not a join of every member with `conversations` and `conversation_changes`.

-- migrate:up
ALTER TABLE training_file_conversations ADD COLUMN stale_since timestamptz;
UPDATE training_file_conversations m SET stale_since = ch.changed_at
FROM conversation_changes ch
WHERE ch.conversation_id = m.conversation_id AND m.removed_in_version IS NULL
  AND ch.changed_at > m.built_at;
CREATE INDEX training_file_conversations_stale_idx
    ON training_file_conversations (training_file_id)
    WHERE stale_since IS NOT NULL AND removed_in_version IS NULL;
CREATE INDEX conversation_changes_changed_at_idx ON conversation_changes (changed_at);

CREATE OR REPLACE FUNCTION trainingfiles_conversation_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_changes (conversation_id, changed_at)
    VALUES (NEW.conversation_id, clock_timestamp())
    ON CONFLICT (conversation_id) DO UPDATE SET changed_at = EXCLUDED.changed_at;
    UPDATE training_file_conversations SET stale_since = clock_timestamp()
    WHERE conversation_id = NEW.conversation_id AND removed_in_version IS NULL
      AND stale_since IS NULL;
    PERFORM pg_notify('trainingfiles_conversation_changed', NEW.conversation_id::text);
    RETURN NULL;
END;
$$;

-- migrate:down
CREATE OR REPLACE FUNCTION trainingfiles_conversation_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_changes (conversation_id, changed_at)
    VALUES (NEW.conversation_id, clock_timestamp())
    ON CONFLICT (conversation_id) DO UPDATE SET changed_at = EXCLUDED.changed_at;
    PERFORM pg_notify('trainingfiles_conversation_changed', NEW.conversation_id::text);
    RETURN NULL;
END;
$$;
DROP INDEX conversation_changes_changed_at_idx;
DROP INDEX training_file_conversations_stale_idx;
ALTER TABLE training_file_conversations DROP COLUMN stale_since;
