-- The statements of `gathering.tools` (see gathering/db/named_queries.py).

-- name: enabled_tools --
-- The names of the tools enabled for agent $1, sorted.
SELECT tool_name FROM tool.agent_tools WHERE agent_id = $1 AND enabled ORDER BY tool_name

-- name: agent_tool_settings --
-- Each tool agent $1 has a setting for, and whether it is enabled.
SELECT tool_name, enabled, updated_at FROM tool.agent_tools WHERE agent_id = $1 ORDER BY tool_name

-- name: set_agent_tool --
INSERT INTO tool.agent_tools (agent_id, tool_name, enabled)
VALUES ($1, $2, $3)
ON CONFLICT (agent_id, tool_name) DO UPDATE SET enabled = $3, updated_at = now()
RETURNING tool_name, enabled, updated_at
