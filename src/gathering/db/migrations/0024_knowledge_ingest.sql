-- Documents indexed by a job (an upload, a re-embedding): the document is stored first, with
-- its text, as `pending`; the job cuts it into chunks, embeds them and writes them, then makes
-- it `ready` in the same transaction (or `failed`, keeping why). Until then a document keeps
-- the chunks it had (none for a new one): search never sees half of a document.
-- See docs/memory.md.

ALTER TABLE agent.documents
    ADD COLUMN status       text        NOT NULL DEFAULT 'ready'
                                        CHECK (status IN ('pending', 'ready', 'failed')),
    -- Why indexing failed (status 'failed' only).
    ADD COLUMN error        text        CHECK ((error IS NULL) = (status <> 'failed')),
    -- Progress of the indexing job: chunks embedded so far, of how many (NULL: not counted yet).
    ADD COLUMN chunks_done  integer     NOT NULL DEFAULT 0 CHECK (chunks_done >= 0),
    ADD COLUMN chunks_total integer     CHECK (chunks_total >= 0),
    -- The procrastinate job that indexes it; only that job may make it ready.
    ADD COLUMN job_id       bigint,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now();

-- Finds what is still to index (and what failed) without reading every document.
CREATE INDEX documents_unready_idx ON agent.documents (status) WHERE status <> 'ready';
-- Finds the documents embedded with another model (`gathering knowledge reembed`).
CREATE INDEX documents_model_idx ON agent.documents (embedding_model);
