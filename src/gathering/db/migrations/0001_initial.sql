-- The first schema: the agent registry, and pgvector where the server has it.

CREATE SCHEMA IF NOT EXISTS agent;

CREATE TABLE agent.agents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    provider    text        NOT NULL DEFAULT 'anthropic',
    model       text        NOT NULL,
    config      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agents_name_idx ON agent.agents (name);

-- pgvector is optional: features that need it check for it and say so when it is missing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'pgvector is available but this role may not create it';
        END;
    END IF;
END
$$;
