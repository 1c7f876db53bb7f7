-- Automatic refresh: a file that opts in is refreshed by the service when conversations
-- it holds change (the trigger of the refresh migration records each change durably and
-- notifies). What is due is derived from the state, like the sweeper's work: a file with
-- `auto_refresh`, stale members, no change among them in the last few seconds (a burst
-- of changes makes one refresh), and no back-off pending after a failed attempt.

-- migrate:up
ALTER TABLE training_files
    ADD COLUMN auto_refresh boolean NOT NULL DEFAULT false,
    -- Failed automatic refreshes in a row, the last one's reason, and when to try again.
    ADD COLUMN refresh_attempts integer NOT NULL DEFAULT 0 CHECK (refresh_attempts >= 0),
    ADD COLUMN refresh_error text,
    ADD COLUMN refresh_after timestamptz;

CREATE INDEX training_files_auto_refresh_idx
    ON training_files (id) WHERE auto_refresh AND status = 'active';

-- migrate:down
DROP INDEX training_files_auto_refresh_idx;
ALTER TABLE training_files
    DROP COLUMN refresh_after,
    DROP COLUMN refresh_error,
    DROP COLUMN refresh_attempts,
    DROP COLUMN auto_refresh;
