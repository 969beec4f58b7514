-- Long-term memory and the knowledge base. Full-text search always; `embedding vector` columns
-- (pgvector) only where the extension is installed. See docs/memory.md.

-- OR of tsqueries: the loose query "any of these words" built from a query's lexemes.
CREATE AGGREGATE agent.tsquery_or_agg (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);

CREATE TABLE agent.memories (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id         bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    -- The agent whose private memory this is (scope 'agent' only).
    agent_id         bigint      REFERENCES agent.agents (id) ON DELETE CASCADE,
    -- The agent that wrote it, in any scope; kept as NULL when that agent is deleted.
    source_agent_id  bigint      REFERENCES agent.agents (id) ON DELETE SET NULL,
    scope            text        NOT NULL DEFAULT 'agent'
                                 CHECK (scope IN ('agent', 'circle', 'project', 'global')),
    scope_id         text,
    kind             text        NOT NULL DEFAULT 'fact' CHECK (kind ~ '^[a-z][a-z0-9_]{0,31}$'),
    content          text        NOT NULL CHECK (length(btrim(content)) > 0),
    importance       real        NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0 AND 1),
    tags             text[]      NOT NULL DEFAULT '{}',
    language         regconfig   NOT NULL DEFAULT 'english',
    tsv              tsvector    GENERATED ALWAYS AS (to_tsvector(language, content)) STORED,
    embedding_model  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz,
    access_count     integer     NOT NULL DEFAULT 0 CHECK (access_count >= 0),
    -- scope_id names the agent, circle or project; a global memory has none.
    CONSTRAINT memories_scope_target CHECK (
        coalesce(CASE scope
            WHEN 'agent' THEN agent_id IS NOT NULL AND scope_id = agent_id::text
            WHEN 'global' THEN agent_id IS NULL AND scope_id IS NULL
            ELSE agent_id IS NULL AND length(btrim(scope_id)) > 0
        END, false)
    )
);

CREATE INDEX memories_tsv_idx ON agent.memories USING gin (tsv);
CREATE INDEX memories_scope_idx ON agent.memories (owner_id, scope, scope_id);
CREATE INDEX memories_agent_idx ON agent.memories (agent_id, created_at DESC);
CREATE INDEX memories_tags_idx ON agent.memories USING gin (tags);

-- A memory of an agent belongs to the agent's owner; anything else is refused.
CREATE FUNCTION agent.owner_from_agent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    agent_owner bigint;
BEGIN
    IF NEW.agent_id IS NOT NULL THEN
        SELECT owner_id INTO agent_owner FROM agent.agents WHERE id = NEW.agent_id;
        IF agent_owner IS NOT NULL THEN
            IF NEW.owner_id IS NULL THEN
                NEW.owner_id := agent_owner;
            ELSIF NEW.owner_id <> agent_owner THEN
                RAISE EXCEPTION 'agent % belongs to another owner', NEW.agent_id
                    USING ERRCODE = 'check_violation';
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- Triggers fire in name order: take the agent's owner first, then fall back to the local owner.
CREATE TRIGGER memories_1_owner_from_agent BEFORE INSERT OR UPDATE OF agent_id, owner_id
    ON agent.memories FOR EACH ROW EXECUTE FUNCTION agent.owner_from_agent();
CREATE TRIGGER memories_2_fill_owner BEFORE INSERT ON agent.memories
    FOR EACH ROW EXECUTE FUNCTION agent.fill_owner();

CREATE TABLE agent.documents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    agent_id    bigint      REFERENCES agent.agents (id) ON DELETE CASCADE,
    title       text        NOT NULL CHECK (length(btrim(title)) > 0),
    category    text        NOT NULL DEFAULT 'general' CHECK (length(btrim(category)) > 0),
    scope       text        NOT NULL DEFAULT 'global'
                            CHECK (scope IN ('agent', 'circle', 'project', 'global')),
    scope_id    text,
    source      text,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    content     text        NOT NULL CHECK (length(btrim(content)) > 0),
    language    regconfig   NOT NULL DEFAULT 'english',
    embedding_model text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_scope_target CHECK (
        coalesce(CASE scope
            WHEN 'agent' THEN agent_id IS NOT NULL AND scope_id = agent_id::text
            WHEN 'global' THEN agent_id IS NULL AND scope_id IS NULL
            ELSE agent_id IS NULL AND length(btrim(scope_id)) > 0
        END, false)
    )
);

CREATE INDEX documents_scope_idx ON agent.documents (owner_id, scope, scope_id);
CREATE INDEX documents_category_idx ON agent.documents (owner_id, category, created_at DESC);

CREATE TRIGGER documents_1_owner_from_agent BEFORE INSERT OR UPDATE OF agent_id, owner_id
    ON agent.documents FOR EACH ROW EXECUTE FUNCTION agent.owner_from_agent();
CREATE TRIGGER documents_2_fill_owner BEFORE INSERT ON agent.documents
    FOR EACH ROW EXECUTE FUNCTION agent.fill_owner();

CREATE TABLE agent.chunks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id  bigint    NOT NULL REFERENCES agent.documents (id) ON DELETE CASCADE,
    seq          integer   NOT NULL CHECK (seq >= 0),
    start_char   integer   NOT NULL CHECK (start_char >= 0),
    end_char     integer   NOT NULL CHECK (end_char > start_char),
    content      text      NOT NULL CHECK (length(btrim(content)) > 0),
    -- The document's title (weight A) and the chunk's text, in the document's language:
    -- written with the chunk, since a generated column cannot read the documents table.
    tsv          tsvector  NOT NULL,
    embedding_model text,
    UNIQUE (document_id, seq)
);

CREATE INDEX chunks_tsv_idx ON agent.chunks USING gin (tsv);

-- pgvector is optional. The columns have no fixed dimension, so vectors of several models can
-- live side by side (each row names its model); search compares only vectors of one model.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        ALTER TABLE agent.memories ADD COLUMN embedding vector;
        ALTER TABLE agent.chunks ADD COLUMN embedding vector;
        ALTER TABLE agent.memories ADD CONSTRAINT memories_embedding_model
            CHECK ((embedding IS NULL) = (embedding_model IS NULL));
        ALTER TABLE agent.chunks ADD CONSTRAINT chunks_embedding_model
            CHECK ((embedding IS NULL) = (embedding_model IS NULL));
    END IF;
END
$$;
