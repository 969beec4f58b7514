-- Conversations of a circle: a topic, the members who speak (and optionally a person who
-- joins in), a turn strategy that picks each speaker, limits, and the transcript. A
-- conversation runs as a job (`circles:converse`), one turn after another, and goes on from
-- its stored transcript on any instance after a crash.

CREATE TABLE circle.conversations (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    circle_id      bigint      NOT NULL REFERENCES circle.circles (id) ON DELETE CASCADE,
    topic          text        NOT NULL CHECK (length(topic) BETWEEN 1 AND 2000),
    strategy       text        NOT NULL
                   CHECK (strategy IN ('round_robin', 'mention', 'facilitator', 'free')),
    -- Member ids, in speaking order for round_robin.
    participants   bigint[]    NOT NULL CHECK (cardinality(participants) BETWEEN 1 AND 20),
    facilitator_id bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    max_turns      integer     NOT NULL CHECK (max_turns BETWEEN 1 AND 500),
    token_budget   bigint      NOT NULL CHECK (token_budget > 0),
    stop_phrase    text,
    consensus      boolean     NOT NULL DEFAULT false,
    seed           bigint      NOT NULL DEFAULT 0,
    -- created, running, paused, then finished, cancelled or failed.
    status         text        NOT NULL DEFAULT 'created'
                   CHECK (status IN ('created', 'running', 'paused', 'finished', 'cancelled',
                                     'failed')),
    turns          integer     NOT NULL DEFAULT 0,  -- agents' turns taken
    tokens         bigint      NOT NULL DEFAULT 0,
    finish_reason  text,
    summary        text,
    error          text,
    created_by     bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX conversations_of_circle ON circle.conversations (circle_id, id);

CREATE TABLE circle.conversation_messages (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  bigint      NOT NULL REFERENCES circle.conversations (id) ON DELETE CASCADE,
    n                integer     NOT NULL,  -- 1, 2, ... in the order they were said
    turn             integer,               -- the agent turn it is (null: a person's)
    member_id        bigint      REFERENCES circle.members (id) ON DELETE SET NULL,
    user_id          bigint      REFERENCES auth.users (id) ON DELETE SET NULL,
    speaker          text        NOT NULL,
    content          text        NOT NULL,
    tokens           integer     NOT NULL DEFAULT 0,
    at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, n),
    UNIQUE (conversation_id, turn)
);
