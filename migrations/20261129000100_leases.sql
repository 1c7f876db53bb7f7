-- Crash safety: builds hold leases, objects wait for the sweeper, links keep their promise.
--
-- A Create or Add in progress holds a lease on its file (`lease_token`, renewed until
-- `lease_expires_at`); a lease that has expired can never be renewed again, so the
-- sweeper of any replica may fail the build and remove what it stored. Every object a
-- build may leave behind has a `storage_intents` row written before its first byte goes
-- up, with the multipart upload id once there is one. Replaced objects are kept until
-- `delete_after`: the latest expiry of a download link handed out for the file.

-- migrate:up
ALTER TABLE training_files
    ADD COLUMN lease_token       uuid,
    ADD COLUMN lease_expires_at  timestamptz,
    -- The latest expiry of any download link handed out for this file.
    ADD COLUMN links_valid_until timestamptz,
    ADD CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL));

-- The sweeper looks for expired leases.
CREATE INDEX training_files_lease_idx
    ON training_files (lease_expires_at) WHERE lease_token IS NOT NULL;
DROP INDEX training_files_processing_idx;

-- Renewing a lease or handing out a link is not a change of the file: `updated_at`
-- follows only the columns a caller sees change.
DROP TRIGGER training_files_touch_updated_at ON training_files;
CREATE TRIGGER training_files_touch_updated_at
    BEFORE UPDATE OF name, description, json_file_path, jsonl_file_path, storage_bucket,
        conversation_count, total_training_pairs, json_file_size, jsonl_file_size,
        avg_quality_score, min_quality_score, max_quality_score, human_reviewed_count,
        scaffolding_distribution, status, vertical, consultant_profile, error_message,
        version, created_by
    ON training_files
    FOR EACH ROW EXECUTE FUNCTION training_files_touch_updated_at();

-- An intent belongs either to a running build (`lease_token` set: it lives as long as the
-- build's lease) or to the sweeper (`lease_token` NULL: delete at `delete_after`).
ALTER TABLE storage_intents
    ADD COLUMN lease_token  uuid,
    ADD COLUMN upload_id    text,
    ADD COLUMN delete_after timestamptz NOT NULL DEFAULT now();

CREATE INDEX storage_intents_due_idx
    ON storage_intents (delete_after) WHERE lease_token IS NULL;
CREATE INDEX storage_intents_lease_idx
    ON storage_intents (training_file_id, lease_token) WHERE lease_token IS NOT NULL;

-- migrate:down
DROP INDEX storage_intents_lease_idx;
DROP INDEX storage_intents_due_idx;
ALTER TABLE storage_intents
    DROP COLUMN delete_after,
    DROP COLUMN upload_id,
    DROP COLUMN lease_token;
DROP TRIGGER training_files_touch_updated_at ON training_files;
CREATE TRIGGER training_files_touch_updated_at
    BEFORE UPDATE ON training_files
    FOR EACH ROW EXECUTE FUNCTION training_files_touch_updated_at();
CREATE INDEX training_files_processing_idx
    ON training_files (updated_at) WHERE status = 'processing';
DROP INDEX training_files_lease_idx;
ALTER TABLE training_files
    DROP COLUMN links_valid_until,
    DROP COLUMN lease_expires_at,
    DROP COLUMN lease_token;
