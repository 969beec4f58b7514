-- Tool policies per agent, and human approvals.
--
-- `policy` NULL means the tool's default: `ask` for external tools and for tools that ask by
-- default (shell, python), `allow` otherwise.

ALTER TABLE tool.agent_tools
    ALTER COLUMN enabled SET DEFAULT false,
    ADD COLUMN policy text CHECK (policy IN ('allow', 'ask', 'deny'));

-- A call that waits for a person. `turn_id` is the turn it belongs to (NULL: a call made
-- through POST /tools/{name}/invoke, whose outcome is kept here once it ran).
CREATE TABLE tool.approvals (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id     bigint      NOT NULL REFERENCES agent.agents (id) ON DELETE CASCADE,
    owner_id     bigint      REFERENCES auth.users (id) ON DELETE CASCADE,
    turn_id      uuid        REFERENCES agent.turns (id) ON DELETE CASCADE,
    call_id      text        NOT NULL CHECK (length(call_id) BETWEEN 1 AND 200),
    tool_name    text        NOT NULL,
    arguments    jsonb       NOT NULL,
    effect       text        NOT NULL CHECK (effect IN ('read', 'write', 'external')),
    reason       text        NOT NULL,
    requested_by bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    state        text        NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    decided_by   bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    decided_at   timestamptz,
    comment      text        CHECK (length(comment) <= 2000),
    outcome      jsonb,      -- a direct invocation's result once it ran: {is_error, output|error}
    resumed_at   timestamptz, -- when its turn (or invocation) was picked up after the decision
    CHECK ((state = 'pending') = (decided_at IS NULL))
);

CREATE UNIQUE INDEX approvals_call_idx ON tool.approvals (turn_id, call_id) WHERE turn_id IS NOT NULL;
CREATE INDEX approvals_inbox_idx ON tool.approvals (owner_id, state, id DESC);
CREATE INDEX approvals_due_idx ON tool.approvals (expires_at) WHERE state = 'pending';
CREATE INDEX approvals_to_resume_idx ON tool.approvals (decided_at)
    WHERE state <> 'pending' AND resumed_at IS NULL;

-- A turn may wait for approvals: `waiting` holds no lock and no process; the call it waits on
-- is `waiting`, the calls after it in the same reply `queued` (not started).
ALTER TABLE agent.turns DROP CONSTRAINT turns_status_check;
ALTER TABLE agent.turns ADD CONSTRAINT turns_status_check
    CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'interrupted'));
CREATE INDEX turns_waiting_idx ON agent.turns (agent_id) WHERE status = 'waiting';

ALTER TABLE agent.tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE agent.tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN ('started', 'waiting', 'queued', 'finished', 'failed', 'interrupted'));

-- begin_turn as in 0007, and: `waiting` is the agent's turn that waits for an approval; a new
-- turn is not stored while one waits (its messages would land in the middle of that turn's
-- tool calls), so the caller can refuse it.
DROP FUNCTION agent.begin_turn(bigint, bigint, jsonb);

CREATE FUNCTION agent.begin_turn(
    p_agent_id bigint, p_lock_key bigint, p_turn jsonb,
    OUT locked boolean, OUT session_id uuid, OUT last_seq integer, OUT interrupted text[],
    OUT memories boolean, OUT stored jsonb, OUT new_turn_id uuid, OUT waiting uuid
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := p_lock_key IS NULL OR pg_try_advisory_lock(p_lock_key);
    IF NOT locked THEN
        RETURN;
    END IF;
    PERFORM 1 FROM agent.agents a WHERE a.id = p_agent_id FOR KEY SHARE;
    SELECT s.id, s.last_seq INTO session_id, last_seq
        FROM agent.sessions s WHERE s.agent_id = p_agent_id ORDER BY s.created_at DESC LIMIT 1
        FOR UPDATE;
    WITH t AS (
        UPDATE agent.turns SET status = 'interrupted', finished_at = now(),
            error = '{"code": "interrupted", "message": "the turn was interrupted (crash, cancel or deploy); the outcome of a tool that had started is unknown"}'
        WHERE agent_id = p_agent_id AND status = 'running' RETURNING id
    ), c AS (
        UPDATE agent.tool_calls c SET status = 'interrupted', finished_at = now()
        FROM t WHERE c.turn_id = t.id AND c.status IN ('started', 'waiting', 'queued')
    ), a AS (
        -- Nobody can answer for a turn that is over: its pending approvals expire.
        UPDATE tool.approvals ap SET state = 'expired', decided_at = now(), resumed_at = now()
        FROM t WHERE ap.turn_id = t.id AND ap.state = 'pending'
    )
    SELECT coalesce(array_agg(t.id::text), '{}') INTO interrupted FROM t;
    memories := EXISTS (SELECT 1 FROM agent.memories m JOIN agent.agents a ON a.owner_id = m.owner_id
                        WHERE a.id = p_agent_id);
    IF p_turn IS NULL AND session_id IS NOT NULL THEN
        RETURN;
    END IF;
    IF p_turn ->> 'key' IS NOT NULL THEN
        SELECT jsonb_build_object('id', t.id, 'status', t.status, 'request_text', t.request_text,
                                  'result', t.result, 'error', t.error)
            INTO stored
            FROM agent.turns t WHERE t.agent_id = p_agent_id AND t.idempotency_key = p_turn ->> 'key';
        IF stored IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    SELECT t.id INTO waiting FROM agent.turns t
        WHERE t.agent_id = p_agent_id AND t.status = 'waiting' LIMIT 1;
    IF waiting IS NOT NULL THEN
        RETURN;
    END IF;
    IF session_id IS NULL OR (coalesce((p_turn ->> 'new_session')::boolean, false) AND last_seq > 0) THEN
        INSERT INTO agent.sessions (agent_id) SELECT a.id FROM agent.agents a WHERE a.id = p_agent_id
            RETURNING id INTO session_id;
        last_seq := 0;
        IF session_id IS NULL OR p_turn IS NULL THEN
            RETURN;
        END IF;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    new_turn_id := (p_turn ->> 'id')::uuid;
    INSERT INTO agent.turns (id, session_id, agent_id, idempotency_key, request_text)
        VALUES (new_turn_id, session_id, p_agent_id, p_turn ->> 'key',
                CASE WHEN p_turn ->> 'key' IS NOT NULL THEN p_turn ->> 'text' END);
    UPDATE agent.sessions s SET last_seq = s.last_seq + 1, updated_at = now()
        WHERE s.id = session_id RETURNING s.last_seq INTO last_seq;
    INSERT INTO agent.messages (session_id, turn_id, seq, role, content)
        VALUES (session_id, new_turn_id, last_seq, 'user', p_turn ->> 'text');
END
$$;
