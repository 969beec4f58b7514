"""Account administration for the command line: each call opens its own small pool.

The changes themselves are `AccountAdmin`'s (the same as over HTTP), made as the CLI actor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gathering.auth.accounts import CLI_ACTOR, CLI_SUBJECT, AccountAdmin, AccountChange
from gathering.auth.audit import AuditEvent, AuditLog
from gathering.auth.revocation import RevocationCache
from gathering.auth.users import CreatedAdmin, Role, User, UserStore
from gathering.config import Settings
from gathering.db import Database


@asynccontextmanager
async def _accounts(settings: Settings) -> AsyncIterator[AccountAdmin]:
    """A small connected pool, on a schema brought up to date first (unless auto_migrate is off).

    The CLI keeps no revocation cache: its process ends, and servers ask the database.
    """
    async with Database(settings=settings, min_size=0, max_size=1) as db:
        if settings.auto_migrate:
            await db.run_migrations()
        yield AccountAdmin(db, RevocationCache(1))


async def create_user(
    settings: Settings, email: str, password: str, *, role: Role = "member"
) -> User:
    async with _accounts(settings) as accounts:
        return await accounts.create_user(CLI_ACTOR, email, password, role)


async def list_users(settings: Settings) -> list[User]:
    async with _accounts(settings) as accounts:
        return await accounts.users.list_users()


async def set_user_active(settings: Settings, email: str, *, active: bool) -> AccountChange:
    """Enable or disable an account; disabling revokes its sessions and API keys."""
    async with _accounts(settings) as accounts:
        user = await accounts.user_by_email(email)
        return await accounts.set_active(CLI_ACTOR, user.id, active=active)


async def set_user_role(settings: Settings, email: str, role: Role) -> AccountChange:
    """Give an account `role` (the operator may demote even the last administrator)."""
    async with _accounts(settings) as accounts:
        user = await accounts.user_by_email(email)
        return await accounts.set_role(CLI_ACTOR, user.id, role)


async def reset_password(settings: Settings, email: str, password: str) -> AccountChange:
    """Set a new password; every session and API key of the account is revoked."""
    async with _accounts(settings) as accounts:
        user = await accounts.user_by_email(email)
        return await accounts.reset_password(CLI_ACTOR, user.id, password)


async def ensure_first_admin(settings: Settings) -> CreatedAdmin | None:
    """On a first start with no account: an admin from the settings or with a new password.

    Done in multi-user mode, and in single-user mode when GATHERING_ADMIN_EMAIL is set.
    """
    if not settings.auth_required and settings.admin_email is None:
        return None
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    async with _accounts(settings) as accounts:
        db = accounts.db
        async with db.transaction() as tx:
            created = await UserStore(db).ensure_first_admin(settings.admin_email, password)
            if created is not None:
                user = created.user
                await AuditLog(db).record(
                    AuditEvent.USER_CREATED,
                    "success",
                    subject=CLI_SUBJECT,
                    target_type="user",
                    target_id=user.id,
                    details={
                        "email": user.email,
                        "via": CLI_SUBJECT,
                        "role": "admin",
                        "first_start": True,
                    },
                    on=tx,
                )
        return created
