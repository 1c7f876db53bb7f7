-- Filters: a file's pair filter (fixed by its Create, applied by every later build that
-- reads documents), and what each build's filters left out of the documents it read.

-- migrate:up
ALTER TABLE training_files
    ADD COLUMN pair_filter jsonb,
    ADD COLUMN excluded_pair_count integer NOT NULL DEFAULT 0
        CHECK (excluded_pair_count >= 0),
    ADD COLUMN filtered_out_conversation_count integer NOT NULL DEFAULT 0
        CHECK (filtered_out_conversation_count >= 0);
ALTER TABLE training_file_versions
    ADD COLUMN excluded_pair_count integer NOT NULL DEFAULT 0
        CHECK (excluded_pair_count >= 0),
    ADD COLUMN filtered_out_conversation_count integer NOT NULL DEFAULT 0
        CHECK (filtered_out_conversation_count >= 0);

-- migrate:down
ALTER TABLE training_file_versions
    DROP COLUMN filtered_out_conversation_count,
    DROP COLUMN excluded_pair_count;
ALTER TABLE training_files
    DROP COLUMN filtered_out_conversation_count,
    DROP COLUMN excluded_pair_count,
    DROP COLUMN pair_filter;
