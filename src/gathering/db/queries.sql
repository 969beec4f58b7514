-- The statements of `gathering.db` (see named_queries.py). Statements that name databases
-- (CREATE, ALTER, DROP DATABASE) are composed with psycopg.sql where they run.

-- advisory locks ----------------------------------------------------------------------------

-- name: try_advisory_lock --
SELECT pg_try_advisory_lock($1) AS ok

-- name: advisory_lock --
SELECT pg_advisory_lock($1)

-- name: advisory_unlock --
SELECT pg_advisory_unlock($1)

-- name: advisory_xact_lock --
SELECT pg_advisory_xact_lock($1)

-- name: try_advisory_xact_lock --
SELECT pg_try_advisory_xact_lock($1)

-- name: lock_wait_settings --
-- Bound a lock wait by lock_timeout ($1 ms, 0 for none), exempt it from statement_timeout.
SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', '0', false)

-- name: ping --
SELECT 1

-- databases and migrations ------------------------------------------------------------------

-- name: database_exists --
SELECT 1 FROM pg_database WHERE datname = $1

-- name: is_template --
SELECT datistemplate FROM pg_database WHERE datname = $1

-- name: databases_like --
SELECT datname FROM pg_database WHERE datname LIKE $1

-- name: has_vector --
SELECT 1 FROM pg_extension WHERE extname = 'vector'

-- name: migrations_table_exists --
SELECT to_regclass('public.schema_migrations') IS NOT NULL AS ok

-- name: applied_migrations --
SELECT version, checksum FROM public.schema_migrations

-- name: record_migration --
INSERT INTO public.schema_migrations (version, name, checksum, duration_ms)
VALUES ($1, $2, $3, $4)

-- name: server_versions --
-- The server's version and pgvector's: available to install, and installed.
SELECT current_setting('server_version') AS version,
       (SELECT default_version FROM pg_available_extensions WHERE name = 'vector') AS available,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed
