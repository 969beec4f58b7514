-- Goals: what an owner wants achieved, as a tree (a goal and its subgoals), with blocking
-- dependencies between goals, success criteria, and what was done about each (activities).
-- Starting a goal launches real work: a background task of an agent, or a pipeline run, per
-- goal; the scheduler's sweep ends the goal when that work ends, starts the goals whose
-- dependencies are done, and ends a parent whose subgoals have all ended.

CREATE TABLE scheduler.goals (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id         bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    parent_id        bigint      REFERENCES scheduler.goals (id) ON DELETE CASCADE,
    title            text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description      text        NOT NULL DEFAULT '',
    success_criteria text        NOT NULL DEFAULT '',
    -- open: not started; waiting: started, blocked by a dependency; active: its work runs;
    -- done, failed, cancelled: ended.
    status           text        NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'waiting', 'active', 'done', 'failed',
                                       'cancelled')),
    -- Who works on it: an agent (a background task), or a pipeline (a run).
    agent_id         bigint      REFERENCES agent.agents (id) ON DELETE SET NULL,
    pipeline_id      bigint      REFERENCES pipeline.pipelines (id) ON DELETE SET NULL,
    -- The work it launched last.
    task_id          bigint      REFERENCES scheduler.tasks (id) ON DELETE SET NULL,
    pipeline_run_id  bigint      REFERENCES pipeline.runs (id) ON DELETE SET NULL,
    -- A leaf's own progress, 0 to 1 (a parent's is rolled up from its subgoals).
    progress         double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    position         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX goals_of_owner ON scheduler.goals (owner_id, id DESC) WHERE parent_id IS NULL;
-- Every goal of an owner (the dependency check reads them all).
CREATE INDEX goals_owned ON scheduler.goals (owner_id);
CREATE INDEX goals_children ON scheduler.goals (parent_id, position, id);
CREATE INDEX goals_in_progress ON scheduler.goals (id) WHERE status IN ('waiting', 'active');

-- goal_id cannot start before blocked_by is done.
CREATE TABLE scheduler.goal_dependencies (
    goal_id     bigint NOT NULL REFERENCES scheduler.goals (id) ON DELETE CASCADE,
    blocked_by  bigint NOT NULL REFERENCES scheduler.goals (id) ON DELETE CASCADE,
    PRIMARY KEY (goal_id, blocked_by),
    CHECK (goal_id <> blocked_by)
);
CREATE INDEX goal_dependents ON scheduler.goal_dependencies (blocked_by);

CREATE TABLE scheduler.goal_activities (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    goal_id     bigint      NOT NULL REFERENCES scheduler.goals (id) ON DELETE CASCADE,
    kind        text        NOT NULL,
    body        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX goal_activities_of_goal ON scheduler.goal_activities (goal_id, id);
