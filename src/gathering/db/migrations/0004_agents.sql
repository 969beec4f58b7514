-- Agents get an owner, a persona and settings; sessions and their messages are stored in order.

ALTER TABLE agent.agents
    ADD COLUMN owner_id bigint REFERENCES auth.users (id) ON DELETE CASCADE,
    ADD COLUMN persona  jsonb NOT NULL DEFAULT '{}'::jsonb;

UPDATE agent.agents SET owner_id = (SELECT id FROM auth.users WHERE is_local_owner);
ALTER TABLE agent.agents ALTER COLUMN owner_id SET NOT NULL;

-- Rows inserted without an owner (single-user mode, scripts) belong to the local owner.
CREATE FUNCTION agent.fill_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_id IS NULL THEN
        SELECT id INTO NEW.owner_id FROM auth.users WHERE is_local_owner;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agents_fill_owner BEFORE INSERT ON agent.agents
    FOR EACH ROW EXECUTE FUNCTION agent.fill_owner();

CREATE UNIQUE INDEX agents_owner_name_key ON agent.agents (owner_id, lower(name));

CREATE TABLE agent.sessions (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id    bigint      NOT NULL REFERENCES agent.agents (id) ON DELETE CASCADE,
    title       text,
    last_seq    integer     NOT NULL DEFAULT 0,  -- the seq of its newest message
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sessions_agent_idx ON agent.sessions (agent_id, updated_at DESC);

CREATE TABLE agent.messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES agent.sessions (id) ON DELETE CASCADE,
    seq          integer     NOT NULL,
    role         text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content      text        NOT NULL DEFAULT '',
    tool_calls   jsonb       NOT NULL DEFAULT '[]'::jsonb,
    tool_results jsonb       NOT NULL DEFAULT '[]'::jsonb,
    model        text,
    input_tokens  integer,
    output_tokens integer,
    cost_usd     double precision,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, seq)
);
