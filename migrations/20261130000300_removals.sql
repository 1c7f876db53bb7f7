-- Removing conversations from a file, as a new version: a member row says which version
-- removed it, so every version's members stay readable. A version's members are those
-- added at or before it and not removed at or before it. A removed conversation may be
-- added again later (a new row, at the end of the file).

-- migrate:up
ALTER TABLE training_file_conversations
    ADD COLUMN removed_in_version integer,
    ADD CHECK (removed_in_version IS NULL OR removed_in_version > added_in_version);

-- The file-and-conversation unique constraint becomes one over current members (its
-- name was chosen by PostgreSQL, hence the lookup).
DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO STRICT name FROM pg_constraint
    WHERE conrelid = 'training_file_conversations'::regclass
      AND pg_get_constraintdef(oid) = 'UNIQUE (training_file_id, conversation_id)';
    EXECUTE format('ALTER TABLE training_file_conversations DROP CONSTRAINT %I', name);
END;
$$;
CREATE UNIQUE INDEX training_file_conversations_current_member
    ON training_file_conversations (training_file_id, conversation_id)
    WHERE removed_in_version IS NULL;

ALTER TABLE training_file_versions DROP CONSTRAINT training_file_versions_reason_check;
ALTER TABLE training_file_versions
    ADD CONSTRAINT training_file_versions_reason_check
    CHECK (reason IN ('created', 'added', 'removed', 'recorded'));

-- migrate:down
DELETE FROM training_file_conversations WHERE removed_in_version IS NOT NULL;
ALTER TABLE training_file_versions DROP CONSTRAINT training_file_versions_reason_check;
ALTER TABLE training_file_versions
    ADD CONSTRAINT training_file_versions_reason_check
    CHECK (reason IN ('created', 'added', 'recorded'));
DROP INDEX training_file_conversations_current_member;
ALTER TABLE training_file_conversations
    ADD UNIQUE (training_file_id, conversation_id);
ALTER TABLE training_file_conversations DROP COLUMN removed_in_version;
