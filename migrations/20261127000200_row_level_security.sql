-- Row-level security for Supabase deployments: owners read and write their own files.
--
-- Applied everywhere, but it only acts where an `auth` schema with `auth.uid()` exists
-- (a Supabase database). On plain PostgreSQL it is a no-op, so the same migration files
-- serve both. The service itself connects with a role that bypasses RLS and enforces the
-- same rules in its queries; these policies protect the tables from every other client
-- (for example Supabase's REST API used with a user's token).

-- migrate:up
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        RETURN;
    END IF;

    EXECUTE 'ALTER TABLE training_files ENABLE ROW LEVEL SECURITY';
    EXECUTE 'ALTER TABLE training_file_conversations ENABLE ROW LEVEL SECURITY';
    -- No policy at all: `storage_intents` names objects that start-up repair deletes, so
    -- no API role (authenticated, anon) may read or write a row of it.
    EXECUTE 'ALTER TABLE storage_intents ENABLE ROW LEVEL SECURITY';

    EXECUTE $p$
        CREATE POLICY training_files_owner_all ON training_files
            FOR ALL
            USING (created_by = auth.uid())
            WITH CHECK (created_by = auth.uid())
    $p$;
    EXECUTE $p$
        CREATE POLICY training_file_conversations_owner_all ON training_file_conversations
            FOR ALL
            USING (EXISTS (SELECT 1 FROM training_files f
                           WHERE f.id = training_file_id AND f.created_by = auth.uid()))
            WITH CHECK (EXISTS (SELECT 1 FROM training_files f
                                WHERE f.id = training_file_id AND f.created_by = auth.uid()))
    $p$;
END;
$$;

-- migrate:down
ALTER TABLE storage_intents DISABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS training_file_conversations_owner_all ON training_file_conversations;
DROP POLICY IF EXISTS training_files_owner_all ON training_files;
ALTER TABLE training_file_conversations DISABLE ROW LEVEL SECURITY;
ALTER TABLE training_files DISABLE ROW LEVEL SECURITY;
