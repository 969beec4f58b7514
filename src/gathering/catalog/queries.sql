-- The catalog's named queries. Providers and models first, then personas, then settings.

-- providers and models (migration 0025) ------------------------------------------------------

-- name: catalog_providers --
-- Every configured provider (never its key), in the order they were added.
SELECT id, name, kind, base_url, key_mask, created_at, updated_at
FROM catalog.providers ORDER BY id

-- name: catalog_provider --
SELECT id, name, kind, base_url, key_mask, created_at, updated_at
FROM catalog.providers WHERE id = $1

-- name: catalog_provider_by_name --
SELECT id, name, kind, base_url, key_mask, created_at, updated_at
FROM catalog.providers WHERE name = $1

-- name: catalog_provider_with_key --
-- One provider with its encrypted key (to call it).
SELECT id, name, kind, base_url, key_ciphertext, key_mask, created_at, updated_at
FROM catalog.providers WHERE id = $1

-- name: catalog_provider_to_change --
-- One provider with its encrypted key, locked until the change commits.
SELECT id, name, kind, base_url, key_ciphertext, key_mask, created_at, updated_at
FROM catalog.providers WHERE id = $1
FOR NO KEY UPDATE

-- name: insert_catalog_provider --
-- A new provider; no row when the name is taken.
INSERT INTO catalog.providers (name, kind, base_url, key_ciphertext, key_mask)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING
RETURNING id, name, kind, base_url, key_mask, created_at, updated_at

-- name: update_catalog_provider --
-- Replace provider $1's fields; no row when another provider has the name $2.
UPDATE catalog.providers
SET name = $2, kind = $3, base_url = $4, key_ciphertext = $5, key_mask = $6, updated_at = now()
WHERE id = $1
  AND NOT EXISTS (SELECT 1 FROM catalog.providers other WHERE other.name = $2 AND other.id <> $1)
RETURNING id, name, kind, base_url, key_mask, created_at, updated_at

-- name: delete_catalog_provider --
DELETE FROM catalog.providers WHERE id = $1
RETURNING id, name, kind, base_url, key_mask, created_at, updated_at

-- name: catalog_provider_for_agent --
-- The provider an agent whose provider is $1 uses: the one of that name if its kind is one of
-- $2 (those that provider talks to), else the first of kind $1.
SELECT id, name, kind, base_url, key_ciphertext, key_mask, created_at, updated_at
FROM catalog.providers WHERE (name = $1 AND kind = ANY ($2::text[])) OR kind = $1
ORDER BY name = $1 DESC, id
LIMIT 1

-- name: catalog_provider_kind --
SELECT kind FROM catalog.providers WHERE name = $1

-- name: model_overrides --
-- Admins' model values, optionally of one provider ($1).
SELECT * FROM catalog.model_overrides
WHERE ($1::text IS NULL OR provider = $1)
ORDER BY provider, model

-- name: model_overrides_matching --
-- The overrides of any of the providers $1 for any of the model names $2.
SELECT * FROM catalog.model_overrides WHERE provider = ANY ($1::text[]) AND model = ANY ($2::text[])

-- name: upsert_model_override --
-- Set (or replace) the admin's values for model $2 of provider $1.
INSERT INTO catalog.model_overrides
    (provider, model, context_window, max_output, input_per_million, output_per_million,
     cached_input_per_million, updated_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (provider, model) DO UPDATE
SET context_window = EXCLUDED.context_window,
    max_output = EXCLUDED.max_output,
    input_per_million = EXCLUDED.input_per_million,
    output_per_million = EXCLUDED.output_per_million,
    cached_input_per_million = EXCLUDED.cached_input_per_million,
    updated_by = EXCLUDED.updated_by,
    updated_at = now()
RETURNING *

-- name: delete_model_override --
-- Back to the shipped values; no row when there was no override.
DELETE FROM catalog.model_overrides WHERE provider = $1 AND model = $2 RETURNING *

-- end of providers and models --

-- personas and settings (migration 0026) -----------------------------------------------------

-- name: personas --
-- The stored personas of the library, by name ($1 at most).
SELECT * FROM catalog.personas ORDER BY name LIMIT $1

-- name: persona_by_name --
SELECT * FROM catalog.personas WHERE name = $1

-- name: insert_persona --
-- A new persona; no row when the name is taken.
INSERT INTO catalog.personas (name, description, persona, owner_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING *

-- name: update_persona --
-- Change persona $1 (its name stays: it is what the library knows it by).
UPDATE catalog.personas SET description = $2, persona = $3, updated_at = now()
WHERE id = $1
RETURNING *

-- name: delete_persona --
DELETE FROM catalog.personas WHERE id = $1

-- name: stored_settings --
-- Every stored setting value (environment variables still win over them).
SELECT name, value, updated_by, updated_at FROM catalog.settings ORDER BY name

-- name: stored_setting --
SELECT name, value, updated_by, updated_at FROM catalog.settings WHERE name = $1

-- name: store_setting --
-- Set (or replace) the stored value of setting $1.
INSERT INTO catalog.settings (name, value, updated_by) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()
RETURNING name, value, updated_by, updated_at

-- name: delete_setting --
-- Back to the default; no row when nothing was stored.
DELETE FROM catalog.settings WHERE name = $1 RETURNING name

-- end of personas and settings --
