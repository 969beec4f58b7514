-- The statements of `gathering.jobs` (see db/named_queries.py), on procrastinate's tables
-- (schema pinned by migration 0014_job_queue).

-- name: enqueue --
-- A job, inserted in the caller's transaction; procrastinate's trigger wakes the workers
-- (NOTIFY) when that transaction commits.
INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args, scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id

-- name: waiting_with_queueing_lock --
-- Whether a job not started yet holds queueing lock $1.
SELECT EXISTS (
    SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = $1 AND status = 'todo'
)

-- name: list_jobs --
SELECT j.id, j.queue_name, j.task_name, j.status::text AS status, j.attempts, j.args,
       j.scheduled_at, j.worker_id, j.abort_requested,
       (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id) AS updated_at
  FROM procrastinate_jobs j
 WHERE ($1::text IS NULL OR j.status::text = $1)
   AND ($2::text IS NULL OR j.queue_name = $2)
   AND ($3::text IS NULL OR j.task_name = $3)
 ORDER BY j.id DESC
 LIMIT $4

-- name: job_by_id --
SELECT id, queue_name, task_name, status::text AS status, attempts, args, scheduled_at,
       worker_id, abort_requested
  FROM procrastinate_jobs WHERE id = $1

-- name: count_by_status --
SELECT status::text AS status, count(*) AS jobs FROM procrastinate_jobs GROUP BY status

-- name: live_workers --
-- Workers whose last heartbeat is less than $1 seconds old.
SELECT count(*) FROM procrastinate_workers
WHERE last_heartbeat > now() - make_interval(secs => $1::float8)
