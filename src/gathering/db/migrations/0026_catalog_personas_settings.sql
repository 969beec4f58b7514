-- The catalog's personas library and run-time settings.
-- Personas: the stored ones (the built-ins live in the code, read-only, and are listed with
-- them; their names are reserved by the code). Settings: values an admin stored for declared
-- settings (gathering.catalog.settings), read at use on every instance; an environment
-- variable still wins over a stored value. A secret setting is stored as a digest only.

CREATE SCHEMA IF NOT EXISTS catalog;

CREATE TABLE catalog.personas (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description  text        NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    -- role, traits, communication_style, specializations, base_prompt, language
    persona      jsonb       NOT NULL CHECK (jsonb_typeof(persona) = 'object'),
    owner_id     bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX personas_of_owner ON catalog.personas (owner_id);

CREATE TABLE catalog.settings (
    name         text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    value        jsonb       NOT NULL,
    updated_by   bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
