-- Pipeline definitions, versioned. Each save of a changed definition adds a version; a version
-- is never changed (a run pins the version it started with), only deleted with its pipeline.

CREATE SCHEMA IF NOT EXISTS pipeline;

CREATE TABLE pipeline.pipelines (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id        bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    -- The current version's name and description, kept here for lists and the unique name.
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description     text        NOT NULL DEFAULT '',
    current_version integer     NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);

CREATE TABLE pipeline.versions (
    pipeline_id bigint      NOT NULL REFERENCES pipeline.pipelines (id) ON DELETE CASCADE,
    version     integer     NOT NULL CHECK (version >= 1),
    definition  jsonb       NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    PRIMARY KEY (pipeline_id, version)
);

-- The current version exists (checked at commit: a pipeline and its first version are written
-- by one statement).
ALTER TABLE pipeline.pipelines
    ADD CONSTRAINT pipelines_current_version_fkey
    FOREIGN KEY (id, current_version) REFERENCES pipeline.versions (pipeline_id, version)
    DEFERRABLE INITIALLY DEFERRED;

-- Versions are written once: an UPDATE is refused (ON DELETE SET NULL of `created_by` aside).
CREATE FUNCTION pipeline.versions_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.pipeline_id <> OLD.pipeline_id OR NEW.version <> OLD.version
       OR NEW.definition IS DISTINCT FROM OLD.definition OR NEW.created_at <> OLD.created_at
       OR NEW.created_by IS NOT NULL AND NEW.created_by IS DISTINCT FROM OLD.created_by THEN
        RAISE EXCEPTION 'pipeline version % of pipeline % cannot be changed', OLD.version,
            OLD.pipeline_id USING ERRCODE = 'integrity_constraint_violation',
            HINT = 'save the pipeline again: that adds a version';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER versions_are_kept BEFORE UPDATE ON pipeline.versions
    FOR EACH ROW EXECUTE FUNCTION pipeline.versions_are_kept();
