-- Projects: a directory on disk (created, cloned from an allowed git URL, or an existing one an
-- admin registered), its settings, the people who may work on it (members with permissions),
-- the agents and circles linked to it (its directory is their workspace), and an activity log
-- of who changed what.

CREATE SCHEMA IF NOT EXISTS project;

CREATE TABLE project.projects (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description  text        NOT NULL DEFAULT '',
    -- The real path of the project's directory; two projects never share one.
    directory    text        NOT NULL UNIQUE CHECK (directory LIKE '/%'),
    -- created: made under the projects root; cloned: from `source` (a git URL); registered:
    -- an existing directory an admin named (never deleted with the project).
    origin       text        NOT NULL CHECK (origin IN ('created', 'cloned', 'registered')),
    source       text,
    settings     jsonb       NOT NULL DEFAULT '{}',
    -- What stack detection found (languages, package managers, test command), and the context
    -- text linked agents get in their prompt; both refreshed on demand.
    stack        jsonb       NOT NULL DEFAULT '{}',
    context      text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Names are per owner: one user's project names say nothing to another.
    UNIQUE (owner_id, name)
);

-- People other than the owner who may work on the project, each with permissions.
CREATE TABLE project.members (
    project_id   bigint      NOT NULL REFERENCES project.projects (id) ON DELETE CASCADE,
    user_id      bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    permissions  text[]      NOT NULL
                 CHECK (permissions <@ ARRAY['read', 'write', 'terminal']::text[]
                        AND 'read' = ANY (permissions)),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_of_user ON project.members (user_id);

-- An agent or a circle works in at most one project's directory.
CREATE TABLE project.agent_links (
    agent_id     bigint      PRIMARY KEY REFERENCES agent.agents (id) ON DELETE CASCADE,
    project_id   bigint      NOT NULL REFERENCES project.projects (id) ON DELETE CASCADE,
    linked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_links_of_project ON project.agent_links (project_id);

CREATE TABLE project.circle_links (
    circle_id    bigint      PRIMARY KEY REFERENCES circle.circles (id) ON DELETE CASCADE,
    project_id   bigint      NOT NULL REFERENCES project.projects (id) ON DELETE CASCADE,
    linked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX circle_links_of_project ON project.circle_links (project_id);

-- Who (a person or an agent) changed what, and when.
CREATE TABLE project.activity (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint      NOT NULL REFERENCES project.projects (id) ON DELETE CASCADE,
    user_id      bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    agent_id     bigint      REFERENCES agent.agents (id) ON DELETE SET NULL,
    action       text        NOT NULL CHECK (action ~ '^[a-z][a-z_.]{0,62}$'),
    path         text,
    detail       jsonb       NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_of_project ON project.activity (project_id, id);
