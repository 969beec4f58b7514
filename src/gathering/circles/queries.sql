-- The statements of `gathering.circles` (see db/named_queries.py): circles, members, tasks
-- and their history, routing decisions, reviews, file locks and conflicts.

-- name: insert_circle --
INSERT INTO circle.circles (owner_id, name, description, settings)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING *

-- name: circle_by_id --
SELECT * FROM circle.circles WHERE id = $1

-- name: circle_by_name --
SELECT * FROM circle.circles WHERE name = $1

-- name: lock_circle --
-- NO KEY UPDATE: rows that reference the circle (their foreign-key checks take a key-share
-- lock) are not held up by it, so no two steps wait on each other through them.
SELECT * FROM circle.circles WHERE id = $1 FOR NO KEY UPDATE

-- name: circles --
-- The circles user $1 owns or is an active member of (every circle when $1 is NULL), named
-- $4 when given, oldest first.
SELECT c.* FROM circle.circles c
WHERE ($1::bigint IS NULL OR c.owner_id = $1
       OR EXISTS (SELECT 1 FROM circle.members m
                  WHERE m.circle_id = c.id AND m.user_id = $1 AND m.active))
  AND ($4::text IS NULL OR c.name = $4)
ORDER BY c.id
LIMIT $2 OFFSET $3

-- name: update_circle --
UPDATE circle.circles SET description = $2, settings = $3, status = $4, updated_at = now()
WHERE id = $1
RETURNING *

-- name: delete_circle --
DELETE FROM circle.circles WHERE id = $1

-- name: agent_of_owner --
-- The id of owner $3's agent with id $1 or name $2.
SELECT id FROM agent.agents WHERE (id = $1 OR name = $2) AND owner_id = $3

-- name: user_exists --
SELECT id FROM auth.users WHERE id = $1 AND is_active

-- name: insert_member --
INSERT INTO circle.members (circle_id, agent_id, user_id, role, competencies)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING id

-- name: members --
-- The members of circle $1 (member $2 only, when given) with their names and the tasks in
-- their hands (`load`).
SELECT m.*, coalesce(a.name, u.email, '(gone)') AS name,
       (m.agent_id IS NULL AND m.user_id IS NULL) AS gone,
       (SELECT count(*) FROM circle.tasks t
        WHERE t.circle_id = m.circle_id
          AND ((t.status = 'offered' AND t.offered_to = m.id)
               OR (t.status IN ('in_progress', 'in_review', 'changes_requested')
                   AND t.assignee_id = m.id)))::int AS load
FROM circle.members m
LEFT JOIN agent.agents a ON a.id = m.agent_id
LEFT JOIN auth.users u ON u.id = m.user_id
WHERE m.circle_id = $1 AND ($2::bigint IS NULL OR m.id = $2)
ORDER BY m.id

-- name: update_member --
UPDATE circle.members SET role = $2, competencies = $3, active = $4 WHERE id = $1

-- name: member_of_user --
-- The active member of circle $1 that is person $2.
SELECT id FROM circle.members WHERE circle_id = $1 AND user_id = $2 AND active

-- name: count_outcome --
-- Member $1's metrics after a task of theirs ended: completed ($2) or failed ($3), with the
-- attempts it took ($4), tokens ($5) and seconds of work ($6).
UPDATE circle.members
SET completed = completed + $2, failed = failed + $3, review_rounds = review_rounds + $4,
    tokens = tokens + $5, work_seconds = work_seconds + $6
WHERE id = $1

-- name: count_work --
-- Tokens ($2) and seconds ($3) member $1 spent on an attempt.
UPDATE circle.members SET tokens = tokens + $2, work_seconds = work_seconds + $3 WHERE id = $1

-- name: count_verdict --
-- A verdict on member $1's work ($2: 1 when approved), given by member $3 (when one).
WITH author AS (
    UPDATE circle.members SET verdicts = verdicts + 1, approvals = approvals + $2
    WHERE id = $1
)
UPDATE circle.members SET reviews_given = reviews_given + 1 WHERE id = $3

-- name: insert_task --
INSERT INTO circle.tasks (circle_id, title, description, task_type, requirements, priority,
                          review_type, created_by, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *

-- name: task_by_id --
SELECT * FROM circle.tasks WHERE id = $1

-- name: lock_task --
-- NO KEY UPDATE, as lock_circle.
SELECT * FROM circle.tasks WHERE id = $1 FOR NO KEY UPDATE

-- name: has_dependency --
SELECT 1 FROM circle.task_dependencies WHERE task_id = $1 AND blocked_by = $2

-- name: tasks --
-- Tasks of circle $1, with status $2 when given, newest first.
SELECT * FROM circle.tasks
WHERE circle_id = $1 AND ($2::text IS NULL OR status = $2)
ORDER BY id DESC
LIMIT $3 OFFSET $4

-- name: open_tasks --
-- Tasks of circle $1 that have not ended, oldest first.
SELECT id FROM circle.tasks
WHERE circle_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
ORDER BY id

-- name: move_task --
-- Task $1 to status $2, with its assignment, offer, result and feedback as given.
UPDATE circle.tasks
SET status = $2, offered_to = $3, offer_deadline = $4, assignee_id = $5, iteration = $6,
    result = $7, feedback = $8, error = $9, updated_at = now(),
    started_at = CASE WHEN $2 = 'in_progress' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now() END
WHERE id = $1
RETURNING *

-- name: insert_transition --
INSERT INTO circle.transitions (task_id, from_status, to_status, member_id, user_id, reason)
VALUES ($1, $2, $3, $4, $5, $6)

-- name: transitions --
SELECT * FROM circle.transitions WHERE task_id = $1 ORDER BY id

-- name: insert_dependency --
INSERT INTO circle.task_dependencies (task_id, blocked_by) VALUES ($1, $2)
ON CONFLICT DO NOTHING

-- name: dependencies --
-- The tasks task $1 waits for, with their status.
SELECT t.id, t.status FROM circle.task_dependencies d
JOIN circle.tasks t ON t.id = d.blocked_by
WHERE d.task_id = $1
ORDER BY t.id

-- name: dependents --
-- The blocked tasks that wait for task $1.
SELECT t.id FROM circle.task_dependencies d
JOIN circle.tasks t ON t.id = d.task_id
WHERE d.blocked_by = $1 AND t.status = 'blocked'
ORDER BY t.id

-- name: dependency_path --
-- A path of dependencies from task $1 to task $2 (ids, $1 first), when there is one.
WITH RECURSIVE walk(id, path) AS (
    SELECT $1::bigint, ARRAY[$1::bigint]
    UNION ALL
    SELECT d.blocked_by, w.path || d.blocked_by
    FROM walk w JOIN circle.task_dependencies d ON d.task_id = w.id
    WHERE NOT d.blocked_by = ANY (w.path)
)
SELECT path FROM walk WHERE id = $2 LIMIT 1

-- name: insert_decision --
INSERT INTO circle.decisions (task_id, iteration, kind, member_id, reason, scores)
VALUES ($1, $2, $3, $4, $5, $6)

-- name: decisions --
SELECT * FROM circle.decisions WHERE task_id = $1 ORDER BY id

-- name: passed_over --
-- The members who refused task $1's attempt $2 or let its offer expire, with which.
SELECT DISTINCT member_id, kind FROM circle.decisions
WHERE task_id = $1 AND iteration = $2 AND kind IN ('refused', 'expired')
  AND member_id IS NOT NULL

-- name: review_requests --
-- The members asked to review attempt $2 of task $1, in the order they were asked.
SELECT member_id FROM circle.decisions
WHERE task_id = $1 AND iteration = $2 AND kind IN ('review', 'escalation')
  AND member_id IS NOT NULL
ORDER BY id

-- name: insert_review --
INSERT INTO circle.reviews (task_id, iteration, reviewer_id, user_id, verdict, feedback)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: reviews --
SELECT * FROM circle.reviews WHERE task_id = $1 ORDER BY id

-- name: reviews_of_attempt --
SELECT * FROM circle.reviews WHERE task_id = $1 AND iteration = $2 ORDER BY id

-- name: lock_files --
-- Locks paths $3 of circle $1 for task $2: the paths it got (those free or its own already).
-- In path order: two tasks locking the same paths wait for each other in one order only.
INSERT INTO circle.file_locks (circle_id, path, task_id)
SELECT $1, p, $2 FROM unnest($3::text[]) AS p ORDER BY p
ON CONFLICT (circle_id, path) DO UPDATE SET acquired_at = circle.file_locks.acquired_at
WHERE circle.file_locks.task_id = excluded.task_id
RETURNING path

-- name: file_holders --
-- Who holds paths $2 of circle $1: the path, the task, and the task's assignee.
SELECT l.path, l.task_id, t.assignee_id
FROM circle.file_locks l JOIN circle.tasks t ON t.id = l.task_id
WHERE l.circle_id = $1 AND l.path = ANY ($2::text[])
ORDER BY l.path

-- name: release_files --
DELETE FROM circle.file_locks WHERE task_id = $1 RETURNING path

-- name: insert_conflict --
INSERT INTO circle.conflicts (circle_id, kind, task_id, other_task_id, detail, status,
                              resolution, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'resolved' THEN now() END)
RETURNING *

-- name: resolve_conflicts --
-- Open conflicts about task $1 (as either side) of kind $2, resolved with $3.
UPDATE circle.conflicts SET status = 'resolved', resolution = $3, resolved_at = now()
WHERE status = 'open' AND kind = $2 AND (task_id = $1 OR other_task_id = $1)
RETURNING *

-- name: conflicts --
-- Conflicts of circle $1, open ones only when $2, newest first.
SELECT * FROM circle.conflicts
WHERE circle_id = $1 AND (NOT $2 OR status = 'open')
ORDER BY id DESC
LIMIT $3

-- name: expired_offers --
-- Offers past their deadline, oldest first.
SELECT id FROM circle.tasks
WHERE status = 'offered' AND offer_deadline < now()
ORDER BY offer_deadline
LIMIT $1

-- name: orphaned_tasks --
-- Tasks offered to, or in the hands of, a member who is gone (their agent or account was
-- deleted).
SELECT t.id FROM circle.tasks t
LEFT JOIN circle.members m
       ON m.id = CASE WHEN t.status = 'offered' THEN t.offered_to ELSE t.assignee_id END
WHERE t.status IN ('offered', 'in_progress', 'changes_requested')
  AND (m.id IS NULL OR (m.agent_id IS NULL AND m.user_id IS NULL))
ORDER BY t.id
LIMIT $1

-- name: waiting_on_member --
-- Tasks of circle $1 offered to member $2, or in review (maybe awaiting their verdict).
SELECT t.id FROM circle.tasks t
WHERE t.circle_id = $1
  AND ((t.status = 'offered' AND t.offered_to = $2)
       OR (t.status = 'in_review' AND EXISTS (
               SELECT 1 FROM circle.decisions d
               WHERE d.task_id = t.id AND d.iteration = t.iteration AND d.member_id = $2
                 AND d.kind IN ('review', 'escalation'))))
ORDER BY t.id

-- name: open_conversations --
SELECT id FROM circle.conversations
WHERE circle_id = $1 AND status IN ('created', 'running', 'paused')
ORDER BY id

-- name: waiting_to_route --
-- Pending tasks of circle $1, most urgent first, that no other transaction holds.
SELECT * FROM circle.tasks
WHERE circle_id = $1 AND status = 'pending'
ORDER BY priority DESC, id
LIMIT 200
FOR NO KEY UPDATE SKIP LOCKED

-- name: last_decision --
SELECT kind FROM circle.decisions WHERE task_id = $1 AND iteration = $2 ORDER BY id DESC LIMIT 1

-- name: insert_conversation --
INSERT INTO circle.conversations (circle_id, topic, strategy, participants, facilitator_id,
                                  max_turns, token_budget, stop_phrase, consensus, seed,
                                  created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING *

-- name: conversation_by_id --
SELECT * FROM circle.conversations WHERE id = $1

-- name: lock_conversation --
SELECT * FROM circle.conversations WHERE id = $1 FOR NO KEY UPDATE

-- name: conversations --
SELECT * FROM circle.conversations WHERE circle_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3

-- name: set_conversation --
-- Conversation $1's status, finish reason, error and summary.
UPDATE circle.conversations
SET status = $2, finish_reason = $3, error = $4, summary = coalesce($5, summary),
    updated_at = now(),
    finished_at = CASE WHEN $2 IN ('finished', 'cancelled', 'failed') THEN now() END
WHERE id = $1
RETURNING *

-- name: set_summary --
UPDATE circle.conversations SET summary = $2, updated_at = now() WHERE id = $1

-- name: insert_message --
-- The next message of conversation $1 (its number follows the last); nothing when agent
-- turn $2 is stored already.
INSERT INTO circle.conversation_messages (conversation_id, n, turn, member_id, user_id,
                                          speaker, content, tokens)
SELECT $1, coalesce(max(n), 0) + 1, $2, $3, $4, $5, $6, $7
FROM circle.conversation_messages WHERE conversation_id = $1
ON CONFLICT DO NOTHING
RETURNING *

-- name: count_turn --
UPDATE circle.conversations SET turns = turns + 1, tokens = tokens + $2, updated_at = now()
WHERE id = $1
RETURNING *

-- name: messages --
-- Messages of conversation $1 after number $2, oldest first.
SELECT * FROM circle.conversation_messages
WHERE conversation_id = $1 AND n > $2
ORDER BY n
LIMIT $3

-- name: stranded_work --
-- Tasks in the hands of an agent member (working, or sent back to them) whose last work job
-- of theirs for the current attempt ended without an outcome: it failed on an unexpected
-- error, or was cancelled or aborted by hand (another member's job, of an offer a lead took
-- by hand, says nothing about the assignee's work). (A job asked again later, or waiting for a budget, is a newer
-- job; a job retried after a shutdown is queued again, not failed.)
SELECT t.id, t.iteration, t.assignee_id AS member_id, last.id AS job_id,
       last.status::text AS job_status
FROM circle.tasks t
JOIN circle.members m ON m.id = t.assignee_id AND m.agent_id IS NOT NULL
CROSS JOIN LATERAL (
    SELECT j.id, j.status FROM procrastinate_jobs j
    WHERE j.task_name IN ('circles:work', 'circles:review')
      AND j.args->>'task_id' = t.id::text
      AND j.task_name = 'circles:work'
      AND j.args->>'iteration' = t.iteration::text
      AND j.args->>'member_id' = t.assignee_id::text
    ORDER BY j.id DESC
    LIMIT 1
) last
WHERE t.status IN ('in_progress', 'changes_requested')
  AND last.status IN ('failed', 'cancelled', 'aborted')
ORDER BY t.id
LIMIT $1

-- name: stranded_reviews --
-- Reviews asked of agent members for the current attempt of a task in review whose member's
-- last review job for it ended without an outcome (failed, cancelled or aborted), and that
-- the sweep has not handed on yet.
SELECT t.id, t.iteration, last.member_id, last.id AS job_id, last.status::text AS job_status
FROM circle.tasks t
CROSS JOIN LATERAL (
    SELECT DISTINCT ON (j.args->>'member_id')
           (j.args->>'member_id')::bigint AS member_id, j.id, j.status
    FROM procrastinate_jobs j
    WHERE j.task_name IN ('circles:work', 'circles:review')
      AND j.args->>'task_id' = t.id::text
      AND j.task_name = 'circles:review'
      AND j.args->>'iteration' = t.iteration::text
    ORDER BY j.args->>'member_id', j.id DESC
) last
WHERE t.status = 'in_review'
  AND last.status IN ('failed', 'cancelled', 'aborted')
  AND NOT EXISTS (SELECT 1 FROM circle.ended_review_jobs e WHERE e.job_id = last.id)
ORDER BY t.id
LIMIT $1

-- name: review_job_handled --
-- The sweep hands on the review of job $1 (of task $2): not again. No row: another sweep did.
INSERT INTO circle.ended_review_jobs (job_id, task_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
RETURNING job_id

-- name: job_status --
-- The status of job $1 (no row: gone).
SELECT status::text AS status FROM procrastinate_jobs WHERE id = $1
