-- Sub-pipelines and node claims.
--
-- A run started by a sub_pipeline node names its caller (the run and node that wait for it),
-- and how deep it is in such calls (bounded, so that pipelines calling each other end).

-- A called run outlives its caller's deletion (it belongs to another pipeline): it only stops
-- waking anyone.
ALTER TABLE pipeline.runs
    ADD COLUMN caller_run_id  bigint  REFERENCES pipeline.runs (id) ON DELETE SET NULL,
    ADD COLUMN caller_node_id text,
    ADD COLUMN depth          integer NOT NULL DEFAULT 0 CHECK (depth >= 0);
CREATE INDEX runs_by_caller ON pipeline.runs (caller_run_id) WHERE caller_run_id IS NOT NULL;

-- Each claim of a node by a job counts, and the count fences late writers: a crash repeat
-- keeps its attempt number (and so its idempotency key) but not its claim.
ALTER TABLE pipeline.node_runs ADD COLUMN claims integer NOT NULL DEFAULT 0;
