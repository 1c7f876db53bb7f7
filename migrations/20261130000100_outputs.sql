-- Outputs as rows: every stored object of a training file's version, in any format.
--
-- A version's outputs are its two v4.0 objects (which `training_files.json_file_path`
-- and `jsonl_file_path` keep naming, as the table always had them), the trainer formats per
-- split, and its dataset card. The build settings that every later version of the file
-- keeps (formats, split, duplicate handling) live on the file.

-- migrate:up
CREATE TABLE training_file_outputs (
    training_file_id  uuid NOT NULL REFERENCES training_files (id) ON DELETE CASCADE,
    format            text NOT NULL CHECK (format ~ '^[a-z0-9_]{1,40}$'),
    split             text NOT NULL CHECK (split IN ('all', 'train', 'validation')),
    object_key        text NOT NULL,
    size_bytes        bigint NOT NULL CHECK (size_bytes >= 0),
    record_count      bigint NOT NULL CHECK (record_count >= 0),
    content_type      text NOT NULL,
    -- NULL only for outputs stored before checksums were kept (backfilled below).
    sha256            text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (training_file_id, format, split)
);

ALTER TABLE training_files
    -- The trainer formats every version of the file has (the v4 ones always).
    ADD COLUMN output_formats text[] NOT NULL DEFAULT '{}',
    -- The train/validation split of the trainer formats; NULL: none.
    ADD COLUMN split_spec jsonb,
    ADD COLUMN drop_duplicates boolean NOT NULL DEFAULT false,
    ADD COLUMN duplicate_pair_count integer NOT NULL DEFAULT 0
        CHECK (duplicate_pair_count >= 0),
    ADD COLUMN untrainable_pair_count integer NOT NULL DEFAULT 0
        CHECK (untrainable_pair_count >= 0);

-- Each conversation's pair digests (16 bytes per pair, in turn order), so that an Add
-- counts duplicates without reading the stored file. NULL for conversations added
-- before duplicates were counted.
ALTER TABLE training_file_conversations ADD COLUMN pair_digests bytea;

-- Files with content get their two v4.0 outputs as rows.
INSERT INTO training_file_outputs
    (training_file_id, format, split, object_key, size_bytes, record_count, content_type)
SELECT id, 'v4_json', 'all', json_file_path, json_file_size, total_training_pairs,
       'application/json'
FROM training_files WHERE status IN ('active', 'archived') AND json_file_path IS NOT NULL
UNION ALL
SELECT id, 'v4_jsonl', 'all', jsonl_file_path, jsonl_file_size, total_training_pairs,
       'application/x-ndjson'
FROM training_files WHERE status IN ('active', 'archived') AND jsonl_file_path IS NOT NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'ALTER TABLE training_file_outputs ENABLE ROW LEVEL SECURITY';
        EXECUTE $p$
            CREATE POLICY training_file_outputs_owner_all ON training_file_outputs
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
ALTER TABLE training_file_conversations DROP COLUMN pair_digests;
ALTER TABLE training_files
    DROP COLUMN untrainable_pair_count,
    DROP COLUMN duplicate_pair_count,
    DROP COLUMN drop_duplicates,
    DROP COLUMN split_spec,
    DROP COLUMN output_formats;
DROP TABLE training_file_outputs;
