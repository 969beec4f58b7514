-- Circles: teams of agents (and people) that take tasks. A task moves through a checked state
-- machine whose every step is kept (transitions); it is offered to the member who fits best,
-- with the reason kept (decisions), worked, reviewed by another member (reviews), and ends.
-- Files a task works on are locked per circle; a clash is kept as a conflict.

CREATE SCHEMA IF NOT EXISTS circle;

CREATE TABLE circle.circles (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    -- The name is the circle's address (`/ws/circles/{name}`), unique across the server.
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description  text        NOT NULL DEFAULT '',
    status       text        NOT NULL DEFAULT 'created'
                 CHECK (status IN ('created', 'active', 'archived')),
    settings     jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX circles_of_owner ON circle.circles (owner_id, id);

CREATE TABLE circle.members (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    circle_id       bigint      NOT NULL REFERENCES circle.circles (id) ON DELETE CASCADE,
    -- A member whose agent or account is deleted stays, with neither (gone): its history
    -- keeps it, and the offers duty moves its tasks on. (No cascade into the tasks: a delete
    -- never waits on a step of a circle that holds them.)
    agent_id        bigint      REFERENCES agent.agents (id) ON DELETE SET NULL,
    user_id         bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    role            text        NOT NULL CHECK (role IN ('lead', 'member', 'reviewer')),
    -- The one competency model: tag -> level (1 to 5).
    competencies    jsonb       NOT NULL DEFAULT '{}',
    active          boolean     NOT NULL DEFAULT true,
    -- Metrics, updated in the transaction of each outcome.
    completed       integer     NOT NULL DEFAULT 0,
    failed          integer     NOT NULL DEFAULT 0,
    verdicts        integer     NOT NULL DEFAULT 0,  -- reviews of their work
    approvals       integer     NOT NULL DEFAULT 0,  -- of which approved
    review_rounds   integer     NOT NULL DEFAULT 0,  -- summed over their completed tasks
    reviews_given   integer     NOT NULL DEFAULT 0,
    tokens          bigint      NOT NULL DEFAULT 0,
    work_seconds    double precision NOT NULL DEFAULT 0,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (agent_id IS NULL OR user_id IS NULL),
    UNIQUE (circle_id, agent_id),
    UNIQUE (circle_id, user_id)
);
CREATE INDEX members_of_agent ON circle.members (agent_id);
CREATE INDEX members_of_user ON circle.members (user_id);

CREATE TABLE circle.tasks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    circle_id       bigint      NOT NULL REFERENCES circle.circles (id) ON DELETE CASCADE,
    title           text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description     text        NOT NULL DEFAULT '',
    task_type       text        NOT NULL DEFAULT 'general',
    -- Competency tag -> the least level it needs.
    requirements    jsonb       NOT NULL DEFAULT '{}',
    priority        integer     NOT NULL DEFAULT 0,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'blocked', 'offered', 'in_progress',
                                      'in_review', 'changes_requested', 'completed',
                                      'failed', 'cancelled')),
    offered_to      bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    offer_deadline  timestamptz,
    assignee_id     bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    -- The attempt being worked (1, then 2 after changes were requested, ...).
    iteration       integer     NOT NULL DEFAULT 1,
    review_type     text        NOT NULL DEFAULT 'general',
    result          jsonb,
    feedback        text,
    error           text,
    created_by      bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX tasks_of_circle ON circle.tasks (circle_id, id);
CREATE INDEX tasks_offered ON circle.tasks (offer_deadline) WHERE status = 'offered';
-- Tasks whose member is gone (the sweep looks for them every second).
-- Tasks offered or in someone's hands (the sweep looks for those whose member is gone).
CREATE INDEX tasks_held ON circle.tasks (id)
    WHERE status IN ('offered', 'in_progress', 'changes_requested');
CREATE INDEX tasks_of_assignee ON circle.tasks (assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_offered_to ON circle.tasks (offered_to) WHERE offered_to IS NOT NULL;

CREATE TABLE circle.task_dependencies (
    task_id     bigint NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    blocked_by  bigint NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, blocked_by),
    CHECK (task_id <> blocked_by)
);
CREATE INDEX task_dependents ON circle.task_dependencies (blocked_by);

-- Every move of a task, by whom and why.
CREATE TABLE circle.transitions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id      bigint      NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    from_status  text,
    to_status    text        NOT NULL,
    member_id    bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    user_id      bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    reason       text        NOT NULL DEFAULT '',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transitions_of_task ON circle.transitions (task_id, id);

-- Routing: to whom a task was offered or sent for review, and why; refusals and expiries.
CREATE TABLE circle.decisions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     bigint      NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    iteration   integer     NOT NULL,
    kind        text        NOT NULL
                CHECK (kind IN ('offer', 'refused', 'expired', 'no_candidate', 'review',
                                'escalation')),
    member_id   bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    reason      text        NOT NULL,
    scores      jsonb       NOT NULL DEFAULT '[]',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_of_task ON circle.decisions (task_id, id);

CREATE TABLE circle.reviews (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id      bigint      NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    iteration    integer     NOT NULL,
    reviewer_id  bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    user_id      bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    verdict      text        NOT NULL
                 CHECK (verdict IN ('approved', 'changes_requested', 'rejected')),
    feedback     text        NOT NULL DEFAULT '',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_of_task ON circle.reviews (task_id, iteration, id);
-- One verdict per reviewer per attempt.
CREATE UNIQUE INDEX one_review_per_member ON circle.reviews (task_id, iteration, reviewer_id)
    WHERE reviewer_id IS NOT NULL;

-- A file (path inside the circle's workspace) a task works on; one task at a time.
CREATE TABLE circle.file_locks (
    circle_id    bigint      NOT NULL REFERENCES circle.circles (id) ON DELETE CASCADE,
    path         text        NOT NULL,
    task_id      bigint      NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (circle_id, path)
);
CREATE INDEX file_locks_of_task ON circle.file_locks (task_id);

CREATE TABLE circle.conflicts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    circle_id      bigint      NOT NULL REFERENCES circle.circles (id) ON DELETE CASCADE,
    kind           text        NOT NULL CHECK (kind IN ('file', 'cycle', 'disagreement')),
    task_id        bigint      REFERENCES circle.tasks (id) ON DELETE CASCADE,
    other_task_id  bigint      REFERENCES circle.tasks (id) ON DELETE CASCADE,
    detail         jsonb       NOT NULL DEFAULT '{}',
    status         text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz
);
CREATE INDEX conflicts_of_circle ON circle.conflicts (circle_id, id);
CREATE INDEX conflicts_open ON circle.conflicts (other_task_id) WHERE status = 'open';
