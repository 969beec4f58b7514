-- The statements of `gathering.agents` (see gathering/db/named_queries.py). The hybrid search
-- of memories and documents, and the writes whose columns depend on pgvector, are composed
-- with psycopg.sql in retrieval.py, knowledge.py and long_term_memory.py.

-- agents --------------------------------------------------------------------------------------

-- name: insert_agent --
INSERT INTO agent.agents (name, provider, model, persona, config, owner_id)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: insert_or_find_agent --
-- Insert, or return (and lock) the stored agent of that owner and name: `inserted` tells which.
INSERT INTO agent.agents (name, provider, model, persona, config, owner_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (owner_id, lower(name)) DO UPDATE SET name = agent.agents.name
RETURNING *, (xmax = 0) AS inserted

-- name: update_agent --
UPDATE agent.agents
SET name = $2, provider = $3, model = $4, persona = $5, config = $6, updated_at = now()
WHERE id = $1
RETURNING *

-- name: agents --
-- The agents with id $1, with name $2 (any case) and of owner $3 (each NULL: any), by name.
SELECT * FROM agent.agents
WHERE ($1::bigint IS NULL OR id = $1)
  AND ($2::text IS NULL OR lower(name) = lower($2))
  AND ($3::bigint IS NULL OR owner_id = $3)
ORDER BY lower(name), id

-- name: agent_owner --
SELECT owner_id FROM agent.agents WHERE id = $1

-- name: delete_agent --
DELETE FROM agent.agents WHERE id = $1 RETURNING id

-- name: local_owner_id --
SELECT id FROM auth.users WHERE is_local_owner

-- conversations ---------------------------------------------------------------------------------

-- name: begin_turn --
-- Take the turn lock (unless it is held already) and begin the turn, in one round trip.
SELECT * FROM agent.begin_turn($1, $2, $3)

-- name: latest_session --
SELECT id FROM agent.sessions WHERE agent_id = $1 ORDER BY created_at DESC LIMIT 1

-- name: new_session --
INSERT INTO agent.sessions (agent_id)
SELECT id FROM agent.agents WHERE id = $1
RETURNING id::text AS id

-- name: session_messages --
-- The last $2 messages of session $1 (all when NULL), oldest first; with $3 only those a model
-- may see (no error entries, nothing of a failed turn).
SELECT * FROM (
    SELECT m.seq, m.role, m.content, m.tool_calls, m.tool_results, m.model, m.input_tokens,
           m.output_tokens, m.cost_usd, m.created_at, m.turn_id::text AS turn_id
    FROM agent.messages m LEFT JOIN agent.turns t ON t.id = m.turn_id
    WHERE m.session_id = $1
      AND (NOT $3::boolean OR (m.role <> 'error' AND t.status IS DISTINCT FROM 'failed'))
    ORDER BY m.seq DESC
    LIMIT $2
) w
ORDER BY seq

-- name: clear_session --
-- Clearing moves the counter on, so no process mistakes its cached tail for the current one.
WITH d AS (DELETE FROM agent.messages WHERE session_id = $1)
UPDATE agent.sessions SET last_seq = last_seq + 1, updated_at = now() WHERE id = $1
RETURNING last_seq

-- name: append_messages --
-- Store the messages of the JSON array $2 of turn $3 at the end of session $1, numbered by
-- bumping the session's counter in the same statement (its row lock orders the writers, so
-- seqs have no gaps or duplicates on any instance); `last_seq` is NULL when the session is
-- gone. In the same statement, each part skipped when its parameter is NULL: the tool calls of
-- the JSON array $4 start; the turn ends ($5 'completed' with result $6, or 'failed' with error
-- $6, which interrupts its started tool calls) or waits for an approval ($5 'waiting', with the
-- result $6 a replay returns); and the turn lock $7 is released once the
-- session row is locked (the next holder reads that row FOR UPDATE in agent.begin_turn, so it
-- waits for this statement's commit and never sees the conversation without it).
WITH s AS (
    UPDATE agent.sessions
    SET last_seq = last_seq + jsonb_array_length($2::jsonb), updated_at = now()
    WHERE id = $1
    RETURNING last_seq
), m AS (
    INSERT INTO agent.messages (session_id, turn_id, seq, role, content, tool_calls,
                                tool_results, model, input_tokens, output_tokens, cost_usd)
    SELECT $1, $3::uuid, s.last_seq - jsonb_array_length($2::jsonb) + e.ord, e.v->>'role',
           e.v->>'content', e.v->'tool_calls', e.v->'tool_results', e.v->>'model',
           (e.v->>'input_tokens')::integer, (e.v->>'output_tokens')::integer,
           (e.v->>'cost_usd')::double precision
    FROM s, jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(v, ord)
), c AS (
    INSERT INTO agent.tool_calls (turn_id, call_id, name, arguments)
    SELECT $3::uuid, x->>'id', x->>'name', coalesce(x->'arguments', '{}'::jsonb)
    FROM jsonb_array_elements($4::jsonb) AS x
), t AS (
    UPDATE agent.turns
    SET status = $5::text, finished_at = CASE WHEN $5::text = 'waiting' THEN NULL ELSE now() END,
        result = CASE WHEN $5::text IN ('completed', 'waiting') THEN $6::jsonb ELSE result END,
        error = CASE WHEN $5::text = 'failed' THEN $6::jsonb ELSE error END
    WHERE id = $3::uuid
      AND ($5::text IN ('completed', 'waiting') OR ($5::text = 'failed' AND status = 'running'))
), i AS (
    UPDATE agent.tool_calls SET status = 'interrupted', finished_at = now()
    WHERE $5::text = 'failed' AND turn_id = $3::uuid AND status IN ('started', 'waiting', 'queued')
), a AS (
    UPDATE tool.approvals SET state = 'expired', decided_at = now(), resumed_at = now()
    WHERE $5::text = 'failed' AND turn_id = $3::uuid AND state = 'pending'
)
SELECT (SELECT last_seq FROM s) AS last_seq,
       (SELECT pg_advisory_unlock($7::bigint) FROM s WHERE $7::bigint IS NOT NULL) AS released

-- name: tool_finished --
UPDATE agent.tool_calls SET status = $3, result = $4, finished_at = now()
WHERE turn_id = $1::uuid AND call_id = $2

-- name: call_running --
-- An approved call of resumed turn $1 is about to run: from here its outcome may be unknown.
UPDATE agent.tool_calls SET status = 'started' WHERE turn_id = $1::uuid AND call_id = $2

-- name: tools_waiting --
-- Turn $1 waits for an approval of call $2; the calls $3 after it have not started.
UPDATE agent.tool_calls
SET status = CASE WHEN call_id = $2 THEN 'waiting' ELSE 'queued' END
WHERE turn_id = $1::uuid AND (call_id = $2 OR call_id = ANY($3::text[]))

-- name: resume_turn --
-- Take up waiting turn $1 of agent $2 again once none of its approvals is pending (no row: it
-- is not waiting, still waits, or is gone), and mark its answered approvals picked up.
WITH t AS (
    UPDATE agent.turns SET status = 'running'
    WHERE id = $1::uuid AND agent_id = $2 AND status = 'waiting'
      AND NOT EXISTS (SELECT 1 FROM tool.approvals a
                      WHERE a.turn_id = $1::uuid AND a.state = 'pending')
    RETURNING id, session_id, idempotency_key
), a AS (
    UPDATE tool.approvals SET resumed_at = now()
    WHERE turn_id IN (SELECT id FROM t) AND state <> 'pending' AND resumed_at IS NULL
)
SELECT t.session_id,
       (SELECT m.content FROM agent.messages m WHERE m.turn_id = t.id AND m.role = 'user'
        ORDER BY m.seq LIMIT 1) AS text,
       (SELECT count(*) FROM agent.messages m WHERE m.turn_id = t.id AND m.role = 'assistant')
           AS iterations,
       t.idempotency_key IS NOT NULL AS keyed
FROM t

-- name: turn_tool_calls --
SELECT call_id, name, status, result FROM agent.tool_calls WHERE turn_id = $1::uuid

-- memories and documents --------------------------------------------------------------------

-- name: text_search_config_exists --
SELECT 1 FROM pg_ts_config WHERE cfgname = $1

-- name: vector_support --
-- Whether the server has pgvector, and whether the memory tables have their vector columns.
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') AS extension,
       EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'agent.memories'::regclass
               AND attname = 'embedding' AND NOT attisdropped)
       AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'agent.chunks'::regclass
                   AND attname = 'embedding' AND NOT attisdropped) AS columns

-- name: set_memory_embeddings --
-- Give memories $1 the vectors $2 (text form) made by model $3 (needs pgvector).
UPDATE agent.memories AS t SET embedding = v.embedding::vector, embedding_model = $3
FROM unnest($1::bigint[], $2::text[]) AS v(id, embedding)
WHERE t.id = v.id

-- name: touch_memories --
-- Count a recall of memories $1.
UPDATE agent.memories SET last_accessed_at = now(), access_count = access_count + 1
WHERE id = ANY($1::bigint[])
RETURNING id, last_accessed_at, access_count

-- name: delete_memory --
-- Delete memory $1 of owner $2 (of anyone when NULL).
DELETE FROM agent.memories WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2) RETURNING id

-- name: insert_document --
-- A document's row (its chunks are inserted after it, in the same transaction), `ready`; or
-- `pending` ($12), for a job to index.
INSERT INTO agent.documents AS d (owner_id, agent_id, title, category, scope, scope_id, source,
                                  metadata, content, language, embedding_model, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::regconfig, $11, $12)
RETURNING d.id, d.created_at

-- name: lock_document --
-- Document $1, locked for an edit, with what the edit compares and keeps.
SELECT id, title, category, metadata, content, language::text AS language, updated_at
FROM agent.documents WHERE id = $1 FOR UPDATE

-- name: update_document --
UPDATE agent.documents
SET title = $2, category = $3, metadata = $4::jsonb, content = $5, updated_at = now()
WHERE id = $1

-- name: delete_chunks --
DELETE FROM agent.chunks WHERE document_id = $1

-- name: document_indexed --
-- Document $1 has its chunks now, embedded with model $2 (none: NULL), $3 of them.
UPDATE agent.documents
SET status = 'ready', error = NULL, job_id = NULL, embedding_model = $2, chunks_done = $3,
    chunks_total = $3, updated_at = now()
WHERE id = $1

-- name: set_indexing_job --
-- Document $1 waits for job $2 to index it.
UPDATE agent.documents
SET status = 'pending', job_id = $2, error = NULL, chunks_done = 0, chunks_total = NULL,
    updated_at = now()
WHERE id = $1

-- name: document_to_index --
SELECT id, title, content, language::text AS language, status, job_id
FROM agent.documents WHERE id = $1

-- name: index_progress --
-- Job $2 has embedded $3 of the $4 chunks of document $1.
UPDATE agent.documents SET chunks_done = $3, chunks_total = $4, updated_at = now()
WHERE id = $1 AND job_id = $2 AND status = 'pending'

-- name: lock_indexing_document --
-- Document $1, locked, while job $2 may still make it ready.
SELECT id FROM agent.documents WHERE id = $1 AND job_id = $2 AND status = 'pending' FOR UPDATE

-- name: document_index_failed --
UPDATE agent.documents SET status = 'failed', error = $3, job_id = NULL, updated_at = now()
WHERE id = $1 AND job_id = $2 AND status = 'pending'
RETURNING id

-- name: documents_to_reindex --
-- What to index again (of owner $2; everyone's when NULL), at most $3, locked; those another
-- transaction holds are skipped: failed documents, pending ones whose job no longer runs,
-- and, with model $1, ready ones embedded with another model or none.
SELECT d.id
FROM agent.documents d
LEFT JOIN procrastinate_jobs j ON j.id = d.job_id
WHERE ($2::bigint IS NULL OR d.owner_id = $2)
  AND (d.status = 'failed'
       OR (d.status = 'pending' AND (j.id IS NULL OR j.status::text NOT IN ('todo', 'doing')))
       OR (d.status = 'ready' AND $1::text IS NOT NULL
           AND d.embedding_model IS DISTINCT FROM $1::text))
ORDER BY d.id
LIMIT $3
FOR UPDATE OF d SKIP LOCKED
