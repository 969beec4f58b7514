"""Login sessions: a token family per login, refresh rotation, and reuse detection.

A refresh token works once. Presenting a spent one means it was copied: the whole family (every
access and refresh token of that login) is revoked, so the thief's copy dies with the user's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gathering.auth.revocation import RevocationStore
from gathering.auth.tokens import (
    IssuedToken,
    TokenClaims,
    TokenService,
    invalid_credentials,
    new_token_id,
)
from gathering.db import Database, Transaction
from gathering.db.named_queries import queries_of

REUSE_REASON = "refresh token reused"
_SQL = queries_of("gathering.auth")


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh hands out."""

    access: IssuedToken
    refresh: IssuedToken


@dataclass(frozen=True)
class SessionInfo:
    """A login session (token family) as an administrator sees it."""

    id: str
    user_id: int
    created_at: datetime
    expires_at: datetime
    last_refreshed_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str | None


async def user_sessions(db: Database, user_id: int, *, ended: bool = False) -> list[SessionInfo]:
    """The open sessions of `user_id`, newest first; with `ended`, revoked and expired too."""
    rows = await db.fetch_all(_SQL["user_sessions"], user_id, ended)
    return [SessionInfo(**row) for row in rows]


class RefreshTokenReused(Exception):
    """A spent refresh token came back; its family has been revoked."""

    def __init__(self, claims: TokenClaims) -> None:
        super().__init__("refresh token reused")
        self.claims = claims


# Writes a session change's audit entry inside its transaction.
PairAudit = Callable[[Transaction, TokenPair], Awaitable[None]]


def _timestamp(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


class SessionStore:
    """Creates, rotates and ends login sessions."""

    def __init__(self, db: Database, tokens: TokenService, revocations: RevocationStore) -> None:
        self.db = db
        self.tokens = tokens
        self.revocations = revocations

    async def _issue_pair(self, user_id: int, family_id: str) -> TokenPair:
        refresh = self.tokens.issue(user_id, "refresh", family_id)
        access = self.tokens.issue(user_id, "access", family_id, now=refresh.claims.issued_at)
        await self.db.execute(
            _SQL["insert_refresh_token"],
            refresh.claims.jti,
            family_id,
            user_id,
            _timestamp(refresh.claims.issued_at),
            _timestamp(refresh.claims.expires_at),
        )
        # A family lives as long as its newest refresh token (and so outlives every access token).
        await self.db.execute(
            _SQL["extend_token_family"],
            family_id,
            _timestamp(refresh.claims.expires_at),
        )
        return TokenPair(access, refresh)

    async def start(self, user_id: int, *, audit: PairAudit | None = None) -> TokenPair:
        """A new session for `user_id` with its first access and refresh tokens; `audit`
        writes its entry in the same transaction (when it fails, there is no session)."""
        family_id = new_token_id()
        async with self.db.transaction() as tx:
            await self.db.execute(_SQL["insert_token_family"], family_id, user_id)
            pair = await self._issue_pair(user_id, family_id)
            if audit is not None:
                await audit(tx, pair)
            return pair

    async def rotate(
        self, refresh_token: str, *, audit: PairAudit | None = None
    ) -> tuple[TokenClaims, TokenPair]:
        """Spend `refresh_token` for a new pair; raise `RefreshTokenReused` on a second use.

        `audit` runs in the transaction that spends the token: when it raises, nothing is spent.
        """
        claims = self.tokens.decode(refresh_token, "refresh")
        if await self.revocations.is_revoked(claims):
            raise invalid_credentials()
        reused = False
        async with self.db.transaction() as tx:
            row = await self.db.fetch_one(_SQL["lock_refresh_token"], claims.jti, claims.family_id)
            if row is None or row["revoked_at"] is not None or row["user_id"] != claims.user_id:
                raise invalid_credentials()
            if row["used_at"] is not None:
                reused = True
            else:
                await self.db.execute(_SQL["spend_refresh_token"], claims.jti)
                pair = await self._issue_pair(claims.user_id, claims.family_id)
                if audit is not None:
                    await audit(tx, pair)
        if reused:
            # Outside the transaction above: the revocation must stick although we answer 401.
            await self.revocations.revoke_family(claims.family_id, REUSE_REASON)
            raise RefreshTokenReused(claims)
        return claims, pair

    async def end(
        self,
        claims: TokenClaims,
        reason: str,
        *,
        audit: Callable[[Transaction], Awaitable[None]] | None = None,
    ) -> None:
        """End the session `claims` belongs to (logout): the token and its family, with the
        `audit` entry in the same transaction; this instance's cache learns it after the commit
        (a rolled-back logout must not go on refusing the token here alone)."""
        async with self.db.transaction() as tx:
            await self.revocations.store_token_revocation(claims, reason)
            session = await self.revocations.end_session(claims.user_id, claims.family_id, reason)
            if audit is not None:
                await audit(tx)
        self.revocations.remember_token(claims)
        self.revocations.remember([session] if session else [])
