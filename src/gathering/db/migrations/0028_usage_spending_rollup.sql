-- The ledger's spending per kind, provider and model, rolled up for the Prometheus exposition.
--
-- Every ledger row is queued (its id in `usage.spending_queue`, by a statement trigger) when
-- it is written. A scrape folds queued rows into `usage.spending_rollup`, taking them off the
-- queue in the same statement, and reads the rollup plus the rows still queued: each row
-- counts once, whichever instance folded it, the ledger itself is never updated (no rewrite
-- of its rows, no lock that its writers wait for), and a scrape reads the rows written since
-- the last fold instead of the whole ledger. A row of a transaction still open is not
-- visible to a fold: a later one folds it.
--
-- A group gets its `seq` when first folded; the first 500 groups are exported as their own
-- series, the others summed as `other`, for good: a series never moves between the two, so
-- each stays a counter that only grows.

CREATE TABLE usage.spending_queue (
    ledger_id bigint PRIMARY KEY
);

CREATE TABLE usage.spending_rollup (
    seq            bigint           GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind           text             NOT NULL,
    provider       text             NOT NULL,
    model          text             NOT NULL,
    calls          bigint           NOT NULL DEFAULT 0,
    input_tokens   bigint           NOT NULL DEFAULT 0,
    output_tokens  bigint           NOT NULL DEFAULT 0,
    cost_usd       double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, provider, model)
);

CREATE FUNCTION usage.queue_for_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage.spending_queue (ledger_id) SELECT id FROM added;
    RETURN NULL;
END;
$$;

CREATE TRIGGER usage_ledger_queue_for_rollup
AFTER INSERT ON usage.ledger
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION usage.queue_for_rollup();

-- The rows written before this migration wait for their first fold.
INSERT INTO usage.spending_queue (ledger_id) SELECT id FROM usage.ledger;
