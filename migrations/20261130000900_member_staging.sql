-- Members staged while a build runs (README, "Performance").
--
-- A Create or an Add writes each new member's row here as its document is fetched, in
-- batches, keyed by the build's lease (`lease_token`) and numbered in add order
-- (`ordinal`), instead of keeping every member's summary, digests and provenance in the
-- server's memory until the commit. The commit moves them into
-- `training_file_conversations` with one INSERT ... SELECT in the transaction that makes
-- the version live, and deletes them; a failed build's cleanup deletes them, and the
-- sweeper deletes those of every build whose lease is gone (a crashed server).
-- No foreign key to `conversations`: the commit's insert checks it. `pair_ids` (the
-- pairs' ids, one a line) is staged only: a build that does not drop duplicates counts
-- them here, from the staged digests, and names the first ones by these ids.

-- migrate:up
CREATE TABLE staged_members (
    training_file_id     uuid NOT NULL REFERENCES training_files (id) ON DELETE CASCADE,
    lease_token          uuid NOT NULL,
    ordinal              integer NOT NULL CHECK (ordinal >= 0),
    conversation_id      uuid NOT NULL,
    training_pair_count  integer NOT NULL,
    quality_score        double precision NOT NULL,
    human_reviewed       boolean NOT NULL,
    persona_key          text NOT NULL,
    emotional_arc_key    text NOT NULL,
    training_topic_key   text NOT NULL,
    pair_digests         bytea,
    document_key         text,
    document_etag        text,
    document_modified_at timestamptz,
    pair_stats           jsonb,
    pair_ids             text NOT NULL DEFAULT '',
    PRIMARY KEY (training_file_id, lease_token, ordinal)
);

-- migrate:down
DROP TABLE staged_members;
