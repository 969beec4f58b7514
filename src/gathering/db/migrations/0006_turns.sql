-- Turns: each exchange (a user message, the model calls and tools it caused, the reply) is a
-- row with a status, so a failed, interrupted or retried turn leaves a clear record. Tool calls
-- record whether their side effect may have happened.

CREATE TABLE agent.turns (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id       uuid        NOT NULL REFERENCES agent.sessions (id) ON DELETE CASCADE,
    agent_id         bigint      NOT NULL REFERENCES agent.agents (id) ON DELETE CASCADE,
    status           text        NOT NULL DEFAULT 'running'
                                 CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    idempotency_key  text        CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_text     text,       -- kept only with an idempotency key, to refuse a reused key
    result           jsonb,      -- the reply as returned, kept only with an idempotency key
    error            jsonb,      -- {code, message} of a failed or interrupted turn
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

CREATE UNIQUE INDEX turns_idempotency_key ON agent.turns (agent_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX turns_running_idx ON agent.turns (agent_id) WHERE status = 'running';

ALTER TABLE agent.messages ADD COLUMN turn_id uuid REFERENCES agent.turns (id) ON DELETE CASCADE;
CREATE INDEX messages_turn_idx ON agent.messages (turn_id);

-- An `error` entry records why a turn failed; it is shown in the history, never sent to a model.
ALTER TABLE agent.messages DROP CONSTRAINT messages_role_check;
ALTER TABLE agent.messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ('system', 'user', 'assistant', 'tool', 'error'));

CREATE TABLE agent.tool_calls (
    turn_id      uuid        NOT NULL REFERENCES agent.turns (id) ON DELETE CASCADE,
    call_id      text        NOT NULL,
    name         text        NOT NULL,
    arguments    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL DEFAULT 'started'
                             CHECK (status IN ('started', 'finished', 'failed', 'interrupted')),
    result       text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (turn_id, call_id)
);

-- The current session of an agent is its newest one.
CREATE INDEX sessions_agent_created_idx ON agent.sessions (agent_id, created_at DESC);

-- What a turn needs to know at its start, in one round trip: the agent's current session, its
-- last sequence number, turns left running by a holder that died, and whether its owner has
-- any memories to recall.
-- plpgsql, not sql: its statements' plans are cached across calls.
CREATE FUNCTION agent.turn_state(
    p_agent_id bigint,
    OUT session_id text, OUT last_seq integer, OUT running text[], OUT memories boolean
) LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT s.id::text, s.last_seq INTO session_id, last_seq
        FROM agent.sessions s WHERE s.agent_id = p_agent_id ORDER BY s.created_at DESC LIMIT 1;
    running := ARRAY(SELECT t.id::text FROM agent.turns t
                     WHERE t.agent_id = p_agent_id AND t.status = 'running');
    memories := EXISTS (SELECT 1 FROM agent.memories m JOIN agent.agents a ON a.owner_id = m.owner_id
                        WHERE a.id = p_agent_id);
END
$$;

-- Take an agent's turn lock without waiting and, when it is taken, read `turn_state`.
-- VOLATILE: the state is read with a snapshot taken after the lock is held, so it sees the
-- last holder's final commit.
CREATE FUNCTION agent.try_begin_turn(
    p_agent_id bigint, p_lock_key bigint,
    OUT locked boolean, OUT session_id text, OUT last_seq integer, OUT running text[],
    OUT memories boolean
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := pg_try_advisory_lock(p_lock_key);
    IF locked THEN
        SELECT * INTO session_id, last_seq, running, memories FROM agent.turn_state(p_agent_id);
    END IF;
END
$$;
