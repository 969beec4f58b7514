-- The statements of `gathering.scheduler.goals` (see db/named_queries.py): goals, their
-- dependencies and activities, and the sweep that moves started goals on.

-- name: insert_goal --
INSERT INTO scheduler.goals (owner_id, parent_id, title, description, success_criteria,
                             agent_id, pipeline_id, position)
VALUES ($1, $2, $3, $4, $5, $6, $7,
        coalesce((SELECT max(position) + 1 FROM scheduler.goals WHERE parent_id = $2), 0))
RETURNING *

-- name: goal_by_id --
SELECT * FROM scheduler.goals WHERE id = $1

-- name: lock_goal --
SELECT * FROM scheduler.goals WHERE id = $1 FOR UPDATE

-- name: lock_goal_if_free --
SELECT * FROM scheduler.goals WHERE id = $1 FOR UPDATE SKIP LOCKED

-- name: root_goals --
-- Top-level goals, newest first, of owner $1 (every owner's when NULL).
SELECT * FROM scheduler.goals
WHERE parent_id IS NULL AND ($1::bigint IS NULL OR owner_id = $1)
ORDER BY id DESC
LIMIT $2 OFFSET $3

-- name: subtree --
-- Goal $1 and every goal below it, parents before children.
WITH RECURSIVE tree AS (
    SELECT g.*, 0 AS depth FROM scheduler.goals g WHERE g.id = $1
    UNION ALL
    SELECT g.*, t.depth + 1 FROM scheduler.goals g JOIN tree t ON g.parent_id = t.id
)
SELECT * FROM tree ORDER BY depth, position, id

-- name: ancestors --
-- The goals above goal $1, nearest first.
WITH RECURSIVE up AS (
    SELECT g.parent_id AS id, 1 AS depth FROM scheduler.goals g WHERE g.id = $1
    UNION ALL
    SELECT g.parent_id, up.depth + 1 FROM scheduler.goals g JOIN up ON g.id = up.id
    WHERE g.parent_id IS NOT NULL
)
SELECT g.* FROM up JOIN scheduler.goals g ON g.id = up.id ORDER BY up.depth

-- name: update_goal --
-- Each of $2..$8 replaces its column when its flag in $9 (a text array of column names)
-- names it.
UPDATE scheduler.goals SET
    title = CASE WHEN 'title' = ANY($9) THEN $2 ELSE title END,
    description = CASE WHEN 'description' = ANY($9) THEN $3 ELSE description END,
    success_criteria = CASE WHEN 'success_criteria' = ANY($9) THEN $4 ELSE success_criteria END,
    agent_id = CASE WHEN 'agent' = ANY($9) THEN $5 ELSE agent_id END,
    pipeline_id = CASE WHEN 'pipeline' = ANY($9) THEN $6 ELSE pipeline_id END,
    progress = CASE WHEN 'progress' = ANY($9) THEN $7 ELSE progress END,
    position = CASE WHEN 'position' = ANY($9) THEN $8 ELSE position END,
    updated_at = now()
WHERE id = $1
RETURNING *

-- name: set_goal_status --
UPDATE scheduler.goals SET status = $2, updated_at = now(),
       progress = CASE WHEN $2 = 'done' THEN 1 ELSE progress END,
       finished_at = CASE WHEN $2 IN ('done', 'failed', 'cancelled') THEN now() END
WHERE id = $1
RETURNING *

-- name: assign_agent --
UPDATE scheduler.goals SET agent_id = $2, updated_at = now() WHERE id = $1 RETURNING *

-- name: fail_started_goal --
-- A goal the sweep could not move on (waiting, active, or open under an active parent)
-- fails; no row when it has ended meanwhile.
UPDATE scheduler.goals SET status = 'failed', updated_at = now(), finished_at = now()
WHERE id = $1 AND status IN ('open', 'waiting', 'active')
RETURNING *

-- name: goal_launched --
UPDATE scheduler.goals SET status = 'active', task_id = $2, pipeline_run_id = $3,
       updated_at = now()
WHERE id = $1 AND status IN ('open', 'waiting')
RETURNING *

-- name: delete_goal --
-- Goal $1 deleted with its subgoals (the cascade): each goal deleted (`deleted`), and each goal
-- outside them that waited for one of them (`blocked_by`: the dependency the cascade removed),
-- as they were before the delete. No row: there was no goal $1.
WITH RECURSIVE tree AS (
    SELECT id FROM scheduler.goals WHERE id = $1
    UNION ALL
    SELECT g.id FROM scheduler.goals g JOIN tree ON g.parent_id = tree.id
), gone AS (
    DELETE FROM scheduler.goals WHERE id = $1 RETURNING id
)
SELECT g.id, g.owner_id, g.parent_id, g.status, NULL::bigint AS blocked_by, true AS deleted
FROM scheduler.goals g JOIN tree USING (id)
WHERE EXISTS (SELECT 1 FROM gone)
UNION ALL
SELECT g.id, g.owner_id, g.parent_id, g.status, d.blocked_by, false AS deleted
FROM scheduler.goal_dependencies d JOIN scheduler.goals g ON g.id = d.goal_id
WHERE d.blocked_by IN (SELECT id FROM tree) AND d.goal_id NOT IN (SELECT id FROM tree)
  AND EXISTS (SELECT 1 FROM gone)

-- name: pipeline_version --
SELECT current_version FROM pipeline.pipelines WHERE id = $1

-- name: pipeline_run_status --
SELECT status FROM pipeline.runs WHERE id = $1

-- name: lock_dependencies --
-- Until the end of the transaction: no other change of this owner's dependencies ($1 is
-- the owner's lock key).
SELECT pg_advisory_xact_lock($1)

-- name: try_lock_dependencies --
-- The same lock when it is free now (true), else nothing (false): the sweep does not wait.
SELECT pg_try_advisory_xact_lock($1)

-- name: lock_goals --
-- Goals $1, locked in id order (every locker takes them in that order: no deadlock).
SELECT id FROM scheduler.goals WHERE id = ANY($1) ORDER BY id FOR UPDATE

-- name: add_dependency --
-- No row when goal $1 waits for goal $2 already.
INSERT INTO scheduler.goal_dependencies (goal_id, blocked_by) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING goal_id

-- name: remove_dependency --
DELETE FROM scheduler.goal_dependencies WHERE goal_id = $1 AND blocked_by = $2 RETURNING goal_id

-- name: owner_goal_parents --
SELECT id, parent_id FROM scheduler.goals WHERE owner_id = $1

-- name: owner_dependencies --
SELECT d.goal_id, d.blocked_by FROM scheduler.goal_dependencies d
JOIN scheduler.goals g ON g.id = d.goal_id
WHERE g.owner_id = $1

-- name: blockers_in_line --
-- The goals not done yet that goal $1, or a goal above it, waits for.
WITH RECURSIVE line AS (
    SELECT id, parent_id FROM scheduler.goals WHERE id = $1
    UNION ALL
    SELECT g.id, g.parent_id FROM scheduler.goals g JOIN line l ON g.id = l.parent_id
)
SELECT DISTINCT b.* FROM line l
JOIN scheduler.goal_dependencies d ON d.goal_id = l.id
JOIN scheduler.goals b ON b.id = d.blocked_by
WHERE b.status <> 'done'
ORDER BY b.id

-- name: dependencies_of --
-- The goals goal $1 waits for, with their status.
SELECT g.* FROM scheduler.goal_dependencies d JOIN scheduler.goals g ON g.id = d.blocked_by
WHERE d.goal_id = $1 ORDER BY g.id

-- name: dependencies_in --
-- The dependencies whose goal is one of $1.
SELECT goal_id, blocked_by FROM scheduler.goal_dependencies WHERE goal_id = ANY($1)
ORDER BY goal_id, blocked_by

-- name: add_activity --
INSERT INTO scheduler.goal_activities (goal_id, kind, body) VALUES ($1, $2, $3) RETURNING *

-- name: activities_of --
SELECT * FROM scheduler.goal_activities WHERE goal_id = $1 AND id > $2 ORDER BY id LIMIT $3

-- name: goals_to_settle --
-- At most $1 goals the sweep may move on, those it looked at longest ago first, stamped as
-- looked at now (goals locked by a start or a cancel are left for the next sweep): open ones
-- added under an active parent (they start), active ones whose task or pipeline run has ended
-- (or is gone), waiting ones none of whose dependencies, or those of a goal above them, is
-- still to be done, and active ones with no work of their own none of whose subgoals is still
-- to end (a parent, or a goal whose work was deleted).
-- The duty runs this every half second: the goals it looks at are only the started ones
-- (goals_in_progress) and the open children of an active goal with no work of its own
-- (goals_children), never the open goals not started (whole trees may wait so) nor the ended.
WITH candidate AS (
    SELECT id FROM scheduler.goals WHERE status IN ('waiting', 'active')
    UNION ALL
    SELECT c.id FROM scheduler.goals p
    JOIN scheduler.goals c ON c.parent_id = p.id AND c.status = 'open'
    WHERE p.status = 'active' AND p.task_id IS NULL AND p.pipeline_run_id IS NULL
), due AS (
    SELECT g.id FROM scheduler.goals g
    LEFT JOIN scheduler.tasks t ON t.id = g.task_id
    LEFT JOIN pipeline.runs r ON r.id = g.pipeline_run_id
    WHERE g.id IN (SELECT id FROM candidate) AND g.status IN ('open', 'waiting', 'active') AND (
        (g.status = 'open' AND EXISTS (
            SELECT 1 FROM scheduler.goals p WHERE p.id = g.parent_id AND p.status = 'active'
            AND p.task_id IS NULL AND p.pipeline_run_id IS NULL))
     OR
        (g.status = 'active' AND g.task_id IS NOT NULL
            AND (t.id IS NULL OR t.status IN ('succeeded', 'failed', 'cancelled')))
     OR (g.status = 'active' AND g.pipeline_run_id IS NOT NULL
            AND (r.id IS NULL OR r.status <> 'running'))
     OR (g.status = 'waiting' AND NOT EXISTS (
            SELECT 1 FROM scheduler.goal_dependencies d JOIN scheduler.goals b ON b.id = d.blocked_by
            WHERE d.goal_id = g.id AND b.status <> 'done')
        AND (g.parent_id IS NULL OR NOT EXISTS (  -- then the goals above it, only if need be
            WITH RECURSIVE line AS (
                SELECT a.id, a.parent_id FROM scheduler.goals a WHERE a.id = g.parent_id
                UNION ALL
                SELECT a.id, a.parent_id FROM scheduler.goals a JOIN line l ON a.id = l.parent_id
            )
            SELECT 1 FROM line l
            JOIN scheduler.goal_dependencies d ON d.goal_id = l.id
            JOIN scheduler.goals b ON b.id = d.blocked_by
            WHERE b.status <> 'done')))
     OR (g.task_id IS NULL AND g.pipeline_run_id IS NULL AND g.status = 'active'
            AND NOT EXISTS (SELECT 1 FROM scheduler.goals c WHERE c.parent_id = g.id
                            AND c.status IN ('open', 'waiting', 'active')))
    )
    ORDER BY g.swept_at NULLS FIRST, g.id
    LIMIT $1
    FOR UPDATE OF g SKIP LOCKED
)
UPDATE scheduler.goals g SET swept_at = now() FROM due WHERE g.id = due.id
RETURNING g.id, g.owner_id
