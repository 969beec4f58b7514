-- The catalog, part one (issue 18): the model providers admins configured (a name, a kind, an
-- address, and a key kept encrypted with a key derived from the server's secret), and admins'
-- overrides of the shipped model table (context window, max output, prices).

CREATE SCHEMA IF NOT EXISTS catalog;

CREATE TABLE catalog.providers (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    kind            text        NOT NULL
                    CHECK (kind IN ('anthropic', 'openai', 'openai-compatible', 'ollama', 'local')),
    base_url        text        CHECK (base_url ~ '^https?://[^\s]+$' AND length(base_url) <= 2048),
    -- A Fernet token (AES-128-CBC with HMAC-SHA256) of the key; the plaintext is never stored.
    key_ciphertext  bytea,
    -- All the API ever shows of the key ("sk-...abcd"), written with it.
    key_mask        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((key_ciphertext IS NULL) = (key_mask IS NULL))
);
-- An agent naming a kind uses the first provider of that kind (by id).
CREATE INDEX providers_by_kind ON catalog.providers (kind, id);

-- An admin's values for one model, over the shipped table (`gathering.llm.pricing`,
-- `gathering.llm.context_windows`). `provider` is a provider kind or a catalog provider's name;
-- a null column keeps the shipped value.
CREATE TABLE catalog.model_overrides (
    provider                  text             NOT NULL
                              CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    model                     text             NOT NULL
                              CHECK (length(model) BETWEEN 1 AND 200),
    context_window            integer          CHECK (context_window > 0),
    max_output                integer          CHECK (max_output > 0),
    input_per_million         double precision CHECK (input_per_million BETWEEN 0 AND 1000000),
    output_per_million        double precision CHECK (output_per_million BETWEEN 0 AND 1000000),
    cached_input_per_million  double precision
                              CHECK (cached_input_per_million BETWEEN 0 AND 1000000),
    updated_by                bigint           REFERENCES auth.users (id) ON DELETE SET NULL,
    updated_at                timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model),
    -- Input and output prices come as a pair; a cached price only with them.
    CHECK ((input_per_million IS NULL) = (output_per_million IS NULL)),
    CHECK (cached_input_per_million IS NULL OR input_per_million IS NOT NULL),
    CHECK (num_nonnulls(context_window, max_output, input_per_million) > 0)
);
