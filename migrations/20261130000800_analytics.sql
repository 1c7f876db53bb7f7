-- Analytics and token statistics (docs/promises.md, "Analytics").
--
-- A member keeps what the analytics of every version it belongs to need, so that an Add,
-- a Remove or a Refresh recomputes them without fetching a document: per pair, its
-- primary emotion, and per trainable pair its prompt and completion tokens, with the
-- tokenizer that counted them (`pair_stats`, NULL for members added before). A version
-- keeps the analytics computed when it was built (`analytics`, NULL for versions built
-- before: GetTrainingFileAnalytics then computes what their members' rows allow).

-- migrate:up
ALTER TABLE training_file_conversations ADD COLUMN pair_stats jsonb;
ALTER TABLE training_file_versions ADD COLUMN analytics jsonb;

-- migrate:down
ALTER TABLE training_file_versions DROP COLUMN analytics;
ALTER TABLE training_file_conversations DROP COLUMN pair_stats;
