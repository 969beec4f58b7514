-- MCP servers an owner added (REST or CLI); their tools join the registry as <name>__<tool>.
-- Servers of the config file (GATHERING_MCP_CONFIG) are not stored: every owner sees them.

CREATE TABLE tool.mcp_servers (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    -- NULL: every agent of the owner sees the server; else only this agent.
    agent_id   bigint      REFERENCES agent.agents (id) ON DELETE CASCADE,
    name       text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,29}$'),
    transport  text        NOT NULL CHECK (transport IN ('stdio', 'http')),
    url        text        CHECK (length(url) <= 2048),
    command    text        CHECK (length(command) <= 4096),
    args       jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(args) = 'array'),
    effect     text        NOT NULL DEFAULT 'external' CHECK (effect IN ('read', 'write', 'external')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((transport = 'http') = (url IS NOT NULL)),
    CHECK ((transport = 'stdio') = (command IS NOT NULL)),
    UNIQUE (owner_id, name)
);

CREATE INDEX mcp_servers_agent ON tool.mcp_servers (agent_id) WHERE agent_id IS NOT NULL;
