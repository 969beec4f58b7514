-- Pipeline runs: each pins the version it started with; each node's state, attempts, input,
-- output and error are stored as they change, so a run goes on from any worker after another
-- dies. Circuit breakers are shared by every instance.

CREATE TABLE pipeline.runs (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id     bigint      NOT NULL,
    version         integer     NOT NULL,
    owner_id        bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    input           jsonb       NOT NULL DEFAULT '{}',
    error           jsonb,
    trigger         text        NOT NULL DEFAULT 'manual',
    -- A retry or a fork names the run it came from, and reuses its outputs.
    parent_run_id   bigint      REFERENCES pipeline.runs (id) ON DELETE SET NULL,
    relation        text        CHECK (relation IN ('retry', 'fork')),
    deadline        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    FOREIGN KEY (pipeline_id, version) REFERENCES pipeline.versions (pipeline_id, version)
        ON DELETE CASCADE
);
CREATE INDEX runs_by_pipeline ON pipeline.runs (pipeline_id, id DESC);
CREATE INDEX runs_running_deadline ON pipeline.runs (deadline) WHERE status = 'running';

CREATE TABLE pipeline.node_runs (
    run_id      bigint      NOT NULL REFERENCES pipeline.runs (id) ON DELETE CASCADE,
    node_id     text        NOT NULL,
    status      text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'queued', 'running', 'waiting', 'succeeded',
                                  'failed', 'skipped', 'cancelled')),
    attempt     integer     NOT NULL DEFAULT 0,
    input       jsonb,
    output      jsonb,
    error       jsonb,
    -- The job that runs the node next (procrastinate's id), and when a waiting node wakes.
    job_id      bigint,
    wake_at     timestamptz,
    deadline    timestamptz,
    reused      boolean     NOT NULL DEFAULT false,
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, node_id)
);

CREATE TABLE pipeline.breakers (
    target       text        PRIMARY KEY,
    state        text        NOT NULL DEFAULT 'closed'
                 CHECK (state IN ('closed', 'open', 'half_open')),
    failures     integer     NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now(),
    opened_at    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A pipeline's webhook secret, as its SHA-256 (the secret itself is shown once, when made).
ALTER TABLE pipeline.pipelines ADD COLUMN webhook_secret_hash bytea;
