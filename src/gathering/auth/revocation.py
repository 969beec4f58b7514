"""Token revocation: persisted in PostgreSQL, with a bounded in-memory cache in front.

Revocation only ever goes one way (a revoked token or session never becomes valid again), so
the cache holds known-revoked entries only and can never be stale; a miss asks the database,
which every instance shares.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from gathering.auth.tokens import TokenClaims
from gathering.db import Database
from gathering.db.named_queries import queries_of

_SQL = queries_of("gathering.auth")


class RevocationCache:
    """A bounded LRU of revoked keys (`jti:...`, `fam:...`), each kept until it expires."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, expires_at: float) -> None:
        """Remember that `key` is revoked until `expires_at` (epoch seconds)."""
        if expires_at <= time.time():
            return
        self._entries[key] = expires_at
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def contains(self, key: str) -> bool:
        """True when `key` is known to be revoked (and not yet expired)."""
        expires_at = self._entries.get(key)
        if expires_at is None:
            return False
        if expires_at <= time.time():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def purge_expired(self) -> int:
        """Drop expired entries; return how many."""
        now = time.time()
        expired = [key for key, expires_at in self._entries.items() if expires_at <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)


@dataclass(frozen=True)
class RevokedSession:
    """A session a revocation ended: its family id and when it would have expired."""

    family_id: str
    expires_at: datetime


@dataclass
class PurgeResult:
    """How many expired rows a purge removed."""

    revoked_tokens: int
    families: int


def _timestamp(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class RevocationStore:
    """Revoke tokens and sessions, and check them, through the cache and the database."""

    def __init__(self, db: Database, cache: RevocationCache) -> None:
        self.db = db
        self.cache = cache

    async def is_revoked(self, claims: TokenClaims) -> bool:
        """True when the token itself or its whole session (family) was revoked."""
        jti_key, family_key = f"jti:{claims.jti}", f"fam:{claims.family_id}"
        if self.cache.contains(jti_key) or self.cache.contains(family_key):
            return True
        row = await self.db.fetch_one(_SQL["revocation_of"], claims.jti, claims.family_id)
        assert row is not None
        if row["token"]:
            self.cache.add(jti_key, claims.expires_at)
            return True
        if row["family_expires"] is not None:
            self.cache.add(family_key, row["family_expires"].timestamp())
            return True
        return False

    async def revoke_token(self, claims: TokenClaims, reason: str) -> None:
        """Revoke one token until it would have expired."""
        await self.store_token_revocation(claims, reason)
        self.remember_token(claims)

    async def store_token_revocation(self, claims: TokenClaims, reason: str) -> None:
        """Revoke one token in the database only (inside a transaction: `remember_token` once
        it has committed)."""
        await self.db.execute(
            _SQL["insert_revoked_token"],
            claims.jti,
            claims.user_id,
            claims.token_type,
            _timestamp(claims.expires_at),
            reason,
        )

    def remember_token(self, claims: TokenClaims) -> None:
        """Put a committed token revocation in this instance's cache."""
        self.cache.add(f"jti:{claims.jti}", claims.expires_at)

    async def revoke_family(self, family_id: str, reason: str) -> bool:
        """Revoke a whole session (every access and refresh token of it); True if it existed."""
        row = await self.db.execute(_SQL["revoke_token_family"], family_id, reason)
        if row is None:
            return False
        self.cache.add(f"fam:{family_id}", row["expires_at"].timestamp())
        return True

    async def end_user_sessions(
        self, user_id: int, reason: str, *, keep_family: str | None = None
    ) -> list[RevokedSession]:
        """Revoke the open sessions of a user but `keep_family`, in the database only.

        Inside a transaction, call `remember(...)` with the result once it has committed: a
        rolled-back revocation must not stay in the cache.
        """
        rows = await self.db.fetch_all(_SQL["end_user_sessions"], user_id, reason, keep_family)
        return [RevokedSession(row["id"], row["expires_at"]) for row in rows]

    async def end_session(self, user_id: int, family_id: str, reason: str) -> RevokedSession | None:
        """Revoke the open session `family_id` of `user_id` in the database only (see
        `end_user_sessions`); None when the user has no such open session."""
        row = await self.db.fetch_one(_SQL["end_session"], family_id, user_id, reason)
        return RevokedSession(row["id"], row["expires_at"]) if row else None

    def remember(self, sessions: list[RevokedSession]) -> None:
        """Put committed session revocations in this instance's cache."""
        for session in sessions:
            self.cache.add(f"fam:{session.family_id}", session.expires_at.timestamp())

    async def purge_expired(self) -> PurgeResult:
        """Delete revocations and sessions past their expiry (their tokens are dead anyway)."""
        self.cache.purge_expired()
        tokens = await self.db.fetch_val(_SQL["purge_revoked_tokens"])
        families = await self.db.fetch_val(_SQL["purge_token_families"])
        return PurgeResult(int(tokens or 0), int(families or 0))
