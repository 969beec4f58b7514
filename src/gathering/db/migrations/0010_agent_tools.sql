-- Tools enabled for each agent. A registry tool is off for an agent until a row enables it;
-- tools given to an `Agent` in Python are always its own.

CREATE SCHEMA IF NOT EXISTS tool;

CREATE TABLE tool.agent_tools (
    agent_id   bigint      NOT NULL REFERENCES agent.agents (id) ON DELETE CASCADE,
    tool_name  text        NOT NULL CHECK (length(tool_name) BETWEEN 1 AND 200),
    enabled    boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, tool_name)
);
