-- Immutable versions: every Create and Add that succeeds records a version, with its
-- counts and its outputs, and the outputs of earlier versions are kept (up to the
-- retention setting) instead of being replaced.
--
-- Members carry the version that added them: a version's members are those added at or
-- before it (an Add only appends).

-- migrate:up
CREATE TABLE training_file_versions (
    training_file_id        uuid NOT NULL REFERENCES training_files (id) ON DELETE CASCADE,
    version                 integer NOT NULL CHECK (version >= 1),
    -- created / added: the build that made it; recorded: it existed before versions were.
    reason                  text NOT NULL CHECK (reason IN ('created', 'added', 'recorded')),
    change_count            integer NOT NULL CHECK (change_count >= 0),
    created_by              uuid,
    created_at              timestamptz NOT NULL DEFAULT now(),
    conversation_count      integer NOT NULL CHECK (conversation_count >= 0),
    total_training_pairs    integer NOT NULL CHECK (total_training_pairs >= 0),
    avg_quality_score       numeric(3, 2),
    min_quality_score       numeric(3, 2),
    max_quality_score       numeric(3, 2),
    human_reviewed_count    integer NOT NULL CHECK (human_reviewed_count >= 0),
    scaffolding_distribution jsonb NOT NULL,
    duplicate_pair_count    integer NOT NULL DEFAULT 0,
    untrainable_pair_count  integer NOT NULL DEFAULT 0,
    -- Set when retention deleted (or handed to the sweeper) the version's objects.
    pruned_at               timestamptz,
    PRIMARY KEY (training_file_id, version)
);

ALTER TABLE training_file_outputs ADD COLUMN version integer;
UPDATE training_file_outputs o SET version = f.version
FROM training_files f WHERE f.id = o.training_file_id;
ALTER TABLE training_file_outputs ALTER COLUMN version SET NOT NULL;
ALTER TABLE training_file_outputs DROP CONSTRAINT training_file_outputs_pkey;
ALTER TABLE training_file_outputs ADD PRIMARY KEY (training_file_id, version, format, split);

ALTER TABLE training_file_conversations ADD COLUMN added_in_version integer;
UPDATE training_file_conversations m SET added_in_version = greatest(f.version, 1)
FROM training_files f WHERE f.id = m.training_file_id;
ALTER TABLE training_file_conversations ALTER COLUMN added_in_version SET NOT NULL;

-- Files with content get their current version, history unknown.
INSERT INTO training_file_versions
    (training_file_id, version, reason, change_count, created_by, created_at,
     conversation_count, total_training_pairs, avg_quality_score, min_quality_score,
     max_quality_score, human_reviewed_count, scaffolding_distribution,
     duplicate_pair_count, untrainable_pair_count)
SELECT id, version, 'recorded', 0, created_by, updated_at, conversation_count,
       total_training_pairs, avg_quality_score, min_quality_score, max_quality_score,
       human_reviewed_count, scaffolding_distribution, duplicate_pair_count,
       untrainable_pair_count
FROM training_files WHERE status IN ('active', 'archived') AND version >= 1;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'ALTER TABLE training_file_versions ENABLE ROW LEVEL SECURITY';
        EXECUTE $p$
            CREATE POLICY training_file_versions_owner_all ON training_file_versions
                FOR ALL
                USING (EXISTS (SELECT 1 FROM training_files f
                               WHERE f.id = training_file_id AND f.created_by = auth.uid()))
                WITH CHECK (EXISTS (SELECT 1 FROM training_files f
                                    WHERE f.id = training_file_id
                                      AND f.created_by = auth.uid()))
        $p$;
    END IF;
END;
$$;

-- migrate:down
ALTER TABLE training_file_conversations DROP COLUMN added_in_version;
DELETE FROM training_file_outputs o USING training_files f
WHERE f.id = o.training_file_id AND o.version <> f.version;
ALTER TABLE training_file_outputs DROP CONSTRAINT training_file_outputs_pkey;
ALTER TABLE training_file_outputs ADD PRIMARY KEY (training_file_id, format, split);
ALTER TABLE training_file_outputs DROP COLUMN version;
DROP TABLE training_file_versions;
