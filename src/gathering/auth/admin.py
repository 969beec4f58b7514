"""Account administration for the command line: each call opens its own small pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gathering.auth.audit import AuditEvent, AuditLog
from gathering.auth.revocation import RevocationCache, RevocationStore
from gathering.auth.users import CreatedAdmin, User, UserStore
from gathering.config import Settings
from gathering.db import Database

CLI_ACTOR = "cli"


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    """A small connected pool, on a schema brought up to date first (unless auto_migrate is off)."""
    async with Database(settings=settings, min_size=0, max_size=1) as db:
        if settings.auto_migrate:
            await db.run_migrations()
        yield db


async def _audit(db: Database, event: str, user: User, **details: object) -> None:
    await AuditLog(db).record(
        event,
        "success",
        subject=CLI_ACTOR,
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "via": CLI_ACTOR, **details},
    )


async def create_user(settings: Settings, email: str, password: str, *, is_admin: bool) -> User:
    async with _database(settings) as db:
        user = await UserStore(db).create(email, password, is_admin=is_admin)
        await _audit(db, AuditEvent.USER_CREATED, user, is_admin=is_admin)
        return user


async def list_users(settings: Settings) -> list[User]:
    async with _database(settings) as db:
        return await UserStore(db).list_users()


async def set_user_active(settings: Settings, email: str, *, active: bool) -> tuple[User, int]:
    """Enable or disable an account; disabling ends its sessions. Returns (user, sessions ended)."""
    async with _database(settings) as db:
        users = UserStore(db)
        user = await users.require_by_email(email)
        await users.set_active(user.id, active)
        ended = 0
        if not active:
            ended = await RevocationStore(db, RevocationCache(1)).revoke_user_sessions(
                user.id, "user disabled"
            )
        event = AuditEvent.USER_ENABLED if active else AuditEvent.USER_DISABLED
        await _audit(db, event, user, sessions_ended=ended)
        return user, ended


async def reset_password(settings: Settings, email: str, password: str) -> tuple[User, int]:
    """Set a new password and end every session of the account."""
    async with _database(settings) as db:
        users = UserStore(db)
        user = await users.require_by_email(email)
        await users.set_password(user.id, password)
        ended = await RevocationStore(db, RevocationCache(1)).revoke_user_sessions(
            user.id, "password reset"
        )
        await _audit(db, AuditEvent.PASSWORD_RESET, user, sessions_ended=ended)
        return user, ended


async def ensure_first_admin(settings: Settings) -> CreatedAdmin | None:
    """On a first start with no account: an admin from the settings or with a new password.

    Done in multi-user mode, and in single-user mode when GATHERING_ADMIN_EMAIL is set.
    """
    if not settings.auth_required and settings.admin_email is None:
        return None
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    async with _database(settings) as db:
        created = await UserStore(db).ensure_first_admin(settings.admin_email, password)
        if created is not None:
            await _audit(db, AuditEvent.USER_CREATED, created.user, is_admin=True, first_start=True)
        return created
