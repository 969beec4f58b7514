-- One-time WebSocket tickets (`POST /auth/ws-ticket`): a browser opens `/ws?ticket=...`
-- instead of putting an access token in the URL. Only a SHA-256 of the ticket is stored; a
-- ticket is spent by the one DELETE that finds it, on whichever instance that runs.
-- A ticket remembers the credential it was asked with (an access token's jti and session, or
-- an API key) and that credential's scopes: the socket acts as it and stops when it is revoked.

CREATE TABLE auth.ws_tickets (
    ticket_hash      text PRIMARY KEY,
    user_id          bigint      NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    auth_method      text        NOT NULL CHECK (auth_method IN ('token', 'api_key')),
    scopes           text[]      NOT NULL,
    token_id         text,
    family_id        text,
    token_expires_at bigint,  -- the access token's `exp` (epoch seconds)
    api_key_id       bigint REFERENCES auth.api_keys (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK (
        (auth_method = 'token' AND token_id IS NOT NULL AND family_id IS NOT NULL
            AND token_expires_at IS NOT NULL AND api_key_id IS NULL)
        OR (auth_method = 'api_key' AND api_key_id IS NOT NULL AND token_id IS NULL)
    )
);

CREATE INDEX ws_tickets_expires_idx ON auth.ws_tickets (expires_at);
