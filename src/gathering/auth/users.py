"""The user store: accounts in `auth.users`, the built-in local owner, first-admin creation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from gathering.auth.passwords import generate_password, hash_password
from gathering.db import Database
from gathering.db.locks import advisory_key
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, InvalidInputError, NotFoundError

LOCAL_OWNER_EMAIL = "local-owner@gathering.invalid"
DEFAULT_ADMIN_EMAIL = "admin@localhost"
MAX_EMAIL_LENGTH = 254
# Also the API schema's pattern (so ECMAScript's \s, which lacks U+0085, is covered by the
# control range).
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
_EMAIL = re.compile(EMAIL_PATTERN)
_FIRST_ADMIN_LOCK = advisory_key("security", "first-admin")
_SQL = queries_of("gathering.auth")
_DB_SQL = queries_of("gathering.db")

Role = Literal["admin", "member", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)


def normalize_email(email: str) -> str:
    """`email` trimmed and lower-cased; `InvalidInputError` when it is not an address."""
    normalized = email.strip().lower()
    if len(normalized) > MAX_EMAIL_LENGTH or not _EMAIL.match(normalized):
        raise InvalidInputError("not an email address", details={"field": "email"})
    return normalized


@dataclass(frozen=True)
class User:
    """An account."""

    id: int
    email: str
    password_hash: str | None
    role: Role
    is_admin: bool  # computed by the database from `role`
    is_active: bool
    is_local_owner: bool
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def can_log_in(self) -> bool:
        """Active, with a password, and not the built-in local owner."""
        return self.is_active and not self.is_local_owner and self.password_hash is not None


@dataclass(frozen=True)
class CreatedAdmin:
    """The admin created on first start; `password` is set only when it was generated."""

    user: User
    generated_password: str | None


class UserStore:
    """Queries on `auth.users`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: int) -> User | None:
        row = await self.db.fetch_one(_SQL["user_by_id"], user_id)
        return User.from_row(row) if row else None

    async def find_by_email(self, email: str) -> User | None:
        try:
            normalized = normalize_email(email)
        except InvalidInputError:
            return None
        row = await self.db.fetch_one(_SQL["user_by_email"], normalized)
        return User.from_row(row) if row else None

    async def require_by_email(self, email: str) -> User:
        user = await self.find_by_email(email)
        if user is None or user.is_local_owner:
            raise NotFoundError(f"no user {email.strip().lower()!r}")
        return user

    async def list_users(self) -> list[User]:
        """Every account except the built-in local owner, oldest first."""
        rows = await self.db.fetch_all(_SQL["list_users"])
        return [User.from_row(row) for row in rows]

    async def create(
        self, email: str, password: str, *, role: Role | None = None, is_admin: bool = False
    ) -> User:
        """A new active account; `ConflictError` when the email is taken.

        `is_admin=True` is short for `role="admin"`; without either the account is a member.
        """
        if role is None:
            role = "admin" if is_admin else "member"
        elif is_admin and role != "admin":
            raise InvalidInputError(f"is_admin=True contradicts role {role!r}")
        normalized = normalize_email(email)
        password_hash = await hash_password(password)
        return await self.insert(normalized, password_hash, role)

    async def insert(self, email: str, password_hash: str, role: Role) -> User:
        """Store an account whose password is already hashed (see `create`)."""
        normalized = normalize_email(email)
        try:
            row = await self.db.fetch_one(
                _SQL["insert_user"],
                normalized,
                password_hash,
                role,
            )
        except ConflictError:
            raise ConflictError(f"a user {normalized!r} already exists") from None
        assert row is not None
        return User.from_row(row)

    async def lock(self, user_id: int) -> User | None:
        """The account `user_id`, locked against other changes until the end of the current
        transaction (not against foreign-key checks, such as an audit entry naming it)."""
        row = await self.db.fetch_one(_SQL["lock_user"], user_id)
        return User.from_row(row) if row else None

    async def lock_for_share(self, user_id: int) -> User | None:
        """The account `user_id`, kept from changing until the end of the current transaction:
        a password reset or a disable waits for it (and then sees what it made)."""
        row = await self.db.fetch_one(_SQL["lock_user_for_share"], user_id)
        return User.from_row(row) if row else None

    async def upgrade_password_hash(self, user_id: int, old: str, new: str) -> None:
        """Store `new` (the same password, hashed with today's parameters) unless the password
        changed since `old` was read."""
        await self.db.execute(_SQL["upgrade_password_hash"], user_id, old, new)

    async def set_active(self, user_id: int, active: bool) -> None:
        await self.db.execute(_SQL["set_user_active"], user_id, active)

    async def set_role(self, user_id: int, role: Role) -> None:
        await self.db.execute(_SQL["set_user_role"], user_id, role)

    async def set_password(self, user_id: int, password: str) -> None:
        await self.set_password_hash(user_id, await hash_password(password))

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self.db.execute(_SQL["set_password_hash"], user_id, password_hash)

    async def other_active_admins(self, user_id: int) -> int:
        """How many active administrators there are besides `user_id` (local owner excluded)."""
        count = await self.db.fetch_val(_SQL["count_other_active_admins"], user_id)
        return int(count or 0)

    async def record_login(self, user_id: int) -> None:
        await self.db.execute(_SQL["record_login"], user_id)

    async def local_owner(self) -> User:
        """The built-in local owner (created by the migration, re-created if deleted)."""
        row = await self.db.fetch_one(_SQL["local_owner"])
        if row is None:
            await self.db.execute(_SQL["insert_local_owner"], LOCAL_OWNER_EMAIL)
            row = await self.db.fetch_one(_SQL["local_owner"])
        assert row is not None
        return User.from_row(row)

    async def ensure_first_admin(
        self, email: str | None, password: str | None
    ) -> CreatedAdmin | None:
        """Create an admin when no account exists yet (once, even with several instances)."""
        async with self.db.transaction():
            await self.db.execute(_DB_SQL["advisory_xact_lock"], _FIRST_ADMIN_LOCK)
            exists = await self.db.fetch_val(_SQL["any_user_exists"])
            if exists:
                return None
            generated = None if password else generate_password()
            user = await self.create(
                email or DEFAULT_ADMIN_EMAIL, password or str(generated), role="admin"
            )
            return CreatedAdmin(user, generated)
