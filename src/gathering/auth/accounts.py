"""Account changes made by administrators (over HTTP or from the CLI) and by users themselves.

Each change, the revocations it causes and its audit entry are one transaction: if the audit
entry cannot be written, nothing changed. Inside `self.db.transaction()` the stores' queries
run on the transaction's connection (see `Database.transaction`); the audit entry is given it
explicitly (`on=tx`). Revoked sessions reach this instance's revocation cache only after the
commit (other instances ask the database on a cache miss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gathering.auth.api_keys import ApiKey, ApiKeyStore, CreatedApiKey
from gathering.auth.audit import AuditEvent, AuditLog, RequestOrigin
from gathering.auth.passwords import hash_password, verify_password
from gathering.auth.revocation import RevocationCache, RevocationStore, RevokedSession
from gathering.auth.tokens import invalid_credentials
from gathering.auth.users import Role, User, UserStore, normalize_email
from gathering.db import Database, Transaction
from gathering.db.locks import LockKey, transaction_lock
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError

CLI_SUBJECT = "cli"
# Serializes changes that could leave no active administrator (two admins demoting each other).
_ADMINS_LOCK = LockKey("security", "active-admins")
_SQL = queries_of("gathering.auth")


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user (over HTTP), or the command line (`actor_id` None).

    An `operator` (the command line, run by whoever has the database) may leave no active
    administrator: it is also the way back, creating or re-enabling one.
    """

    user_id: int | None
    subject: str
    origin: RequestOrigin = field(default_factory=RequestOrigin)
    via: str = "http"
    operator: bool = False
    session: str | None = None  # the login session (token family) the change is made with


CLI_ACTOR = Actor(None, CLI_SUBJECT, via=CLI_SUBJECT, operator=True)


@dataclass(frozen=True)
class AccountChange:
    """The account after a change, and what the change revoked."""

    user: User
    sessions_revoked: int = 0
    api_keys_revoked: int = 0


def user_not_found(user_id: object) -> NotFoundError:
    return NotFoundError(f"user {user_id} not found")


class AccountAdmin:
    """Transactional, audited changes to accounts, sessions and API keys."""

    def __init__(self, db: Database, cache: RevocationCache) -> None:
        self.db = db
        self.users = UserStore(db)
        self.api_keys = ApiKeyStore(db)
        self.revocations = RevocationStore(db, cache)
        self.audit = AuditLog(db)

    async def _confirm_actor(self, actor: Actor) -> None:
        """Inside a change's transaction: the session the change is made with is still open.

        A reset or a disable that committed meanwhile has ended it, and the change is refused;
        one that comes later waits for this transaction (the row is share-locked), then sees
        what it made (a new API key) and revokes that too.
        """
        if actor.session is None:
            return
        still_open = await self.db.fetch_val(_SQL["session_still_open"], actor.session)
        if not still_open:
            raise invalid_credentials()

    async def _record(
        self,
        tx: Transaction,
        actor: Actor,
        event: str,
        user: User,
        **details: Any,
    ) -> None:
        await self._confirm_actor(actor)
        await self._audit(
            tx, actor, event, "user", user.id, {"email": user.email, "via": actor.via, **details}
        )

    async def _audit(
        self,
        tx: Transaction,
        actor: Actor,
        event: str,
        target_type: str,
        target_id: str | int,
        details: dict[str, Any],
    ) -> None:
        """The success entry of a change by `actor`, in the change's transaction."""
        await self.audit.record(
            event,
            "success",
            origin=actor.origin,
            actor_id=actor.user_id,
            subject=actor.subject,
            target_type=target_type,
            target_id=target_id,
            details=details,
            on=tx,
        )

    async def _locked_user(self, user_id: int) -> User:
        """The account, locked for this transaction; the local owner is not administrable."""
        user = await self.users.lock(user_id)
        if user is None or user.is_local_owner:
            raise user_not_found(user_id)
        return user

    async def _lock_admins(self, tx: Transaction, actor: Actor) -> None:
        """Before an administrator's change to an account, and before any row lock: such
        changes run one at a time, so they never wait on each other's rows (two admins
        resetting each other would otherwise deadlock), and the last active administrator is
        counted with nothing changing under the count."""
        if not actor.operator:
            await transaction_lock(tx, _ADMINS_LOCK, wait=True)

    @staticmethod
    def _not_oneself(actor: Actor, user_id: int, what: str, hint: str) -> None:
        """Refuse a change of one's own account that would end the session making it."""
        if actor.user_id == user_id and not actor.operator:
            raise ConflictError(f"an administrator cannot {what} their own account", hint=hint)

    async def _keep_an_admin(self, actor: Actor, user: User) -> None:
        """Refuse a change that would take away the last active administrator (call
        `_lock_admins` first)."""
        if actor.operator:
            return
        if user.role == "admin" and user.is_active:
            if await self.users.other_active_admins(user.id) == 0:
                raise ConflictError(
                    f"{user.email} is the last active administrator",
                    hint="make another user an administrator first"
                    " (PUT /users/{id}/role, or `gathering users role EMAIL admin`)",
                )

    async def user_by_email(self, email: str) -> User:
        return await self.users.require_by_email(email)

    async def get_user(self, user_id: int) -> User:
        user = await self.users.get(user_id)
        if user is None or user.is_local_owner:
            raise user_not_found(user_id)
        return user

    async def create_user(self, actor: Actor, email: str, password: str, role: Role) -> User:
        normalized = normalize_email(email)
        password_hash = await hash_password(password)  # before the transaction: it is slow
        async with self.db.transaction() as tx:
            user = await self.users.insert(normalized, password_hash, role)
            await self._record(tx, actor, AuditEvent.USER_CREATED, user, role=role)
        return user

    async def _revoke_credentials(
        self, user: User, reason: str
    ) -> tuple[list[RevokedSession], int]:
        """Revoke every session and API key of `user` (in the current transaction)."""
        sessions = await self.revocations.end_user_sessions(user.id, reason)
        return sessions, await self.api_keys.revoke_user_keys(user.id)

    async def set_active(self, actor: Actor, user_id: int, *, active: bool) -> AccountChange:
        """Enable or disable an account; disabling revokes its sessions and API keys."""
        sessions: list[RevokedSession] = []
        keys = 0
        if not active:
            self._not_oneself(actor, user_id, "disable", "ask another administrator")
        async with self.db.transaction() as tx:
            await self._lock_admins(tx, actor)
            user = await self._locked_user(user_id)
            if not active:
                await self._keep_an_admin(actor, user)
            await self.users.set_active(user.id, active)
            if not active:
                sessions, keys = await self._revoke_credentials(user, "user disabled")
            event = AuditEvent.USER_ENABLED if active else AuditEvent.USER_DISABLED
            await self._record(
                tx, actor, event, user, sessions_revoked=len(sessions), api_keys_revoked=keys
            )
            changed = await self._locked_user(user_id)
        self.revocations.remember(sessions)
        return AccountChange(changed, len(sessions), keys)

    async def set_role(self, actor: Actor, user_id: int, role: Role) -> AccountChange:
        """Change an account's role. Nothing is revoked: every request reads the role from
        the database, so a demotion applies to the next request of every token and key."""
        async with self.db.transaction() as tx:
            await self._lock_admins(tx, actor)
            user = await self._locked_user(user_id)
            if role != "admin":
                await self._keep_an_admin(actor, user)
            await self.users.set_role(user.id, role)
            await self._record(tx, actor, AuditEvent.ROLE_CHANGED, user, old=user.role, new=role)
            changed = await self._locked_user(user_id)
        return AccountChange(changed)

    async def reset_password(self, actor: Actor, user_id: int, password: str) -> AccountChange:
        """Set a new password; the account's sessions and API keys are revoked."""
        self._not_oneself(
            actor, user_id, "reset the password of", "change it with POST /users/me/password"
        )
        password_hash = await hash_password(password)
        async with self.db.transaction() as tx:
            await self._lock_admins(tx, actor)
            user = await self._locked_user(user_id)
            await self.users.set_password_hash(user.id, password_hash)
            sessions, keys = await self._revoke_credentials(user, "password reset")
            await self._record(
                tx,
                actor,
                AuditEvent.PASSWORD_RESET,
                user,
                sessions_revoked=len(sessions),
                api_keys_revoked=keys,
            )
        self.revocations.remember(sessions)
        return AccountChange(user, len(sessions), keys)

    async def change_own_password(
        self, actor: Actor, current_password: str, new_password: str, *, keep_family: str
    ) -> AccountChange:
        """A user's own change: needs the current password; the user's other sessions end
        (`keep_family`, the caller's, goes on); API keys stay."""
        if actor.user_id is None:
            raise InvalidInputError("only a user changes their own password")
        user = await self.get_user(actor.user_id)
        if not await verify_password(user.password_hash, current_password):
            async with self.db.transaction() as tx:
                await self.audit.record(
                    AuditEvent.PASSWORD_CHANGED,
                    "failure",
                    origin=actor.origin,
                    actor_id=user.id,
                    subject=actor.subject,
                    target_type="user",
                    target_id=user.id,
                    details={"reason": "wrong current password"},
                    on=tx,
                )
            raise PermissionDeniedError(
                "the current password is wrong",
                hint="give your current password; an administrator can reset a forgotten one",
                details={"field": "current_password"},
            )
        password_hash = await hash_password(new_password)
        async with self.db.transaction() as tx:
            user = await self._locked_user(user.id)
            await self.users.set_password_hash(user.id, password_hash)
            sessions = await self.revocations.end_user_sessions(
                user.id, "password changed", keep_family=keep_family
            )
            await self._record(
                tx, actor, AuditEvent.PASSWORD_CHANGED, user, sessions_revoked=len(sessions)
            )
        self.revocations.remember(sessions)
        return AccountChange(user, len(sessions))

    async def revoke_session(self, actor: Actor, user_id: int, family_id: str) -> None:
        """End one open session of `user_id` (NotFoundError when it has no such session)."""
        async with self.db.transaction() as tx:
            await self._lock_admins(tx, actor)
            user = await self._locked_user(user_id)
            session = await self.revocations.end_session(user.id, family_id, "revoked by admin")
            if session is None:
                raise NotFoundError(f"session {family_id} of user {user_id} not found")
            details = {"user_id": user.id, "email": user.email, "via": actor.via}
            await self._audit(tx, actor, AuditEvent.SESSION_REVOKED, "session", family_id, details)
        self.revocations.remember([session])

    async def create_api_key(
        self,
        actor: Actor,
        user_id: int,
        name: str,
        scopes: list[str],
        *,
        expires_in_days: int | None = None,
    ) -> CreatedApiKey:
        async with self.db.transaction() as tx:
            # A disable or reset of the owner either comes first (and the key is refused) or
            # waits for this transaction, and then revokes the new key with the others.
            owner = await self.users.lock_for_share(user_id)
            if owner is None or not owner.is_active:
                raise user_not_found(user_id)
            await self._confirm_actor(actor)
            created = await self.api_keys.create(
                user_id, name, scopes, expires_in_days=expires_in_days
            )
            details = {"name": created.key.name, "scopes": created.key.scopes}
            await self._audit(
                tx, actor, AuditEvent.API_KEY_CREATED, "api_key", created.key.id, details
            )
        return created

    async def revoke_api_key(self, actor: Actor, key: ApiKey) -> None:
        """Revoke `key` (a key revoked already stays as it was; the call is still audited)."""
        async with self.db.transaction() as tx:
            await self._confirm_actor(actor)
            revoked = await self.api_keys.revoke(key.id)
            details = {"user_id": key.user_id, "already_revoked": not revoked}
            await self._audit(tx, actor, AuditEvent.API_KEY_REVOKED, "api_key", key.id, details)
