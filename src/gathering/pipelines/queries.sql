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

-- name: pipelines_changed --
-- What changes when a pipeline is saved or deleted, or a trigger schedule made or deleted
-- (the scheduler's pipeline_triggers.py looks every half second): how many pipelines there are
-- and the latest save (a pipeline committed after a later save still changes the count: a
-- save's updated_at is its transaction's start, not its commit), the trigger schedules, and
-- those of them whose pipeline is gone (each looked up by the id in its name).
SELECT (SELECT count(*) FROM pipeline.pipelines) AS pipelines,
       (SELECT max(updated_at) FROM pipeline.pipelines) AS latest,
       count(*) AS triggers,
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM pipeline.pipelines p
           WHERE p.id = CASE WHEN split_part(s.name, ':', 2) ~ '^[0-9]{1,18}$'
                             THEN split_part(s.name, ':', 2)::bigint END)) AS orphans
FROM scheduler.schedules s
WHERE starts_with(s.name, 'pipeline:')

-- name: list_versions --
-- Every version of pipeline $1, newest first (without the definitions: their names).
SELECT pipeline_id, version, definition ->> 'name' AS name, created_at, created_by
FROM pipeline.versions WHERE pipeline_id = $1
ORDER BY version DESC

-- name: pipeline_version --
SELECT pipeline_id, version, definition, created_at, created_by
FROM pipeline.versions WHERE pipeline_id = $1 AND version = $2

-- circuit breakers (migration 0015) ---------------------------------------------------------

-- name: breaker_state --
-- The breaker of target $1, and the time now (breaker.admit decides whether it lets a call
-- through).
SELECT target, failures, opened_at, state, now() AS now
FROM pipeline.breakers WHERE target = $1

-- name: breaker_failure --
-- One more failure of target $1: counted in a window of $2 s (a new window starts when the
-- last one is over); at $3 failures, or on a failure while half open, the breaker opens.
INSERT INTO pipeline.breakers AS b (target, failures, window_start, state, opened_at)
VALUES ($1, 1, now(), CASE WHEN $3 <= 1 THEN 'open' ELSE 'closed' END,
        CASE WHEN $3 <= 1 THEN now() END)
ON CONFLICT (target) DO UPDATE SET
    failures = CASE WHEN b.window_start < now() - make_interval(secs => $2) THEN 1
                    ELSE b.failures + 1 END,
    window_start = CASE WHEN b.window_start < now() - make_interval(secs => $2) THEN now()
                        ELSE b.window_start END,
    state = CASE
        WHEN b.state = 'open' AND b.opened_at >= now() - make_interval(secs => $4) THEN 'open'
        WHEN b.state <> 'closed' THEN 'open'  -- the half-open trial failed
        WHEN (CASE WHEN b.window_start < now() - make_interval(secs => $2) THEN 1
                   ELSE b.failures + 1 END) >= $3 THEN 'open'
        ELSE 'closed' END,
    opened_at = CASE
        WHEN b.state = 'open' AND b.opened_at >= now() - make_interval(secs => $4)
            THEN b.opened_at
        WHEN b.state <> 'closed' THEN now()
        WHEN (CASE WHEN b.window_start < now() - make_interval(secs => $2) THEN 1
                   ELSE b.failures + 1 END) >= $3 THEN now()
        ELSE NULL END,
    updated_at = now()
RETURNING state, failures

-- name: breaker_success --
-- A call of target $1 succeeded: the breaker closes and forgets its failures.
UPDATE pipeline.breakers SET state = 'closed', failures = 0, window_start = now(),
       opened_at = NULL, updated_at = now()
WHERE target = $1 AND (state <> 'closed' OR failures > 0)

-- name: list_breakers --
SELECT target, failures, opened_at, updated_at,
       CASE WHEN state = 'open' AND opened_at < now() - make_interval(secs => $1)
            THEN 'half_open' ELSE state END AS state
FROM pipeline.breakers
WHERE $2::text IS NULL OR starts_with(target, $2)
ORDER BY target

-- runs (migration 0015) ---------------------------------------------------------------------

-- name: insert_run --
-- A run of pipeline $1 at version $2 for owner $3 with input $4, started by $5 (trigger), from
-- run $6 ($7: retry or fork), to finish by $8; called by node $10 of run $9 at depth $11.
INSERT INTO pipeline.runs
    (pipeline_id, version, owner_id, input, trigger, parent_run_id, relation, deadline,
     caller_run_id, caller_node_id, depth)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8::float8), $9, $10, $11)
RETURNING *

-- name: running_callees --
-- The running runs that nodes of run $1 called (sub-pipelines).
SELECT id FROM pipeline.runs WHERE caller_run_id = $1 AND status = 'running'

-- name: insert_node_runs --
-- Run $1's nodes $2 (ids), all pending.
INSERT INTO pipeline.node_runs (run_id, node_id)
SELECT $1, node_id FROM unnest($2::text[]) AS node_id

-- name: reuse_node_run --
-- Node $2 of run $1 keeps output $3 of the run it came from.
UPDATE pipeline.node_runs
SET status = 'succeeded', output = $3, reused = true, finished_at = now(), updated_at = now()
WHERE run_id = $1 AND node_id = $2

-- name: run_by_id --
SELECT * FROM pipeline.runs WHERE id = $1

-- name: lock_run --
-- Run $1, locked until the transaction ends: node transitions of one run take turns.
SELECT * FROM pipeline.runs WHERE id = $1 FOR UPDATE

-- name: runs_of_owner --
-- Runs of owner $1's pipelines (NULL: everyone's) in status $2 (NULL: any), newest first.
SELECT * FROM pipeline.runs
WHERE ($1::bigint IS NULL OR owner_id = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY id DESC LIMIT $3 OFFSET $4

-- name: runs_of_pipeline --
SELECT * FROM pipeline.runs WHERE pipeline_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3

-- name: node_runs --
SELECT * FROM pipeline.node_runs WHERE run_id = $1 ORDER BY started_at NULLS LAST, node_id

-- name: node_run --
SELECT * FROM pipeline.node_runs WHERE run_id = $1 AND node_id = $2

-- name: set_node --
-- Node $2 of run $1 moves to status $3, with output $4 and error $5 (NULL keeps them),
-- job $6, wake time $7 and a deadline $8 s from now (NULL for none); its attempt grows by
-- $9 and its claims by $10; started_at is set when it starts running, finished_at when it
-- ends.
UPDATE pipeline.node_runs SET
    status = $3,
    output = COALESCE($4, output),
    error = CASE WHEN $3 = 'running' THEN NULL ELSE COALESCE($5, error) END,
    job_id = $6,
    wake_at = $7,
    deadline = CASE WHEN $8::float8 IS NULL THEN NULL
                    ELSE now() + make_interval(secs => $8::float8) END,
    attempt = attempt + $9,
    claims = claims + $10,
    started_at = CASE WHEN $3 = 'running' THEN now() ELSE started_at END,
    finished_at = CASE WHEN $3 IN ('succeeded', 'failed', 'skipped', 'cancelled') THEN now()
                       ELSE NULL END,
    updated_at = now()
WHERE run_id = $1 AND node_id = $2
RETURNING *

-- name: set_node_input --
UPDATE pipeline.node_runs SET input = $3 WHERE run_id = $1 AND node_id = $2

-- name: finish_run --
-- Run $1 ends with status $2 and error $3, when it is still running.
UPDATE pipeline.runs SET status = $2, error = $3, finished_at = now()
WHERE id = $1 AND status = 'running'
RETURNING *

-- name: open_node_jobs --
-- The jobs of run $1's nodes that are queued or running.
SELECT node_id, job_id, status FROM pipeline.node_runs
WHERE run_id = $1 AND status IN ('queued', 'running', 'waiting') AND job_id IS NOT NULL

-- name: stop_open_nodes --
-- Run $1 is over: its nodes not finished become $2 (skipped or cancelled).
UPDATE pipeline.node_runs SET status = $2, finished_at = now(), updated_at = now(),
       job_id = NULL, wake_at = NULL
WHERE run_id = $1 AND status IN ('pending', 'queued', 'waiting')
RETURNING node_id

-- name: cancel_job --
-- procrastinate's cancel: a queued job is cancelled, a running one asked to abort (NOTIFY).
SELECT procrastinate_cancel_job_v1($1, true, false) AS id

-- name: overdue_runs --
-- Running runs past their deadline, and running nodes past theirs by more than $2 s.
SELECT r.id, 'run' AS what, NULL AS node_id FROM pipeline.runs r
WHERE r.status = 'running' AND r.deadline < now()
UNION ALL
SELECT n.run_id, 'node', n.node_id FROM pipeline.node_runs n
JOIN pipeline.runs r ON r.id = n.run_id AND r.status = 'running'
WHERE n.status = 'running' AND n.deadline < now() - make_interval(secs => $2::float8)
LIMIT $1

-- webhooks ----------------------------------------------------------------------------------

-- name: set_webhook_secret --
UPDATE pipeline.pipelines SET webhook_secret_hash = $2 WHERE id = $1 RETURNING id

-- name: webhook_secret_hash --
SELECT webhook_secret_hash FROM pipeline.pipelines WHERE id = $1

-- name: orphaned_nodes --
-- Nodes whose job ended without settling them, $2 s ago or more (a write that failed, a job a
-- person cancelled, a run that ended while the node's worker was dead).
SELECT n.run_id, n.node_id, n.job_id, j.status::text AS job_status
FROM pipeline.node_runs n
JOIN procrastinate_jobs j ON j.id = n.job_id
WHERE n.status IN ('queued', 'running', 'waiting')
  AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND n.updated_at < now() - make_interval(secs => $2::float8)
LIMIT $1

-- name: succeeded_outputs --
SELECT node_id, output FROM pipeline.node_runs WHERE run_id = $1 AND status = 'succeeded'

-- name: node_states --
-- The status of nodes $2 of run $1, with the output of those that succeeded.
SELECT node_id, status, CASE WHEN status = 'succeeded' THEN output END AS output
FROM pipeline.node_runs WHERE run_id = $1 AND node_id = ANY($2::text[])

-- name: run_progress --
-- How many of run $1's nodes are not finished, and the first that failed.
SELECT count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled'))
           AS open,
       min(node_id) FILTER (WHERE status = 'failed') AS failed
FROM pipeline.node_runs WHERE run_id = $1

-- name: stranded_callers --
-- sub_pipeline nodes of running runs still waiting, $2 s after the run they called ended or
-- was deleted (its wake-up job was lost).
SELECT n.run_id, n.node_id
FROM pipeline.node_runs n
JOIN pipeline.runs r ON r.id = n.run_id AND r.status = 'running'
WHERE n.status = 'waiting' AND n.input ? 'run_id'
  AND n.updated_at < now() - make_interval(secs => $2::float8)
  AND NOT EXISTS (SELECT 1 FROM pipeline.runs c
                  WHERE c.id = (n.input ->> 'run_id')::bigint AND c.status = 'running')
LIMIT $1

-- name: running_runs_of --
SELECT count(*) FROM pipeline.runs WHERE owner_id = $1 AND status = 'running'

-- name: node_of_job --
-- The node of run $1 that job $2 holds and has not finished (a job goes on from node to node
-- along a chain; queued again after a crash, it takes up where it was).
SELECT * FROM pipeline.node_runs
WHERE run_id = $1 AND job_id = $2 AND status IN ('queued', 'running', 'waiting')

-- name: settle_and_chain --
-- The fast step of a chain, in one statement (so one round trip and one commit): node $2 of
-- run $1, running under claim $3, succeeds with output $4, and job $6 claims node $5 (the only
-- node after it, with no other node before it), which must be pending, with a deadline
-- $7 s from now (NULL for none). The run's row is locked first, as every step does. The events
-- $8 (node $2's) and $9 (node $5's, whose attempt is filled in) are written to the outbox, as
-- events/queries.sql's write_events does, for what took place. Returns whether node $2 was
-- settled and, when node $5 was claimed, its attempt and claims, with the breaker of its
-- target $10 (NULL: none) as breaker_state reads it.
WITH run AS (
    SELECT id FROM pipeline.runs WHERE id = $1 AND status = 'running' FOR UPDATE
), done AS (
    -- Only together with the claim: a node after it that is not pending (reused by a retry
    -- or a fork) leaves both to the general step, in one transaction. (Its pending status
    -- is read in the statement's snapshot: only a step that ends the run changes a pending
    -- node whose one predecessor still runs, and `run` sees that end.)
    UPDATE pipeline.node_runs SET status = 'succeeded', output = $4, job_id = NULL,
           wake_at = NULL, deadline = NULL, finished_at = now(), updated_at = now()
    WHERE run_id = $1 AND node_id = $2 AND status = 'running' AND claims = $3
      AND EXISTS (SELECT 1 FROM run)
      AND EXISTS (SELECT 1 FROM pipeline.node_runs
                  WHERE run_id = $1 AND node_id = $5 AND status = 'pending')
    RETURNING node_id
), claimed AS (
    UPDATE pipeline.node_runs SET status = 'running', error = NULL, job_id = $6,
           wake_at = NULL,
           deadline = CASE WHEN $7::float8 IS NULL THEN NULL
                           ELSE now() + make_interval(secs => $7::float8) END,
           attempt = attempt + 1, claims = claims + 1, started_at = now(),
           finished_at = NULL, updated_at = now()
    WHERE run_id = $1 AND node_id = $5 AND status = 'pending' AND EXISTS (SELECT 1 FROM done)
    RETURNING attempt, claims
), events AS (
    SELECT 1 AS position, r.* FROM jsonb_to_recordset($8::jsonb) AS r (
        id uuid, type text, subject text, data jsonb, occurred_at timestamptz, source text,
        correlation_id text)
    WHERE EXISTS (SELECT 1 FROM done)
    UNION ALL
    SELECT 2, r.id, r.type, r.subject,
           r.data || jsonb_build_object('attempt', (SELECT attempt FROM claimed)),
           r.occurred_at, r.source, r.correlation_id
    FROM jsonb_to_recordset($9::jsonb) AS r (
        id uuid, type text, subject text, data jsonb, occurred_at timestamptz, source text,
        correlation_id text)
    WHERE EXISTS (SELECT 1 FROM claimed)
), written AS (
    INSERT INTO events.outbox (id, type, subject, data, occurred_at, source, correlation_id)
    SELECT id, type, subject, coalesce(data, '{}'::jsonb), occurred_at, source, correlation_id
    FROM events ORDER BY position
    ON CONFLICT (id) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM done) AS settled, c.attempt, c.claims,
       b.target, b.failures, b.opened_at, b.state, now() AS now
FROM (SELECT 1) AS one LEFT JOIN claimed c ON true
LEFT JOIN pipeline.breakers b ON b.target = $10::text AND c.attempt IS NOT NULL
