-- A file's row version (docs/promises.md, "Reads"): a number that changes with every
-- change of the file's row or of its outputs, so that a list can tell a row it has
-- already read and converted from a changed one without reading it again (reads.py).
-- Every UPDATE of the row moves it on (lease renewals too: only a row being built moves
-- while nothing a caller sees changes); an output inserted, changed or deleted touches
-- its file's row, which moves it on without touching `updated_at`.

-- migrate:up
ALTER TABLE training_files ADD COLUMN row_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION training_files_next_row_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_version := OLD.row_version + 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER training_files_next_row_version
    BEFORE UPDATE ON training_files
    FOR EACH ROW EXECUTE FUNCTION training_files_next_row_version();

CREATE FUNCTION training_file_outputs_touch_file() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE training_files SET row_version = row_version
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.training_file_id
                    ELSE NEW.training_file_id END;
    IF TG_OP = 'UPDATE' AND OLD.training_file_id <> NEW.training_file_id THEN
        UPDATE training_files SET row_version = row_version WHERE id = OLD.training_file_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER training_file_outputs_touch_file
    AFTER INSERT OR UPDATE OR DELETE ON training_file_outputs
    FOR EACH ROW EXECUTE FUNCTION training_file_outputs_touch_file();

-- migrate:down
DROP TRIGGER training_file_outputs_touch_file ON training_file_outputs;
DROP FUNCTION training_file_outputs_touch_file();
DROP TRIGGER training_files_next_row_version ON training_files;
DROP FUNCTION training_files_next_row_version();
ALTER TABLE training_files DROP COLUMN row_version;
