"""Service API keys for automation: `X-API-Key: gth_<prefix>_<secret>`, hashed at rest, scoped.

The secret is 256 random bits, so a plain SHA-256 is enough at rest (a slow hash protects
guessable passwords, not random keys); the prefix finds the row without revealing the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gathering.db import Database
from gathering.db.named_queries import queries_of
from gathering.errors import InvalidInputError

KEY_MARKER = "gth"
MAX_SCOPES = 32
SCOPE_PATTERN = (
    r"^(\*|admin|[a-z][a-z0-9_-]{0,39}:(\*|[a-z][a-z0-9_-]{0,39})|\*:[a-z][a-z0-9_-]{0,39})$"
)
_SCOPE = re.compile(SCOPE_PATTERN)
_PREFIX = re.compile(r"^[0-9a-f]{12}$")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").hexdigest()
_SQL = queries_of("gathering.auth")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """The scopes, de-duplicated; `InvalidInputError` for a malformed one."""
    if len(scopes) > MAX_SCOPES:
        raise InvalidInputError(f"at most {MAX_SCOPES} scopes")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise InvalidInputError(
                f"{scope[:50]!r} is not a scope",
                hint="use `*`, `admin`, `resource:action`, `resource:*` or `*:action`",
            )
    return sorted(set(scopes))


def scope_allows(scopes: frozenset[str], required: str) -> bool:
    """True when `scopes` grant `required` (e.g. `agents:write`)."""
    if "*" in scopes or required in scopes:
        return True
    resource, _, action = required.partition(":")
    return bool(action) and (f"{resource}:*" in scopes or f"*:{action}" in scopes)


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never its secret)."""

    id: int
    user_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApiKey:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key and the full secret, shown once."""

    key: ApiKey
    secret: str


class ApiKeyStore:
    """Queries on `auth.api_keys`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, user_id: int, name: str, scopes: list[str], *, expires_in_days: int | None = None
    ) -> CreatedApiKey:
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        expires_at = (
            datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        )
        row = await self.db.fetch_one(
            _SQL["insert_api_key"],
            user_id,
            name,
            prefix,
            _digest(secret),
            check_scopes(scopes),
            expires_at,
        )
        assert row is not None
        return CreatedApiKey(ApiKey.from_row(row), f"{KEY_MARKER}_{prefix}_{secret}")

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The live key matching `presented`, or None (same work for unknown prefixes)."""
        marker, _, rest = presented.partition("_")
        prefix, _, secret = rest.partition("_")
        well_formed = marker == KEY_MARKER and bool(_PREFIX.match(prefix)) and bool(secret)
        row = (
            await self.db.fetch_one(_SQL["live_api_key_by_prefix"], prefix) if well_formed else None
        )
        stored = row["secret_hash"] if row else _DUMMY_DIGEST
        matches = hmac.compare_digest(_digest(secret), stored)
        if row is None or not matches:
            return None
        await self.db.execute(_SQL["touch_api_key"], row["id"])
        return ApiKey.from_row(row)

    async def list_keys(self, user_id: int | None) -> list[ApiKey]:
        """Keys of `user_id` (every user's when None), newest first."""
        rows = await self.db.fetch_all(_SQL["list_api_keys"], user_id)
        return [ApiKey.from_row(row) for row in rows]

    async def get(self, key_id: int) -> ApiKey | None:
        row = await self.db.fetch_one(_SQL["api_key_by_id"], key_id)
        return ApiKey.from_row(row) if row else None

    async def revoke(self, key_id: int) -> bool:
        """Revoke a key; False when it was revoked already (or does not exist)."""
        row = await self.db.execute(_SQL["revoke_api_key"], key_id)
        return row is not None

    async def revoke_user_keys(self, user_id: int) -> int:
        """Revoke every live key of `user_id` (disable, password reset); return how many."""
        count = await self.db.fetch_val(_SQL["revoke_user_api_keys"], user_id)
        return int(count or 0)
