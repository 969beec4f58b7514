-- Background agent tasks: an agent works on a goal on its own, one step (a model call and the
-- tool calls it asked for) after another, within budgets. Every step is stored before the
-- next starts, and each tool call's state is stored before and after it runs, so a task whose
-- worker died goes on from its last stored step on another worker, and a call that may have
-- had its effect is never made twice. The lease a job takes when it starts the task fences
-- its writes: a job that was replaced (pause, resume, cancel, a second delivery) stores
-- nothing more.

CREATE TABLE scheduler.tasks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id        bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    agent_id        bigint      NOT NULL REFERENCES agent.agents (id) ON DELETE CASCADE,
    goal            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'paused', 'waiting_approval',
                                      'succeeded', 'failed', 'cancelled')),
    -- Budgets: a task stops (failed, code budget_exhausted) before a step would pass one.
    max_steps       integer     NOT NULL CHECK (max_steps > 0),
    max_tokens      bigint      NOT NULL CHECK (max_tokens > 0),
    max_seconds     double precision NOT NULL CHECK (max_seconds > 0),
    max_cost_usd    double precision CHECK (max_cost_usd > 0),
    -- What it has used so far (seconds: the time its steps ran, pauses not counted).
    steps           integer     NOT NULL DEFAULT 0,
    input_tokens    bigint      NOT NULL DEFAULT 0,
    output_tokens   bigint      NOT NULL DEFAULT 0,
    cost_usd        double precision NOT NULL DEFAULT 0,
    active_seconds  double precision NOT NULL DEFAULT 0,
    -- The job running it now (NULL while paused, waiting or ended), and the lease that job
    -- took when it started the task: every write of the job checks it.
    job_id          bigint,
    lease           uuid,
    -- When the run holding the lease last said it works on the task (every 2 s).
    alive_at        timestamptz,
    -- The approval it waits for (status waiting_approval).
    approval_id     bigint,
    result          text,
    error           jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX tasks_of_owner ON scheduler.tasks (owner_id, id DESC);
CREATE INDEX tasks_open ON scheduler.tasks (id)
    WHERE status IN ('queued', 'running', 'waiting_approval');

CREATE TABLE scheduler.task_steps (
    task_id         bigint      NOT NULL REFERENCES scheduler.tasks (id) ON DELETE CASCADE,
    n               integer     NOT NULL CHECK (n > 0),
    -- The model's text (its reasoning, or the final answer on the last step).
    thought         text        NOT NULL DEFAULT '',
    -- The calls it asked for: [{"id", "name", "arguments"}], in order.
    tool_calls      jsonb       NOT NULL DEFAULT '[]',
    -- Per call id: {"status": running|waiting|finished|failed|interrupted|not_run,
    -- "content": the result the model sees}.
    results         jsonb       NOT NULL DEFAULT '{}',
    status          text        NOT NULL DEFAULT 'acting' CHECK (status IN ('acting', 'done')),
    model           text,
    input_tokens    integer     NOT NULL DEFAULT 0,
    output_tokens   integer     NOT NULL DEFAULT 0,
    cost_usd        double precision,
    duration_ms     integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (task_id, n)
);

-- A tool call of a task that waits for a person: answering it takes the task up again.
ALTER TABLE tool.approvals
    ADD COLUMN task_id bigint REFERENCES scheduler.tasks (id) ON DELETE CASCADE;
CREATE UNIQUE INDEX approvals_of_task ON tool.approvals (task_id, call_id)
    WHERE task_id IS NOT NULL;

-- A scheduled run that started a task ends when the task ends.
ALTER TABLE scheduler.runs
    ADD COLUMN task_id bigint REFERENCES scheduler.tasks (id) ON DELETE SET NULL;
CREATE INDEX runs_waiting_on_tasks ON scheduler.runs (id)
    WHERE status = 'running' AND output ? 'task_id';
