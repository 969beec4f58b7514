-- A turn begins in one round trip: take the agent's turn lock, read its current session,
-- close the turns a dead holder left running, and (for a new turn) replay a known
-- idempotency key or store the turn with its user message.

DROP FUNCTION agent.try_begin_turn(bigint, bigint);
DROP FUNCTION agent.turn_state(bigint);

-- p_lock_key: the lock to try without waiting, or NULL when the caller already holds it.
-- p_turn: NULL to only open the conversation, else
--   {"id": uuid, "text": the user message, "key": idempotency key or null,
--    "new_session": whether to start in a fresh session (kept when the current one is unused)}.
-- Returns locked = false and nothing else when the lock is held elsewhere. `stored` is the
-- turn already started with p_turn's key (nothing is written then). `session_id` is NULL when
-- the agent is gone. `new_turn_id` is set when the turn was stored; `last_seq` then counts
-- its user message.
-- plpgsql, so its plans are cached; VOLATILE, so each statement reads with a snapshot of its
-- own, taken after the lock is held and the last holder's final commit is done.
CREATE FUNCTION agent.begin_turn(
    p_agent_id bigint, p_lock_key bigint, p_turn jsonb,
    OUT locked boolean, OUT session_id uuid, OUT last_seq integer, OUT interrupted text[],
    OUT memories boolean, OUT stored jsonb, OUT new_turn_id uuid
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := p_lock_key IS NULL OR pg_try_advisory_lock(p_lock_key);
    IF NOT locked THEN
        RETURN;
    END IF;
    -- Rows are locked in the order a deletion of the agent locks them (the agent, then its
    -- session), so the two never deadlock.
    PERFORM 1 FROM agent.agents a WHERE a.id = p_agent_id FOR KEY SHARE;
    -- FOR UPDATE: the last holder releases the lock in its last statement, before that
    -- statement commits; it has the session row locked by then, so this waits for the commit.
    SELECT s.id, s.last_seq INTO session_id, last_seq
        FROM agent.sessions s WHERE s.agent_id = p_agent_id ORDER BY s.created_at DESC LIMIT 1
        FOR UPDATE;
    WITH t AS (
        UPDATE agent.turns SET status = 'interrupted', finished_at = now(),
            error = '{"code": "interrupted", "message": "the turn was interrupted (crash, cancel or deploy); the outcome of a tool that had started is unknown"}'
        WHERE agent_id = p_agent_id AND status = 'running' RETURNING id
    ), c AS (
        UPDATE agent.tool_calls c SET status = 'interrupted', finished_at = now()
        FROM t WHERE c.turn_id = t.id AND c.status = 'started'
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
    IF session_id IS NULL OR (coalesce((p_turn ->> 'new_session')::boolean, false) AND last_seq > 0) THEN
        INSERT INTO agent.sessions (agent_id) SELECT a.id FROM agent.agents a WHERE a.id = p_agent_id
            RETURNING id INTO session_id;
        last_seq := 0;
        IF session_id IS NULL OR p_turn IS NULL THEN
            RETURN;  -- the agent is gone, or there was only a session to open
        END IF;
    END IF;
    -- The turn's start need not wait for the disk: nothing is acknowledged to anyone before
    -- the turn's next synchronous commit on this connection (a tool call, an event, its end),
    -- and that flushes the log up to this commit first.
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
