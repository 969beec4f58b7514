-- Security: users, refresh-token families, revocations, service API keys, the audit log.

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          text        NOT NULL CHECK (length(btrim(email)) > 0 AND email = lower(email)),
    password_hash  text,
    is_admin       boolean     NOT NULL DEFAULT false,
    is_active      boolean     NOT NULL DEFAULT true,
    is_local_owner boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz
);

CREATE UNIQUE INDEX users_email_key ON auth.users (email);
-- At most one built-in local owner: the user every request acts as in single-user mode.
CREATE UNIQUE INDEX users_one_local_owner ON auth.users (is_local_owner) WHERE is_local_owner;

INSERT INTO auth.users (email, is_admin, is_local_owner)
VALUES ('local-owner@gathering.invalid', true, true);

-- One login session: its refresh tokens rotate inside the family; revoking it ends the session.
CREATE TABLE auth.token_families (
    id          text PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoke_reason text
);

CREATE INDEX token_families_user_idx ON auth.token_families (user_id);
CREATE INDEX token_families_expires_idx ON auth.token_families (expires_at);

CREATE TABLE auth.refresh_tokens (
    jti         text PRIMARY KEY,
    family_id   text        NOT NULL REFERENCES auth.token_families (id) ON DELETE CASCADE,
    user_id     bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE INDEX refresh_tokens_family_idx ON auth.refresh_tokens (family_id);

-- Single revoked tokens (by jti), kept until they would have expired anyway.
CREATE TABLE auth.revoked_tokens (
    jti         text PRIMARY KEY,
    user_id     bigint REFERENCES auth.users (id) ON DELETE CASCADE,
    token_type  text        NOT NULL CHECK (token_type IN ('access', 'refresh')),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    reason      text        NOT NULL
);

CREATE INDEX revoked_tokens_expires_idx ON auth.revoked_tokens (expires_at);

-- Service keys: `X-API-Key: gth_<prefix>_<secret>`; only a SHA-256 of the secret is stored.
CREATE TABLE auth.api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(btrim(name)) > 0),
    prefix       text        NOT NULL UNIQUE,
    secret_hash  text        NOT NULL,
    scopes       text[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX api_keys_user_idx ON auth.api_keys (user_id);

CREATE TABLE auth.audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    event       text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    actor_id    bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    subject     text,
    target_type text,
    target_id   text,
    ip          text,
    user_agent  text,
    request_id  text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX audit_log_occurred_idx ON auth.audit_log (occurred_at DESC);
CREATE INDEX audit_log_event_idx ON auth.audit_log (event, occurred_at DESC);
CREATE INDEX audit_log_actor_idx ON auth.audit_log (actor_id, occurred_at DESC);
