-- Roles: `admin`, `member`, `viewer` (read-only). Administrators stay administrators, everyone
-- else becomes a member. `is_admin` stays, computed from the role, so readers keep working;
-- writers set `role` (a generated column cannot be written).

ALTER TABLE auth.users
    ADD COLUMN role text NOT NULL DEFAULT 'member'
        CONSTRAINT users_role_check CHECK (role IN ('admin', 'member', 'viewer'));

UPDATE auth.users SET role = 'admin' WHERE is_admin;

ALTER TABLE auth.users DROP COLUMN is_admin;
ALTER TABLE auth.users ADD COLUMN is_admin boolean GENERATED ALWAYS AS (role = 'admin') STORED;

-- The built-in local owner of single-user mode is always an administrator.
ALTER TABLE auth.users
    ADD CONSTRAINT users_local_owner_is_admin CHECK (NOT is_local_owner OR role = 'admin');

-- "Is this the last active administrator?" is asked before every demotion and disabling.
CREATE INDEX users_active_admins_idx ON auth.users (id)
    WHERE role = 'admin' AND is_active AND NOT is_local_owner;

-- Audit queries by resource (`GET /audit?target_type=user&target_id=7`).
CREATE INDEX audit_log_target_idx ON auth.audit_log (target_type, target_id, occurred_at DESC);
