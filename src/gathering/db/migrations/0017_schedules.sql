-- Schedules: when something runs (cron in a time zone, an interval anchored to its slots, once,
-- an event on the bus), what runs (an action), and the runs themselves, one per slot (or
-- event): the unique (schedule, slot) row is inserted in the transaction that advances
-- next_run_at (or the event cursor) and queues the run's job, so a slot runs once however
-- many instances claim at the same moment.

CREATE SCHEMA IF NOT EXISTS scheduler;

CREATE TABLE scheduler.schedules (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id        bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    -- The definition as given (kind, timing, action, policies, lifetime, retries), checked by
    -- gathering.scheduler.definition.
    spec            jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'paused', 'expired')),
    -- The next slot to claim; NULL once nothing is left to run (and for event schedules).
    next_run_at     timestamptz,
    -- An event schedule's place in the outbox: the events after it are still to be seen.
    event_cursor    bigint,
    executions      integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
CREATE INDEX schedules_due ON scheduler.schedules (next_run_at) WHERE status = 'active';

CREATE TABLE scheduler.runs (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule_id     bigint      NOT NULL REFERENCES scheduler.schedules (id) ON DELETE CASCADE,
    -- The slot it runs for; a run started by hand has its own instant, one started by an
    -- event the event's.
    slot_time       timestamptz NOT NULL,
    trigger         text        NOT NULL DEFAULT 'slot'
                    CHECK (trigger IN ('slot', 'manual', 'event')),
    -- The event that started it (an event schedule's run), once per event.
    event_id        uuid,
    event           jsonb,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped',
                                      'cancelled')),
    attempt         integer     NOT NULL DEFAULT 0,
    job_id          bigint,
    -- A pipeline run it started (execute_pipeline): the run ends when that run ends.
    pipeline_run_id bigint      REFERENCES pipeline.runs (id) ON DELETE SET NULL,
    output          jsonb,
    error           jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE UNIQUE INDEX runs_one_per_slot ON scheduler.runs (schedule_id, slot_time)
    WHERE event_id IS NULL;
CREATE UNIQUE INDEX runs_one_per_event ON scheduler.runs (schedule_id, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX runs_of_schedule ON scheduler.runs (schedule_id, id DESC);
-- The sweep's questions, asked every half second, read only the runs still open.
CREATE INDEX runs_open ON scheduler.runs (schedule_id) WHERE status IN ('queued', 'running');
CREATE INDEX runs_waiting_on_pipelines ON scheduler.runs (id)
    WHERE status = 'running' AND output ? 'pipeline_run_id';
CREATE INDEX runs_finished ON scheduler.runs (finished_at);
