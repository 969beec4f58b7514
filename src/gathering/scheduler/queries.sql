-- Schedules and their runs (migration 0017).

-- name: insert_schedule --
-- An event schedule ($6 not NULL) sees the events committed after cursor $6.
INSERT INTO scheduler.schedules (owner_id, name, spec, next_run_at, created_at, event_cursor)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: latest_cursor --
SELECT coalesce(max(cursor), 0) AS cursor FROM events.outbox

-- name: schedule_by_id --
SELECT * FROM scheduler.schedules WHERE id = $1

-- name: lock_schedule --
SELECT * FROM scheduler.schedules WHERE id = $1 FOR UPDATE

-- name: list_schedules --
-- The schedules of owner $1 (NULL: everyone's), newest first.
SELECT * FROM scheduler.schedules
WHERE $1::bigint IS NULL OR owner_id = $1
ORDER BY id DESC LIMIT $2 OFFSET $3

-- name: update_schedule --
-- Schedule $1 takes spec $2, status $3 and next run $4, and sees the events after cursor $5
-- (NULL: no event schedule); a change takes effect at the next claim, on every instance.
UPDATE scheduler.schedules SET spec = $2, status = $3, next_run_at = $4, event_cursor = $5,
       updated_at = now()
WHERE id = $1
RETURNING *

-- name: delete_schedule --
DELETE FROM scheduler.schedules WHERE id = $1 RETURNING id

-- name: due_schedules --
-- Active schedules whose next slot has come, locked; those another instance is claiming are
-- passed over (it holds them until it commits).
SELECT * FROM scheduler.schedules
WHERE status = 'active' AND next_run_at <= now()
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: advance_schedule --
-- After a claim: schedule $1 ran $2 more times, next fires at $3, and is $4 (active, or
-- expired when nothing is left).
UPDATE scheduler.schedules SET executions = executions + $2, next_run_at = $3, status = $4,
       updated_at = now()
WHERE id = $1

-- name: postpone_schedule --
-- Schedule $1 could not be claimed: it is due again in $2 s (the others go on meanwhile).
UPDATE scheduler.schedules SET next_run_at = now() + make_interval(secs => $2::float8),
       updated_at = now()
WHERE id = $1

-- name: insert_run --
-- A run of schedule $1 for slot $2 (trigger $3), with status $4 and error $5; nothing when
-- that slot has a run already (the slot is taken once, whatever claims it).
INSERT INTO scheduler.runs (schedule_id, slot_time, trigger, status, error, finished_at)
VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'queued' THEN NULL ELSE now() END)
ON CONFLICT (schedule_id, slot_time) WHERE event_id IS NULL DO NOTHING
RETURNING *

-- name: event_schedules --
-- Up to $1 active event schedules after id $2, locked (another instance's are passed over).
SELECT * FROM scheduler.schedules
WHERE status = 'active' AND event_cursor IS NOT NULL AND id > $2
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: insert_event_run --
-- A run of schedule $1 for event $2 (at $3, stored as $4), with status $5 and error $6;
-- nothing when that event has a run.
INSERT INTO scheduler.runs (schedule_id, slot_time, trigger, status, error, event_id, event,
                            finished_at)
VALUES ($1, $3, 'event', $5, $6, $2, $4, CASE WHEN $5 = 'queued' THEN NULL ELSE now() END)
ON CONFLICT (schedule_id, event_id) WHERE event_id IS NOT NULL DO NOTHING
RETURNING *

-- name: advance_events --
-- Event schedule $1 ran $2 more times and has seen the events up to cursor $3; $4: active, or
-- expired.
UPDATE scheduler.schedules SET executions = executions + $2, event_cursor = $3, status = $4,
       updated_at = now()
WHERE id = $1

-- name: set_run_job --
UPDATE scheduler.runs SET job_id = $2 WHERE id = $1

-- name: open_runs --
-- The runs of schedule $1 not finished yet.
SELECT * FROM scheduler.runs WHERE schedule_id = $1 AND status IN ('queued', 'running')

-- name: lock_run --
SELECT * FROM scheduler.runs WHERE id = $1 FOR UPDATE

-- name: start_run --
-- Run $1 starts its next attempt.
UPDATE scheduler.runs SET status = 'running', attempt = attempt + 1, started_at = now()
WHERE id = $1
RETURNING *

-- name: link_pipeline_run --
UPDATE scheduler.runs SET pipeline_run_id = $2, output = $3, job_id = NULL WHERE id = $1

-- name: link_task --
UPDATE scheduler.runs SET task_id = $2, output = $3, job_id = NULL WHERE id = $1

-- name: finish_run --
-- Run $1 ends with status $2, output $3 and error $4 (a run that has ended stays as it is).
UPDATE scheduler.runs SET status = $2, output = coalesce($3, output), error = $4,
       finished_at = now(), job_id = NULL
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING *

-- name: retry_run --
-- Run $1 failed and waits for attempt number attempt + 1 (job $3), its error $2 kept; the
-- failed attempt's pipeline run or task is forgotten (the next attempt starts its own).
UPDATE scheduler.runs SET status = 'queued', error = $2, job_id = $3, output = NULL,
       pipeline_run_id = NULL, task_id = NULL
WHERE id = $1
RETURNING *

-- name: runs_of_schedule --
SELECT * FROM scheduler.runs WHERE schedule_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3

-- name: run_by_id --
SELECT * FROM scheduler.runs WHERE id = $1

-- name: ended_targets --
-- Runs waiting on a pipeline run or a background task that has ended (or was deleted): what
-- it was ("pipeline run 4", "task 7"), its status (NULL: deleted) and its error.
(SELECT r.id, 'pipeline run ' || (r.output ->> 'pipeline_run_id') AS target,
        p.status AS target_status, p.error AS target_error
 FROM scheduler.runs r
 LEFT JOIN pipeline.runs p ON p.id = r.pipeline_run_id
 WHERE r.status = 'running' AND r.output ? 'pipeline_run_id'
   AND (p.id IS NULL OR p.status <> 'running')
 LIMIT $1)
UNION ALL
(SELECT r.id, 'task ' || (r.output ->> 'task_id'), t.status, t.error
 FROM scheduler.runs r
 LEFT JOIN scheduler.tasks t ON t.id = r.task_id
 WHERE r.status = 'running' AND r.output ? 'task_id'
   AND (t.id IS NULL OR t.status IN ('succeeded', 'failed', 'cancelled'))
 LIMIT $1)

-- name: stranded_runs --
-- Runs whose job ended without finishing them, $2 s ago or more (a worker that died after
-- procrastinate gave up on its job, a job cancelled by hand).
SELECT r.id, j.status::text AS job_status
FROM scheduler.runs r
JOIN procrastinate_jobs j ON j.id = r.job_id
WHERE r.status IN ('queued', 'running')
  AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND coalesce(r.started_at, r.created_at) < now() - make_interval(secs => $2::float8)
LIMIT $1

-- name: prune_runs --
-- Up to $2 runs that ended more than $1 days ago.
DELETE FROM scheduler.runs WHERE id IN (
    SELECT id FROM scheduler.runs
    WHERE finished_at < now() - make_interval(days => $1) LIMIT $2)
RETURNING id

-- name: schedule_named --
SELECT * FROM scheduler.schedules WHERE owner_id = $1 AND name = $2

-- pipelines' trigger schedules (pipeline_triggers.py) --------------------------------------

-- name: pipelines_with_triggers --
-- The current definition of every pipeline with a schedule or event trigger.
SELECT p.id, p.owner_id, v.definition
FROM pipeline.pipelines p
JOIN pipeline.versions v ON v.pipeline_id = p.id AND v.version = p.current_version
WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(v.definition -> 'nodes') AS n
              WHERE n ->> 'type' = 'trigger'
                AND n -> 'config' ->> 'kind' IN ('schedule', 'event'))

-- name: trigger_schedules --
SELECT id, owner_id, name, spec FROM scheduler.schedules WHERE starts_with(name, 'pipeline:')
