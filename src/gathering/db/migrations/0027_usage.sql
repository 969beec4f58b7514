-- The usage ledger and money budgets.
--
-- `usage.ledger` holds one row per event that costs something: a model call (tokens, cost,
-- latency, outcome), an embedding call (tokens) or a tool call (one call, its duration). Rows
-- name who and what they are charged to by id, without foreign keys: the ledger is an account
-- and outlives the users, agents, circles, runs and tasks it names.
--
-- `usage.budgets` caps the money (USD) and/or tokens spent by one user, agent, circle,
-- pipeline or background task over a period (the current UTC day or month, or all time).
-- Before a model call its estimated cost is reserved in `usage.reservations` (the budget row
-- locked FOR UPDATE, so reservations of one budget are serialised); the ledger row written
-- after the call deletes the reservation, and adds to `usage.budget_spending`, in the same
-- statement. A reservation whose process
-- died expires at `expires_at` and stops counting.

CREATE SCHEMA IF NOT EXISTS usage;

CREATE TABLE usage.ledger (
    id               bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz      NOT NULL DEFAULT now(),
    kind             text             NOT NULL CHECK (kind IN ('model', 'embedding', 'tool')),
    user_id          bigint,
    agent_id         bigint,
    circle_id        bigint,
    pipeline_id      bigint,
    pipeline_run_id  bigint,
    task_id          bigint,
    provider         text             NOT NULL DEFAULT '',
    -- The model, or for a tool call the tool's name.
    model            text             NOT NULL DEFAULT '',
    input_tokens     bigint           NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens    bigint           NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    calls            integer          NOT NULL DEFAULT 1 CHECK (calls >= 0),
    -- USD at the catalog's price at call time; NULL when the model has no known price.
    cost_usd         double precision CHECK (cost_usd >= 0),
    latency_ms       integer          CHECK (latency_ms >= 0),
    -- ok, cancelled, or the error code of a failed call (provider_error, timeout, ...).
    outcome          text             NOT NULL DEFAULT 'ok',
    -- The tokens are an estimate: the provider reported no usage for the call.
    estimated        boolean          NOT NULL DEFAULT false,
    -- The model call's id (its budget reservation's, when it reserved one): a row retried on
    -- another connection is written once.
    call_id          uuid
);
CREATE UNIQUE INDEX usage_ledger_call ON usage.ledger (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX usage_ledger_at ON usage.ledger (at);
CREATE INDEX usage_ledger_user ON usage.ledger (user_id, at);
CREATE INDEX usage_ledger_agent ON usage.ledger (agent_id, at);
CREATE INDEX usage_ledger_circle ON usage.ledger (circle_id, at) WHERE circle_id IS NOT NULL;
CREATE INDEX usage_ledger_pipeline ON usage.ledger (pipeline_id, at)
    WHERE pipeline_id IS NOT NULL;
CREATE INDEX usage_ledger_task ON usage.ledger (task_id, at) WHERE task_id IS NOT NULL;

CREATE TABLE usage.budgets (
    id            bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope         text             NOT NULL
                  CHECK (scope IN ('user', 'agent', 'circle', 'pipeline', 'task')),
    target_id     bigint           NOT NULL CHECK (target_id > 0),
    -- day and month are UTC calendar periods; total never resets.
    period        text             NOT NULL CHECK (period IN ('day', 'month', 'total')),
    limit_usd     double precision CHECK (limit_usd > 0),
    limit_tokens  bigint           CHECK (limit_tokens > 0),
    warn_percent  integer          NOT NULL DEFAULT 80 CHECK (warn_percent BETWEEN 1 AND 100),
    created_by    bigint,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CHECK (limit_usd IS NOT NULL OR limit_tokens IS NOT NULL),
    UNIQUE (scope, target_id, period)
);

CREATE TABLE usage.reservations (
    id          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One model call reserves on every budget it is charged to, under one call id.
    call_id     uuid             NOT NULL,
    budget_id   bigint           NOT NULL REFERENCES usage.budgets (id) ON DELETE CASCADE,
    cost_usd    double precision NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    tokens      bigint           NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    created_at  timestamptz      NOT NULL DEFAULT now(),
    expires_at  timestamptz      NOT NULL
);
CREATE INDEX usage_reservations_call ON usage.reservations (call_id);
CREATE INDEX usage_reservations_budget ON usage.reservations (budget_id, expires_at);

-- What each budget's period has spent (its ledger rows' sums), kept up to date by the
-- statement that writes a ledger row, so that a reservation reads one row instead of summing
-- the period's history. period_start is the start of the UTC day or month, or -infinity for
-- total; a budget's counter is seeded from the ledger when the budget is created.
CREATE TABLE usage.budget_spending (
    budget_id     bigint           NOT NULL REFERENCES usage.budgets (id) ON DELETE CASCADE,
    period_start  timestamptz      NOT NULL,
    spent_usd     double precision NOT NULL DEFAULT 0,
    spent_tokens  bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start)
);

-- The budget events already sent: budget.warning and budget.exceeded once per budget and
-- period (period_start is the start of the UTC day or month, or -infinity for total).
CREATE TABLE usage.budget_alerts (
    budget_id     bigint      NOT NULL REFERENCES usage.budgets (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('warning', 'exceeded')),
    period_start  timestamptz NOT NULL,
    sent_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, kind, period_start)
);
