-- Durable events: the transactional outbox that every instance's listener reads (gathering.events).

CREATE SCHEMA IF NOT EXISTS events;

-- CACHE 1 (the default) matters: with a per-session cache, values would not follow call order.
CREATE SEQUENCE events.outbox_cursor_seq AS bigint;

CREATE TABLE events.outbox (
    id              uuid        PRIMARY KEY,
    -- Position in the durable stream, assigned at commit by the trigger below (NULL until
    -- then, so no other session ever sees a row without one).
    cursor          bigint      UNIQUE,
    type            text        NOT NULL
                    CHECK (type ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' AND length(type) <= 200),
    subject         text        CHECK (length(subject) BETWEEN 1 AND 200),
    data            jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(data) = 'object'),
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    source          text,
    correlation_id  text,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

ALTER SEQUENCE events.outbox_cursor_seq OWNED BY events.outbox.cursor;

CREATE INDEX outbox_subject_cursor_idx ON events.outbox (subject, cursor);
CREATE INDEX outbox_recorded_at_idx ON events.outbox (recorded_at);
CREATE INDEX outbox_correlation_id_idx ON events.outbox (correlation_id)
    WHERE correlation_id IS NOT NULL;

-- Cursor order must equal commit order, or a reader that has seen cursor N could later miss a
-- row N-1 that committed after it. So cursors are drawn at commit, by a deferred trigger,
-- under a transaction-level advisory lock that is released only once the commit is visible:
-- writers are serialized for the instant of their commit only, and since the lock is taken
-- when the transaction's own work is done, it does not deadlock with the row locks that work
-- took (only another table's deferred constraint could still wait on a row lock). The key is gathering.db.locks.advisory_key('events', 'outbox') (checked by the
-- tests). The trigger also sends one `NOTIFY gathering_events, '<cursor>'` per transaction,
-- which PostgreSQL delivers at commit (never for a transaction that rolls back).
CREATE FUNCTION events.outbox_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(-6622260917139884974);
    UPDATE events.outbox SET cursor = nextval('events.outbox_cursor_seq') WHERE id = NEW.id;
    IF current_setting('gathering.outbox_notified', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('gathering.outbox_notified', 'on', true);
        PERFORM pg_notify('gathering_events', currval('events.outbox_cursor_seq')::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER outbox_sequence
    AFTER INSERT ON events.outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION events.outbox_sequence();
