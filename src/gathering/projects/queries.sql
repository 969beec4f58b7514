-- The statements of `gathering.projects` (see db/named_queries.py): projects, their members,
-- the agents and circles linked to them, and their activity.

-- name: insert_project --
INSERT INTO project.projects (owner_id, name, description, directory, origin, source, settings)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
RETURNING *

-- name: project_by_id --
SELECT * FROM project.projects WHERE id = $1

-- name: project_by_name --
SELECT * FROM project.projects WHERE owner_id = $1 AND name = $2

-- name: project_with_directory --
SELECT id FROM project.projects WHERE directory = $1

-- name: projects --
-- The projects user $1 owns or is a member of (every project when $1 is NULL), oldest first.
SELECT p.* FROM project.projects p
WHERE $1::bigint IS NULL OR p.owner_id = $1
   OR EXISTS (SELECT 1 FROM project.members m WHERE m.project_id = p.id AND m.user_id = $1)
ORDER BY p.id
LIMIT $2 OFFSET $3

-- name: update_project --
UPDATE project.projects SET description = $2, settings = $3, updated_at = now()
WHERE id = $1
RETURNING *

-- name: update_stack --
UPDATE project.projects SET stack = $2, context = $3, updated_at = now()
WHERE id = $1
RETURNING *

-- name: delete_project --
DELETE FROM project.projects WHERE id = $1 RETURNING *

-- name: member_permissions --
SELECT permissions FROM project.members WHERE project_id = $1 AND user_id = $2

-- name: upsert_member --
INSERT INTO project.members (project_id, user_id, permissions) VALUES ($1, $2, $3)
ON CONFLICT (project_id, user_id) DO UPDATE SET permissions = EXCLUDED.permissions
RETURNING *

-- name: delete_member --
DELETE FROM project.members WHERE project_id = $1 AND user_id = $2 RETURNING user_id

-- name: members --
SELECT m.*, u.email FROM project.members m JOIN auth.users u ON u.id = m.user_id
WHERE m.project_id = $1
ORDER BY m.added_at, m.user_id

-- name: user_exists --
SELECT id FROM auth.users WHERE id = $1

-- name: link_agent --
-- An agent works in one project's directory: linking it again moves it.
INSERT INTO project.agent_links (agent_id, project_id) VALUES ($1, $2)
ON CONFLICT (agent_id) DO UPDATE SET project_id = EXCLUDED.project_id, linked_at = now()
RETURNING *

-- name: unlink_agent --
DELETE FROM project.agent_links WHERE agent_id = $1 AND project_id = $2 RETURNING agent_id

-- name: link_circle --
INSERT INTO project.circle_links (circle_id, project_id) VALUES ($1, $2)
ON CONFLICT (circle_id) DO UPDATE SET project_id = EXCLUDED.project_id, linked_at = now()
RETURNING *

-- name: unlink_circle --
DELETE FROM project.circle_links WHERE circle_id = $1 AND project_id = $2 RETURNING circle_id

-- name: linked_agents --
SELECT a.id, a.name, l.linked_at FROM project.agent_links l
JOIN agent.agents a ON a.id = l.agent_id
WHERE l.project_id = $1
ORDER BY l.linked_at, a.id

-- name: linked_circles --
SELECT c.id, c.name, l.linked_at FROM project.circle_links l
JOIN circle.circles c ON c.id = l.circle_id
WHERE l.project_id = $1
ORDER BY l.linked_at, c.id

-- name: project_of_circle --
SELECT p.* FROM project.circle_links l JOIN project.projects p ON p.id = l.project_id
WHERE l.circle_id = $1

-- name: agent_owner --
SELECT owner_id FROM agent.agents WHERE id = $1

-- name: circle_owner --
SELECT owner_id FROM circle.circles WHERE id = $1

-- name: insert_activity --
INSERT INTO project.activity (project_id, user_id, agent_id, action, path, detail)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: activity --
-- The project's activity, newest first, before id $3 when given.
SELECT * FROM project.activity
WHERE project_id = $1 AND ($3::bigint IS NULL OR id < $3)
ORDER BY id DESC
LIMIT $2

-- name: agent_ref --
-- The id of owner $3's agent with id $1 or name $2.
SELECT id FROM agent.agents WHERE owner_id = $3 AND (id = $1 OR name = $2) ORDER BY id LIMIT 1

-- name: circle_ref --
SELECT id FROM circle.circles WHERE owner_id = $3 AND (id = $1 OR name = $2) ORDER BY id LIMIT 1

-- name: overlapping_project --
-- A project whose directory holds $1 or lies inside it (a directory is the real path).
SELECT id FROM project.projects
WHERE directory = $1 OR starts_with($1, directory || '/') OR starts_with(directory, $1 || '/')
LIMIT 1
