-- The statements of `gathering.usage` (see gathering/db/named_queries.py).

-- ledger --------------------------------------------------------------------------------------

-- name: insert_ledger_row --
-- One event's row; in the same statement, the budget reservations of call $16 (when not NULL)
-- are deleted: the reservation is replaced by what the call really cost, with no gap. $17:
-- the tokens are estimated; $18: the call's id (NULL: $16), written once (no row, and NULL,
-- when that call has its row already). The row is added to the current period's spending of
-- every budget it is charged to.
WITH r AS (
    DELETE FROM usage.reservations WHERE $16::uuid IS NOT NULL AND call_id = $16::uuid
), row AS (
    INSERT INTO usage.ledger (kind, user_id, agent_id, circle_id, pipeline_id, pipeline_run_id,
                              task_id, provider, model, input_tokens, output_tokens, calls,
                              cost_usd, latency_ms, outcome, estimated, call_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17,
            coalesce($18::uuid, $16::uuid))
    ON CONFLICT (call_id) WHERE call_id IS NOT NULL DO NOTHING
    RETURNING id, cost_usd, input_tokens + output_tokens AS tokens
), spent AS (
    INSERT INTO usage.budget_spending AS s (budget_id, period_start, spent_usd, spent_tokens)
    SELECT b.id,
           CASE b.period WHEN 'day' THEN date_trunc('day', now(), 'UTC')
                         WHEN 'month' THEN date_trunc('month', now(), 'UTC')
                         ELSE '-infinity'::timestamptz END,
           coalesce(row.cost_usd, 0), row.tokens
    FROM row
    JOIN usage.budgets b
      ON (b.scope = 'user' AND b.target_id = $2) OR (b.scope = 'agent' AND b.target_id = $3)
      OR (b.scope = 'circle' AND b.target_id = $4) OR (b.scope = 'pipeline' AND b.target_id = $5)
      OR (b.scope = 'task' AND b.target_id = $7)
    ON CONFLICT (budget_id, period_start) DO UPDATE
    SET spent_usd = s.spent_usd + excluded.spent_usd,
        spent_tokens = s.spent_tokens + excluded.spent_tokens
)
SELECT id FROM row

-- name: usage_report --
-- Sums per period ($1: day, week or month, in UTC) and group ($2: user, agent, circle, model,
-- provider or kind), between $3 and $4 (each NULL: open), with filters user $5, agent $6,
-- circle $7, provider $8, model $9, kind $10 (each NULL: any); at most $11 rows.
SELECT date_trunc($1::text, at, 'UTC') AS period_start,
       CASE $2::text
           WHEN 'user' THEN user_id::text
           WHEN 'agent' THEN agent_id::text
           WHEN 'circle' THEN circle_id::text
           WHEN 'model' THEN model
           WHEN 'provider' THEN provider
           ELSE kind
       END AS key,
       sum(calls)::bigint AS calls,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       coalesce(sum(cost_usd), 0)::double precision AS cost_usd,
       count(*) FILTER (WHERE kind = 'model' AND cost_usd IS NULL)::bigint AS unpriced_calls,
       count(*) FILTER (WHERE outcome <> 'ok')::bigint AS failed_calls
FROM usage.ledger
WHERE at >= coalesce($3::timestamptz, '-infinity')
  AND at < coalesce($4::timestamptz, 'infinity')
  AND ($5::bigint IS NULL OR user_id = $5)
  AND ($6::bigint IS NULL OR agent_id = $6)
  AND ($7::bigint IS NULL OR circle_id = $7)
  AND ($8::text IS NULL OR provider = $8)
  AND ($9::text IS NULL OR model = $9)
  AND ($10::text IS NULL OR kind = $10)
GROUP BY 1, 2
ORDER BY 1, 2 NULLS LAST
LIMIT $11

-- name: usage_totals --
-- Model calls, tokens and cost since $1 (of user $2; NULL: everyone's).
SELECT count(*) FILTER (WHERE kind = 'model')::bigint AS model_calls,
       coalesce(sum(input_tokens) FILTER (WHERE kind = 'model'), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens) FILTER (WHERE kind = 'model'), 0)::bigint AS output_tokens,
       coalesce(sum(input_tokens) FILTER (WHERE kind = 'embedding'), 0)::bigint
           AS embedding_tokens,
       coalesce(sum(calls) FILTER (WHERE kind = 'tool'), 0)::bigint AS tool_calls,
       coalesce(sum(cost_usd), 0)::double precision AS cost_usd
FROM usage.ledger
WHERE at >= $1 AND ($2::bigint IS NULL OR user_id = $2)

-- name: usage_top --
-- The $3 agents (or models, $4 = 'model') that cost most since $1 (of user $2; NULL: all).
SELECT CASE WHEN $4::text = 'model' THEN model ELSE agent_id::text END AS key,
       min(provider) AS provider,
       sum(calls)::bigint AS calls,
       sum(input_tokens + output_tokens)::bigint AS tokens,
       coalesce(sum(cost_usd), 0)::double precision AS cost_usd
FROM usage.ledger
WHERE kind = 'model' AND at >= $1 AND ($2::bigint IS NULL OR user_id = $2)
  AND ($4::text = 'model' OR agent_id IS NOT NULL)
GROUP BY 1
ORDER BY cost_usd DESC, tokens DESC, key
LIMIT $3

-- name: fold_spending --
-- Fold at most $1 queued ledger rows (the oldest) into the spending rollup, taking them off
-- the queue in the same statement (a new group's `seq` follows its first row); how many.
-- Run under the fold's advisory lock: one fold at a time.
WITH taken AS (
    DELETE FROM usage.spending_queue
    WHERE ledger_id IN (
        SELECT ledger_id FROM usage.spending_queue ORDER BY ledger_id LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING ledger_id
), sums AS (
    SELECT l.kind, l.provider, l.model, min(l.id) AS first_id,
           sum(l.calls) AS calls, sum(l.input_tokens) AS input_tokens,
           sum(l.output_tokens) AS output_tokens, coalesce(sum(l.cost_usd), 0) AS cost_usd
    FROM taken
    -- Each row by its key (OFFSET 0 keeps the lookup apart): never a scan of the ledger.
    CROSS JOIN LATERAL (SELECT * FROM usage.ledger WHERE id = taken.ledger_id OFFSET 0) l
    GROUP BY l.kind, l.provider, l.model
), added AS (
    INSERT INTO usage.spending_rollup AS r
           (kind, provider, model, calls, input_tokens, output_tokens, cost_usd)
    SELECT kind, provider, model, calls, input_tokens, output_tokens, cost_usd
    FROM sums
    ORDER BY first_id
    ON CONFLICT (kind, provider, model) DO UPDATE
    SET calls = r.calls + excluded.calls,
        input_tokens = r.input_tokens + excluded.input_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        cost_usd = r.cost_usd + excluded.cost_usd
    RETURNING 1
)
SELECT count(*) FROM taken

-- name: spending_totals --
-- Everything the ledger holds, per kind, provider and model (the rollup plus the rows still
-- queued), for the Prometheus exposition: the first $1 groups folded are their own series,
-- every later one is summed per kind under provider and model 'other', for good (a series
-- never moves between the two: each only grows). A group's rows wait for its first fold.
WITH groups AS (
    SELECT r.kind, r.provider, r.model, r.calls, r.input_tokens, r.output_tokens, r.cost_usd,
           row_number() OVER (ORDER BY r.seq) <= $1 AS own
    FROM usage.spending_rollup r
), rows AS (
    SELECT kind, provider, model, own, calls, input_tokens, output_tokens, cost_usd
    FROM groups
    UNION ALL
    SELECT g.kind, g.provider, g.model, g.own, l.calls, l.input_tokens, l.output_tokens,
           coalesce(l.cost_usd, 0)
    FROM usage.spending_queue q
    CROSS JOIN LATERAL (SELECT * FROM usage.ledger WHERE id = q.ledger_id OFFSET 0) l
    JOIN groups g ON (g.kind, g.provider, g.model) = (l.kind, l.provider, l.model)
)
SELECT kind,
       CASE WHEN own THEN provider ELSE 'other' END AS provider,
       CASE WHEN own THEN model ELSE 'other' END AS model,
       sum(calls)::bigint AS calls,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(cost_usd)::double precision AS cost_usd
FROM rows
GROUP BY 1, 2, 3
ORDER BY cost_usd DESC, kind, provider, model

-- budgets -------------------------------------------------------------------------------------

-- name: upsert_budget --
-- Set the budget of scope $1, target $2 and period $3 (a new one, or the limits of the one
-- there); `inserted` tells which.
INSERT INTO usage.budgets (scope, target_id, period, limit_usd, limit_tokens, warn_percent,
                           created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (scope, target_id, period) DO UPDATE
SET limit_usd = excluded.limit_usd, limit_tokens = excluded.limit_tokens,
    warn_percent = excluded.warn_percent, updated_at = now()
RETURNING *, (xmax = 0) AS inserted

-- name: seed_budget_spending --
-- Budget $1's spending in its current period, summed from the ledger (when it is created; the
-- ledger's writers are held off meanwhile, see `set_budget`).
INSERT INTO usage.budget_spending (budget_id, period_start, spent_usd, spent_tokens)
SELECT b.id, p.period_start, coalesce(sum(l.cost_usd), 0),
       coalesce(sum(l.input_tokens + l.output_tokens), 0)
FROM usage.budgets b
CROSS JOIN LATERAL (
    SELECT CASE b.period WHEN 'day' THEN date_trunc('day', now(), 'UTC')
                         WHEN 'month' THEN date_trunc('month', now(), 'UTC')
                         ELSE '-infinity'::timestamptz END AS period_start
) p
LEFT JOIN usage.ledger l
  ON l.at >= p.period_start
 -- spelled out (not one CASE) so that each scope's (id, at) index can be used
 AND ((b.scope = 'user' AND l.user_id = b.target_id)
      OR (b.scope = 'agent' AND l.agent_id = b.target_id)
      OR (b.scope = 'circle' AND l.circle_id = b.target_id)
      OR (b.scope = 'pipeline' AND l.pipeline_id = b.target_id)
      OR (b.scope = 'task' AND l.task_id = b.target_id))
WHERE b.id = $1
GROUP BY b.id, p.period_start
ON CONFLICT (budget_id, period_start) DO NOTHING

-- name: delete_budget --
DELETE FROM usage.budgets WHERE id = $1 RETURNING *

-- name: lock_budgets --
-- The budgets a call charged to user $1, agent $2, circle $3, pipeline $4 and task $5 counts
-- against, locked in id order (so that two reservations never wait for each other in a cycle).
SELECT id FROM usage.budgets
WHERE (scope = 'user' AND target_id = $1) OR (scope = 'agent' AND target_id = $2)
   OR (scope = 'circle' AND target_id = $3) OR (scope = 'pipeline' AND target_id = $4)
   OR (scope = 'task' AND target_id = $5)
ORDER BY id
FOR UPDATE

-- name: budgets_of --
-- The budgets a call charged to user $1, agent $2, circle $3, pipeline $4 and task $5 counts
-- against (not locked: for a look, not a reservation).
SELECT id FROM usage.budgets
WHERE (scope = 'user' AND target_id = $1) OR (scope = 'agent' AND target_id = $2)
   OR (scope = 'circle' AND target_id = $3) OR (scope = 'pipeline' AND target_id = $4)
   OR (scope = 'task' AND target_id = $5)
ORDER BY id

-- name: budget_states --
-- Budgets (ids $1; NULL: every one, or those of scope $2 and target $3, each NULL: any) with
-- what was spent in their current period (UTC; period_start and resets_at are NULL for
-- `total`) and what live reservations hold.
SELECT b.*, CASE WHEN b.period <> 'total' THEN p.period_start END AS period_start,
       CASE b.period WHEN 'day' THEN p.period_start + interval '1 day'
                     WHEN 'month' THEN p.period_start + interval '1 month' END AS resets_at,
       s.spent_usd, s.spent_tokens, r.reserved_usd, r.reserved_tokens
FROM usage.budgets b
CROSS JOIN LATERAL (
    SELECT CASE b.period WHEN 'day' THEN date_trunc('day', now(), 'UTC')
                         WHEN 'month' THEN date_trunc('month', now(), 'UTC')
                         ELSE '-infinity'::timestamptz END AS period_start
) p
LEFT JOIN LATERAL (
    SELECT c.spent_usd, c.spent_tokens
    FROM usage.budget_spending c
    WHERE c.budget_id = b.id AND c.period_start = p.period_start
) c ON true
CROSS JOIN LATERAL (
    SELECT coalesce(c.spent_usd, 0)::double precision AS spent_usd,
           coalesce(c.spent_tokens, 0)::bigint AS spent_tokens
) s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(x.cost_usd), 0)::double precision AS reserved_usd,
           coalesce(sum(x.tokens), 0)::bigint AS reserved_tokens
    FROM usage.reservations x
    WHERE x.budget_id = b.id AND x.expires_at > now()
) r
WHERE ($1::bigint[] IS NULL OR b.id = ANY ($1::bigint[]))
  AND ($2::text IS NULL OR b.scope = $2)
  AND ($3::bigint IS NULL OR b.target_id = $3)
ORDER BY b.scope, b.target_id, b.period

-- name: insert_reservations --
-- Reserve $3 USD and $4 tokens for call $1 on each budget of $2, for $5 seconds; and drop the
-- reservations of those budgets that have expired (their process died).
WITH gone AS (
    DELETE FROM usage.reservations WHERE budget_id = ANY ($2::bigint[]) AND expires_at <= now()
)
INSERT INTO usage.reservations (call_id, budget_id, cost_usd, tokens, expires_at)
SELECT $1, b, $3, $4, now() + make_interval(secs => $5)
FROM unnest($2::bigint[]) AS b

-- name: insert_budget_alert --
-- Note that the $2 event of budget $1 was sent for the period starting $3; no row when it
-- already was.
INSERT INTO usage.budget_alerts (budget_id, kind, period_start)
VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING budget_id
