-- One replica at a time runs each background job (the sweeper, the refresher).
--
-- A job's turn is a lease here, like a build's lease on its file: taken when the row is
-- absent or expired, renewed every third of its length while the job runs, deleted when
-- it ends. It replaces a session-level advisory lock, which a replica frozen in the
-- middle of a sweep (SIGSTOP, a paused VM) held for as long as it stayed frozen, so that
-- no replica swept at all; and which a pooler in transaction mode cannot keep, since a
-- session there is not the client's. A lease runs out by itself.
--
-- Service-side only, like `staged_members`, which is also closed to the API roles here.

-- migrate:up
CREATE TABLE job_leases (
    job        text PRIMARY KEY,
    holder     uuid NOT NULL,
    expires_at timestamptz NOT NULL
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'ALTER TABLE job_leases ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE staged_members ENABLE ROW LEVEL SECURITY';
    END IF;
END;
$$;

-- migrate:down
ALTER TABLE staged_members DISABLE ROW LEVEL SECURITY;
DROP TABLE job_leases;
