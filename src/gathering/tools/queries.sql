-- The statements of `gathering.tools` (see gathering/db/named_queries.py).

-- tools per agent -------------------------------------------------------------------------------

-- name: enabled_tools --
-- The tools enabled for agent $1, with their policy (NULL: the tool's default), by name.
SELECT tool_name, policy FROM tool.agent_tools WHERE agent_id = $1 AND enabled ORDER BY tool_name

-- name: agent_tool_settings --
-- Each tool agent $1 has a setting for.
SELECT tool_name, enabled, policy, updated_at FROM tool.agent_tools
WHERE agent_id = $1 ORDER BY tool_name

-- name: set_agent_tool --
-- Change what $3 (enabled) and $4 (policy) give, each kept when its flag $5 / $6 is false.
INSERT INTO tool.agent_tools (agent_id, tool_name, enabled, policy)
VALUES ($1, $2, coalesce($3::boolean, false), $4::text)
ON CONFLICT (agent_id, tool_name) DO UPDATE
SET enabled = CASE WHEN $5::boolean THEN coalesce($3::boolean, false) ELSE agent_tools.enabled END,
    policy = CASE WHEN $6::boolean THEN $4::text ELSE agent_tools.policy END,
    updated_at = now()
RETURNING tool_name, enabled, policy, updated_at

-- approvals -------------------------------------------------------------------------------------

-- name: request_approval --
INSERT INTO tool.approvals (agent_id, owner_id, turn_id, call_id, tool_name, arguments, effect,
                            reason, requested_by, expires_at, task_id)
VALUES ($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10::double precision),
        $11)
RETURNING *

-- name: approval --
SELECT * FROM tool.approvals WHERE id = $1

-- name: approvals --
-- Approvals of owner $1 (NULL: every owner), in state $2 (NULL: any) and of agent $3 (NULL:
-- any), newest first, older than id $4 (NULL: from the newest), at most $5.
SELECT * FROM tool.approvals
WHERE ($1::bigint IS NULL OR owner_id = $1)
  AND ($2::text IS NULL OR state = $2)
  AND ($3::bigint IS NULL OR agent_id = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5

-- name: decide_approval --
-- Answer a pending approval that has not expired; no row when it was answered or expired.
UPDATE tool.approvals
SET state = $2, decided_by = $3, decided_at = now(), comment = $4
WHERE id = $1 AND state = 'pending' AND expires_at > now()
RETURNING *

-- name: expire_approvals --
-- Pending approvals past their time become expired.
UPDATE tool.approvals SET state = 'expired', decided_at = now()
WHERE state = 'pending' AND expires_at <= now()
RETURNING *

-- name: approvals_to_resume --
-- Decided approvals whose turn or invocation has not been picked up yet, oldest first (a
-- background task's are the scheduler's: `answered_for_tasks`).
SELECT * FROM tool.approvals
WHERE state <> 'pending' AND resumed_at IS NULL AND task_id IS NULL
ORDER BY decided_at
LIMIT $1

-- name: mark_resumed --
-- Pick up a decided approval once; no row when another instance did.
UPDATE tool.approvals SET resumed_at = now()
WHERE id = $1 AND state <> 'pending' AND resumed_at IS NULL
RETURNING *

-- name: set_outcome --
UPDATE tool.approvals SET outcome = $2 WHERE id = $1

-- name: approvals_of_turn --
SELECT * FROM tool.approvals WHERE turn_id = $1::uuid ORDER BY id

-- name: outcome_unknown --
-- Direct invocations that started running more than $1 seconds ago and never stored their
-- outcome (the process running them stopped): their outcome becomes $2.
UPDATE tool.approvals SET outcome = $2
WHERE turn_id IS NULL AND task_id IS NULL AND outcome ->> 'state' = 'running'
  AND resumed_at < now() - make_interval(secs => $1::double precision)
RETURNING id

-- name: agents_with_orphaned_resumes --
-- Agents whose turn was taken up after an approval and is still `running`: either it runs
-- now, under the agent's turn lock, or the process running it stopped.
SELECT DISTINCT t.agent_id
FROM tool.approvals a JOIN agent.turns t ON t.id = a.turn_id
WHERE a.resumed_at IS NOT NULL AND t.status = 'running'

-- MCP servers -----------------------------------------------------------------------------------

-- name: visible_mcp_servers --
-- The servers of owner $1 that agent $2 sees (NULL: those for all the owner's agents), or
-- with $3 every server of the owner.
SELECT * FROM tool.mcp_servers
WHERE owner_id = $1 AND (agent_id IS NULL OR agent_id = $2::bigint OR $3::boolean)
ORDER BY name

-- name: agent_owner_of --
SELECT owner_id FROM agent.agents WHERE id = $1

-- name: add_mcp_server --
INSERT INTO tool.mcp_servers (owner_id, agent_id, name, transport, url, command, args, effect)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
RETURNING *

-- name: count_mcp_servers --
SELECT count(*) FROM tool.mcp_servers WHERE owner_id = $1

-- name: mcp_server_named --
SELECT id FROM tool.mcp_servers WHERE owner_id = $1 AND name = $2

-- name: remove_mcp_server --
DELETE FROM tool.mcp_servers WHERE owner_id = $1 AND name = $2 RETURNING *

-- name: linked_project --
-- The project agent $1 is linked to (migration 0023), if any: its directory is the agent's
-- workspace and its context text goes into the agent's prompt.
SELECT p.id, p.directory, p.context FROM project.agent_links l
JOIN project.projects p ON p.id = l.project_id
WHERE l.agent_id = $1

-- name: project_tool_activity --
-- An agent's tool changed something in workspace $1: when it is a project's directory
-- (migration 0023), that goes into the project's activity (nothing otherwise).
INSERT INTO project.activity (project_id, agent_id, action, path, detail)
SELECT p.id, $2, 'agent.tool', $3, $4 FROM project.projects p WHERE p.directory = $1
