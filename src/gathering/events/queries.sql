-- The statements of `gathering.events` (see gathering/db/named_queries.py).

-- name: write_events --
-- Write the events of the JSON array $1, in its order (so their cursors follow it); an event
-- whose id is in the outbox already is skipped rather than aborting the caller's transaction.
INSERT INTO events.outbox (id, type, subject, data, occurred_at, source, correlation_id)
SELECT r.id, r.type, r.subject, coalesce(r.data, '{}'::jsonb), r.occurred_at, r.source,
       r.correlation_id
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
    id uuid, type text, subject text, data jsonb, occurred_at timestamptz, source text,
    correlation_id text)) WITH ORDINALITY AS r
ORDER BY r.ordinality
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: events_since --
-- At most $2 events after cursor $1, in cursor order: about one of the subjects $3 and of a
-- type matching one of the regular expressions $4 (either NULL: any).
SELECT cursor, id, type, subject, data, occurred_at, source, correlation_id
FROM events.outbox
WHERE cursor > $1
  AND ($3::text[] IS NULL OR subject = ANY($3::text[]))
  AND ($4::text[] IS NULL OR type ~ ANY($4::text[]))
ORDER BY cursor
LIMIT $2

-- name: latest_events --
-- At most $2 events before cursor $1 (NULL: the newest), newest first, about one of the
-- subjects $3 (NULL: any).
SELECT cursor, id, type, subject, data, occurred_at, source, correlation_id
FROM events.outbox
WHERE ($1::bigint IS NULL OR cursor < $1)
  AND ($3::text[] IS NULL OR subject = ANY($3::text[]))
ORDER BY cursor DESC
LIMIT $2

-- name: latest_cursor --
SELECT coalesce(max(cursor), 0) AS cursor FROM events.outbox

-- name: prune_events --
-- Delete at most $2 rows recorded more than $1 ago, oldest first; how many.
WITH doomed AS (
    SELECT cursor FROM events.outbox WHERE recorded_at < now() - $1::interval
    ORDER BY cursor LIMIT $2
), deleted AS (
    DELETE FROM events.outbox AS o USING doomed WHERE o.cursor = doomed.cursor RETURNING 1
)
SELECT count(*) AS n FROM deleted
