-- The statements of `gathering.auth` (see gathering/db/named_queries.py).

-- users -------------------------------------------------------------------------------------

-- name: user_by_id --
SELECT * FROM auth.users WHERE id = $1

-- name: user_by_email --
SELECT * FROM auth.users WHERE email = $1

-- name: list_users --
-- Every account except the built-in local owner, oldest first.
SELECT * FROM auth.users WHERE NOT is_local_owner ORDER BY id

-- name: insert_user --
INSERT INTO auth.users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING *

-- name: lock_user --
-- Locked against other changes (not against foreign-key checks) until the end of the transaction.
SELECT * FROM auth.users WHERE id = $1 FOR NO KEY UPDATE

-- name: lock_user_for_share --
-- Kept from changing until the end of the transaction.
SELECT * FROM auth.users WHERE id = $1 FOR SHARE

-- name: upgrade_password_hash --
-- The same password hashed anew, unless it changed since the old hash was read.
UPDATE auth.users SET password_hash = $3 WHERE id = $1 AND password_hash = $2

-- name: set_user_active --
UPDATE auth.users SET is_active = $2, updated_at = now() WHERE id = $1

-- name: set_user_role --
UPDATE auth.users SET role = $2, updated_at = now() WHERE id = $1

-- name: set_password_hash --
UPDATE auth.users SET password_hash = $2, updated_at = now() WHERE id = $1

-- name: count_other_active_admins --
SELECT count(*) FROM auth.users
WHERE role = 'admin' AND is_active AND NOT is_local_owner AND id <> $1

-- name: record_login --
UPDATE auth.users SET last_login_at = now() WHERE id = $1

-- name: local_owner --
SELECT * FROM auth.users WHERE is_local_owner

-- name: insert_local_owner --
INSERT INTO auth.users (email, role, is_local_owner) VALUES ($1, 'admin', true)
ON CONFLICT DO NOTHING

-- name: any_user_exists --
-- Whether there is an account besides the local owner.
SELECT EXISTS (SELECT 1 FROM auth.users WHERE NOT is_local_owner)

-- sessions (token families) and refresh tokens ----------------------------------------------

-- name: session_still_open --
-- Whether the session a change is made with is open, share-locked until the end of the change.
SELECT revoked_at IS NULL AND expires_at > now() FROM auth.token_families
WHERE id = $1 FOR SHARE

-- name: user_sessions --
-- The sessions of user $1, newest first: the open ones, or with $2 every one.
SELECT f.id, f.user_id, f.created_at, f.expires_at, f.revoked_at, f.revoke_reason,
       (SELECT max(r.issued_at) FROM auth.refresh_tokens r
        WHERE r.family_id = f.id AND r.used_at IS NOT NULL) AS last_refreshed_at
FROM auth.token_families f
WHERE f.user_id = $1 AND ($2 OR (f.revoked_at IS NULL AND f.expires_at > now()))
ORDER BY f.created_at DESC, f.id

-- name: insert_token_family --
INSERT INTO auth.token_families (id, user_id, expires_at) VALUES ($1, $2, now())

-- name: insert_refresh_token --
INSERT INTO auth.refresh_tokens (jti, family_id, user_id, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5)

-- name: extend_token_family --
-- A family lives as long as its newest refresh token.
UPDATE auth.token_families SET expires_at = greatest(expires_at, $2) WHERE id = $1

-- name: lock_refresh_token --
SELECT r.used_at, r.user_id, f.revoked_at
FROM auth.refresh_tokens r JOIN auth.token_families f ON f.id = r.family_id
WHERE r.jti = $1 AND r.family_id = $2
FOR UPDATE OF r

-- name: spend_refresh_token --
UPDATE auth.refresh_tokens SET used_at = now() WHERE jti = $1

-- revocation ----------------------------------------------------------------------------------

-- name: revocation_of --
-- Whether token $1 is revoked, and when the session $2 expires if it is revoked.
SELECT EXISTS (SELECT 1 FROM auth.revoked_tokens WHERE jti = $1) AS token,
       (SELECT expires_at FROM auth.token_families
        WHERE id = $2 AND revoked_at IS NOT NULL) AS family_expires

-- name: insert_revoked_token --
INSERT INTO auth.revoked_tokens (jti, user_id, token_type, expires_at, reason)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (jti) DO NOTHING

-- name: revoke_token_family --
UPDATE auth.token_families
SET revoked_at = coalesce(revoked_at, now()), revoke_reason = coalesce(revoke_reason, $2)
WHERE id = $1
RETURNING expires_at

-- name: end_user_sessions --
-- Revoke the open sessions of user $1 but $3 (when given).
UPDATE auth.token_families SET revoked_at = now(), revoke_reason = $2
WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
  AND ($3::text IS NULL OR id <> $3)
RETURNING id, expires_at

-- name: end_session --
-- Revoke the open session $1 of user $2.
UPDATE auth.token_families SET revoked_at = now(), revoke_reason = $3
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
RETURNING id, expires_at

-- name: purge_revoked_tokens --
WITH gone AS (DELETE FROM auth.revoked_tokens WHERE expires_at < now() RETURNING 1)
SELECT count(*) FROM gone

-- name: purge_token_families --
WITH gone AS (DELETE FROM auth.token_families WHERE expires_at < now() RETURNING 1)
SELECT count(*) FROM gone

-- API keys ------------------------------------------------------------------------------------

-- name: insert_api_key --
INSERT INTO auth.api_keys (user_id, name, prefix, secret_hash, scopes, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: live_api_key_by_prefix --
SELECT * FROM auth.api_keys
WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())

-- name: touch_api_key --
-- Record a use, at most once a minute.
UPDATE auth.api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')

-- name: list_api_keys --
-- The keys of user $1 (every user's when NULL), newest first.
SELECT * FROM auth.api_keys WHERE ($1::bigint IS NULL OR user_id = $1) ORDER BY id DESC

-- name: api_key_by_id --
SELECT * FROM auth.api_keys WHERE id = $1

-- name: revoke_api_key --
UPDATE auth.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id

-- name: revoke_user_api_keys --
WITH gone AS (
    UPDATE auth.api_keys SET revoked_at = now()
    WHERE user_id = $1 AND revoked_at IS NULL
    RETURNING 1
)
SELECT count(*) FROM gone

-- audit log -----------------------------------------------------------------------------------

-- name: insert_audit_entry --
INSERT INTO auth.audit_log (event, outcome, actor_id, subject, target_type, target_id, ip,
                            user_agent, request_id, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)

-- name: audit_entries --
-- Entries matching every given filter, newest first; $11 is `event` as a LIKE prefix for `x.*`.
SELECT id, occurred_at, event, outcome, actor_id, subject, target_type, target_id, ip,
       user_agent, request_id, details
FROM auth.audit_log
WHERE ($1::text IS NULL OR event = $1 OR event LIKE $11)
  AND ($2::text IS NULL OR outcome = $2)
  AND ($3::bigint IS NULL OR actor_id = $3)
  AND ($4::text IS NULL OR subject = $4)
  AND ($5::text IS NULL OR ip = $5)
  AND ($6::text IS NULL OR request_id = $6)
  AND ($7::timestamptz IS NULL OR occurred_at >= $7)
  AND ($8::timestamptz IS NULL OR occurred_at < $8)
  AND ($9::bigint IS NULL OR id < $9)
  AND ($12::text IS NULL OR target_type = $12)
  AND ($13::text IS NULL OR target_id = $13)
ORDER BY id DESC
LIMIT $10

-- name: prune_audit_entries --
-- Delete at most $2 entries older than $1, oldest first; how many.
WITH gone AS (
    DELETE FROM auth.audit_log WHERE id IN (
        SELECT id FROM auth.audit_log WHERE occurred_at < now() - $1::interval
        ORDER BY occurred_at LIMIT $2
    )
    RETURNING 1
)
SELECT count(*) FROM gone

-- WebSocket tickets ---------------------------------------------------------------------------

-- name: insert_ws_ticket --
-- Store a ticket living $9 seconds, deleting expired ones on the way.
WITH pruned AS (DELETE FROM auth.ws_tickets WHERE expires_at <= now())
INSERT INTO auth.ws_tickets (ticket_hash, user_id, auth_method, scopes, token_id, family_id,
                             token_expires_at, api_key_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::integer * interval '1 second')

-- name: consume_ws_ticket --
-- Spend a ticket (live or not): what it stands for, and whether it and its user are still valid.
DELETE FROM auth.ws_tickets AS t USING auth.users AS u
WHERE t.ticket_hash = $1 AND u.id = t.user_id
RETURNING t.user_id, t.auth_method, t.scopes, t.token_id, t.family_id, t.token_expires_at,
          t.api_key_id, t.expires_at > now() AS live,
          u.is_active AND NOT u.is_local_owner AS user_active
