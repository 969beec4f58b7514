-- Pipeline definitions and their versions (migration 0013). A pipeline row comes with its
-- current version's definition as `definition`.

-- name: create_pipeline --
-- A pipeline of owner $1 named $2 (description $3) with version 1: definition $4 by $5.
WITH p AS (
    INSERT INTO pipeline.pipelines (owner_id, name, description) VALUES ($1, $2, $3)
    RETURNING *
), v AS (
    INSERT INTO pipeline.versions (pipeline_id, version, definition, created_by)
    SELECT p.id, 1, $4::jsonb, $5::bigint FROM p
    RETURNING pipeline_id, definition
)
SELECT p.*, v.definition FROM p JOIN v ON v.pipeline_id = p.id

-- name: pipeline_by_id --
SELECT p.*, v.definition
FROM pipeline.pipelines p
JOIN pipeline.versions v ON v.pipeline_id = p.id AND v.version = p.current_version
WHERE p.id = $1

-- name: pipeline_by_name --
SELECT p.*, v.definition
FROM pipeline.pipelines p
JOIN pipeline.versions v ON v.pipeline_id = p.id AND v.version = p.current_version
WHERE p.owner_id = $1 AND p.name = $2

-- name: lock_pipeline --
-- The pipeline $1 and its current definition, locked until the transaction ends.
SELECT p.*, v.definition
FROM pipeline.pipelines p
JOIN pipeline.versions v ON v.pipeline_id = p.id AND v.version = p.current_version
WHERE p.id = $1
FOR UPDATE OF p

-- name: list_pipelines --
-- The pipelines of owner $1 (NULL: every owner's), by name; $2 rows from row $3.
SELECT p.*, v.definition
FROM pipeline.pipelines p
JOIN pipeline.versions v ON v.pipeline_id = p.id AND v.version = p.current_version
WHERE ($1::bigint IS NULL OR p.owner_id = $1)
ORDER BY p.name, p.id
LIMIT $2 OFFSET $3

-- name: name_taken --
-- Whether owner $1 has a pipeline named $2 other than $3.
SELECT EXISTS (
    SELECT 1 FROM pipeline.pipelines WHERE owner_id = $1 AND name = $2 AND id <> $3::bigint
)

-- name: add_version --
-- Version $2 of pipeline $1 (definition $3 by $4) becomes its current one, named $5 ($6).
WITH v AS (
    INSERT INTO pipeline.versions (pipeline_id, version, definition, created_by)
    VALUES ($1, $2, $3::jsonb, $4::bigint)
    RETURNING pipeline_id, version, definition
), p AS (
    UPDATE pipeline.pipelines p
    SET current_version = v.version, name = $5, description = $6, updated_at = now()
    FROM v WHERE p.id = v.pipeline_id
    RETURNING p.*
)
SELECT p.*, v.definition FROM p JOIN v ON v.pipeline_id = p.id

-- name: delete_pipeline --
DELETE FROM pipeline.pipelines WHERE id = $1 RETURNING id

-- name: list_versions --
-- Every version of pipeline $1, newest first (without the definitions: their names).
SELECT pipeline_id, version, definition ->> 'name' AS name, created_at, created_by
FROM pipeline.versions WHERE pipeline_id = $1
ORDER BY version DESC

-- name: pipeline_version --
SELECT pipeline_id, version, definition, created_at, created_by
FROM pipeline.versions WHERE pipeline_id = $1 AND version = $2
