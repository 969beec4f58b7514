-- The statements of `gathering.scheduler.tasks` (see db/named_queries.py): background agent
-- tasks and their steps. Writes by a task's job are fenced by the lease it took when it
-- started the task: a job that was replaced (the task paused, resumed or cancelled
-- meanwhile, or the same job started again elsewhere) changes nothing.

-- name: insert_task --
INSERT INTO scheduler.tasks (owner_id, agent_id, goal, max_steps, max_tokens, max_seconds,
                             max_cost_usd)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *

-- name: agent_of_owner --
-- The id of owner $3's agent with id $1 or name $2.
SELECT id FROM agent.agents WHERE (id = $1 OR name = $2) AND owner_id = $3

-- name: pipeline_of_owner --
-- The id of owner $3's pipeline with id $1 or name $2 (a goal's).
SELECT id FROM pipeline.pipelines WHERE (id = $1 OR name = $2) AND owner_id = $3

-- name: task_by_id --
SELECT * FROM scheduler.tasks WHERE id = $1

-- name: lock_task --
SELECT * FROM scheduler.tasks WHERE id = $1 FOR UPDATE

-- name: list_tasks --
-- Newest first, of owner $1 (every owner's when NULL), of status $2 (any when NULL).
SELECT * FROM scheduler.tasks
WHERE ($1::bigint IS NULL OR owner_id = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY id DESC
LIMIT $3 OFFSET $4

-- name: queue_task --
-- Task $1 waits for its job $2 (a new task, or one resumed or answered).
UPDATE scheduler.tasks
SET status = 'queued', job_id = $2, lease = NULL, approval_id = NULL, error = NULL,
    updated_at = now()
WHERE id = $1
RETURNING *

-- name: set_task_status --
-- Task $1 becomes $2 (paused, cancelled, ...): its job is forgotten, an ended one gets its
-- error $3 and its end time.
UPDATE scheduler.tasks
SET status = $2, job_id = NULL, lease = NULL, error = coalesce($3, error), updated_at = now(),
    finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() END
WHERE id = $1
RETURNING *

-- name: start_task --
-- Job $2 takes up task $1 (queued; running: its worker died; waiting for a budget: the job
-- deferred to look again) under a new lease, which fences every write after this one. A
-- running task has no error (a budget's refusal it waited for is over).
UPDATE scheduler.tasks
SET status = 'running', lease = gen_random_uuid(), started_at = coalesce(started_at, now()),
    updated_at = now(), alive_at = now(), error = NULL
WHERE id = $1 AND job_id = $2 AND status IN ('queued', 'running', 'waiting_budget')
RETURNING *

-- name: task_owner --
-- The owner of task $1 (it never changes: read before the owner's lock is taken).
SELECT owner_id FROM scheduler.tasks WHERE id = $1

-- name: lock_tasks_of_owner --
-- Until the end of the transaction, no task of the owner ($1 is the owner's lock key) starts
-- running in another one, nor stops to make room (an end, a wait, a pause, a cancel). Taken
-- before any task's row is locked.
SELECT pg_advisory_xact_lock($1)

-- name: running_tasks_of_owner --
-- How many tasks of owner $1 besides task $2 are running (held by a job, or by one whose
-- worker died and that is about to run again), under the owner's lock.
SELECT count(*) FROM scheduler.tasks WHERE owner_id = $1 AND status = 'running' AND id <> $2

-- name: wait_for_owner_room --
-- Task $1, that job $2 was about to start while its owner has as many tasks running as
-- allowed, waits queued for job $3 (deferred; woken when a task of the owner stops running):
-- no lease (a run that held it writes nothing more), no error (a budget wait is over).
UPDATE scheduler.tasks
SET status = 'queued', job_id = $3, lease = NULL, error = NULL, updated_at = now()
WHERE id = $1 AND job_id = $2 AND status IN ('queued', 'running', 'waiting_budget')
RETURNING *

-- name: wake_task_waiting_for_room --
-- A task of owner $1 stopped running (under the owner's lock): the job of the owner's oldest
-- task waiting for room (queued, its job deferred) runs now; its id, none when none waits.
WITH next AS (
    SELECT j.id FROM scheduler.tasks t
    JOIN procrastinate_jobs j ON j.id = t.job_id
    WHERE t.owner_id = $1 AND t.status = 'queued' AND j.status = 'todo'
      AND j.scheduled_at > statement_timestamp()
    ORDER BY t.id
    LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE procrastinate_jobs j SET scheduled_at = now() FROM next WHERE j.id = next.id
RETURNING j.id

-- name: defer_budget_wait --
-- Task $1, waiting for a budget, waits on under job $2 (or for a resume when NULL), its
-- error the latest refusal $3.
UPDATE scheduler.tasks SET job_id = $2, error = $3, updated_at = now() WHERE id = $1

-- name: wait_for_budget --
-- Task $1 (under lease $2) waits for a budget that refused its model call (error $4), taken
-- up by job $3 (deferred to the budget's reset), or by a resume when $3 is NULL.
UPDATE scheduler.tasks
SET status = 'waiting_budget', job_id = $3, lease = NULL, error = $4, updated_at = now()
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING *

-- name: wait_for_approval --
-- Task $1 (under lease $2) waits for approval $3, without a job.
UPDATE scheduler.tasks
SET status = 'waiting_approval', approval_id = $3, job_id = NULL, lease = NULL,
    updated_at = now()
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING *

-- name: lock_held_task --
-- Task $1, locked, while the run holding lease $2 works on it.
SELECT id FROM scheduler.tasks WHERE id = $1 AND lease = $2 AND status = 'running' FOR UPDATE

-- name: lock_approval --
-- Approval $1, locked: an answer given meanwhile waits for this transaction (and is then
-- taken up by the sweep), or came before it and is read here.
SELECT state FROM tool.approvals WHERE id = $1 FOR UPDATE

-- name: end_task --
-- The job holding lease $2 ends task $1 with status $3, result $4 and error $5.
UPDATE scheduler.tasks
SET status = $3, result = $4, error = $5, job_id = NULL, lease = NULL, updated_at = now(),
    finished_at = now()
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING *

-- name: steps_of_task --
-- The steps of task $1 after step $2, in order, at most $3.
SELECT * FROM scheduler.task_steps WHERE task_id = $1 AND n > $2 ORDER BY n LIMIT $3

-- name: all_steps --
SELECT * FROM scheduler.task_steps WHERE task_id = $1 ORDER BY n

-- name: insert_step --
-- The job holding lease $2 stores step $3 of task $1 (the model's reply: its text and calls, what it cost) and
-- counts it in the task's use; no row when the job was replaced or the step exists.
WITH task AS (
    UPDATE scheduler.tasks
    SET steps = $3, input_tokens = input_tokens + $7, output_tokens = output_tokens + $8,
        cost_usd = cost_usd + coalesce($9, 0), active_seconds = active_seconds + $10 / 1000.0,
        updated_at = now()
    WHERE id = $1 AND lease = $2 AND status = 'running' AND steps = $3 - 1
    RETURNING id
)
INSERT INTO scheduler.task_steps (task_id, n, thought, tool_calls, status, model, input_tokens,
                                  output_tokens, cost_usd, duration_ms, results, finished_at)
SELECT id, $3, $4, $5, $11, $6, $7, $8, $9, $10, '{}', CASE WHEN $11 = 'done' THEN now() END
FROM task
RETURNING *

-- name: set_call --
-- The job holding lease $2 stores call $4 of step $3 of task $1 as $5 ({"status", "content"}), adding $6 ms to
-- the step's and the task's time; no row when the job was replaced.
WITH task AS (
    UPDATE scheduler.tasks
    SET active_seconds = active_seconds + $6 / 1000.0, updated_at = now()
    WHERE id = $1 AND lease = $2 AND status = 'running'
    RETURNING id
)
UPDATE scheduler.task_steps s
SET results = jsonb_set(s.results, ARRAY[$4::text], $5), duration_ms = s.duration_ms + $6
FROM task
WHERE s.task_id = task.id AND s.n = $3
RETURNING s.*

-- name: bill_cut_call --
-- Run $4 of call $3 of step $2 of task $1 (its `attempt`) was cut short (a pause, a cancel, a
-- stopping or dead worker) after $5 ms: they count in the step's and the task's time once,
-- whoever bills first (the run is marked charged); no row when it was counted already or the
-- call went on to another state or run.
WITH step AS (
    UPDATE scheduler.task_steps
    SET results = jsonb_set(results, ARRAY[$3::text, 'charged'], 'true'),
        duration_ms = duration_ms + $5
    WHERE task_id = $1 AND n = $2 AND results -> $3::text ->> 'status' = 'running'
      AND results -> $3::text ->> 'attempt' IS NOT DISTINCT FROM $4
      AND NOT coalesce((results -> $3::text ->> 'charged')::boolean, false)
    RETURNING task_id
)
UPDATE scheduler.tasks t SET active_seconds = active_seconds + $5 / 1000.0
FROM step WHERE t.id = step.task_id
RETURNING t.id

-- name: bill_cut_model_call --
-- A model call of task $1 ended after $2 ms but its step was not stored (the task was
-- paused, cancelled or taken meanwhile): its time, tokens ($3 in, $4 out) and cost $5 still
-- count in the task's use.
UPDATE scheduler.tasks
SET active_seconds = active_seconds + $2 / 1000.0, input_tokens = input_tokens + $3,
    output_tokens = output_tokens + $4, cost_usd = cost_usd + coalesce($5, 0)
WHERE id = $1

-- name: finish_step --
UPDATE scheduler.task_steps s SET status = 'done', finished_at = now()
FROM scheduler.tasks t
WHERE s.task_id = $1 AND s.n = $3 AND t.id = s.task_id AND t.lease = $2
  AND t.status = 'running'
RETURNING s.*

-- name: task_approval --
-- The approval asked for call $2 of task $1.
SELECT * FROM tool.approvals WHERE task_id = $1 AND call_id = $2 ORDER BY id DESC LIMIT 1

-- name: answered_for_tasks --
-- Decided approvals of background tasks' calls not taken up yet, oldest first.
SELECT id, task_id FROM tool.approvals
WHERE state <> 'pending' AND resumed_at IS NULL AND task_id IS NOT NULL
ORDER BY decided_at
LIMIT $1

-- name: take_answer --
-- Take up decided approval $1 once; no row when another instance did.
UPDATE tool.approvals SET resumed_at = now()
WHERE id = $1 AND resumed_at IS NULL AND state <> 'pending'
RETURNING id

-- name: expire_task_approvals --
-- The pending approvals of task $1 expire (it was cancelled): nothing waits for them.
UPDATE tool.approvals SET state = 'expired', decided_at = now(), resumed_at = now()
WHERE task_id = $1 AND state = 'pending'

-- name: cancel_task_job --
-- procrastinate's cancel: a queued job is cancelled, a running one asked to abort (NOTIFY).
SELECT procrastinate_cancel_job_v1($1, true, false) AS id

-- name: task_alive --
-- The run holding lease $2 still works on task $1; no row when it no longer holds it.
UPDATE scheduler.tasks SET alive_at = now()
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING id

-- name: job_status --
SELECT status::text FROM procrastinate_jobs WHERE id = $1

-- name: stranded_tasks --
-- Tasks queued, running or waiting for a budget whose job ended without ending them, and
-- that nobody has said is alive for $2 s or more (a job cancelled by hand, one that failed on
-- an unexpected error; not a job delivered twice whose first delivery ended while the second
-- works).
SELECT t.id, t.owner_id, j.status::text AS job_status
FROM scheduler.tasks t
JOIN procrastinate_jobs j ON j.id = t.job_id
WHERE t.status IN ('queued', 'running', 'waiting_budget')
  AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND greatest(t.updated_at, t.alive_at) < now() - make_interval(secs => $2::float8)
LIMIT $1
