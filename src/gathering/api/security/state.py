"""Per-app security state: the signing key, caches, limiter, and store factories."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from limits import RateLimitItem

from gathering.api.security.ratelimit import LoginThrottle, RateLimiter, Tier, tier_limits
from gathering.api.security.spending import TurnAdmission
from gathering.api.security.ws_limits import SocketLimits
from gathering.api.state import AppState
from gathering.auth.accounts import AccountAdmin
from gathering.auth.api_keys import ApiKeyStore
from gathering.auth.audit import AuditLog
from gathering.auth.principal import Principal
from gathering.auth.revocation import RevocationCache, RevocationStore
from gathering.auth.sessions import SessionStore
from gathering.auth.signing_key import load_signing_key
from gathering.auth.tokens import TokenService
from gathering.auth.users import UserStore
from gathering.auth.ws_tickets import WsTicketStore
from gathering.config import Settings
from gathering.db import Database


@dataclass(frozen=True)
class AuthServices:
    """The account stores of one database; `accounts` makes audited, transactional changes
    whose revocations reach this app's cache."""

    db: Database
    users: UserStore
    api_keys: ApiKeyStore
    audit: AuditLog
    ws_tickets: WsTicketStore
    accounts: AccountAdmin
    revocations: RevocationStore
    sessions: SessionStore


class SecurityState:
    """What the security layer of one app keeps between requests (`app.state.security`)."""

    def __init__(self, settings: Settings, app_state: AppState) -> None:
        self.settings = settings
        self.app_state = app_state
        self.revocation_cache = RevocationCache(settings.revocation_cache_size)
        self.tiers: dict[Tier, list[RateLimitItem]] = tier_limits(settings)
        self.login_throttle = LoginThrottle(settings)
        self.socket_limits = SocketLimits(settings)
        self.turn_admission = TurnAdmission(settings.chat_max_concurrent_per_user)
        self._tokens: TokenService | None = None
        self._limiter: RateLimiter | None = None
        self._local_owner: tuple[int, Principal] | None = None
        self._services: AuthServices | None = None

    async def db(self) -> Database:
        return await self.app_state.database()

    async def tokens(self) -> TokenService:
        """The token service (the key file, if any, is read once, off the event loop)."""
        if self._tokens is None:
            key = await asyncio.to_thread(load_signing_key, self.settings)
            self._tokens = TokenService(
                key,
                algorithm=self.settings.jwt_algorithm,
                access_ttl=self.settings.access_token_ttl,
                refresh_ttl=self.settings.refresh_token_ttl,
            )
        return self._tokens

    def limiter(self) -> RateLimiter:
        """The limiter of the running event loop (a storage's connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter.loop is not loop:
            self._limiter = RateLimiter(self.settings)
        return self._limiter

    async def close(self) -> None:
        if self._limiter is not None:
            await self._limiter.close()
            self._limiter = None

    async def services(self) -> AuthServices:
        """The account stores on the app's database, built once (again only if the database
        object changes, as in tests that swap it)."""
        db = await self.db()
        if self._services is None or self._services.db is not db:
            revocations = RevocationStore(db, self.revocation_cache)
            self._services = AuthServices(
                db=db,
                users=UserStore(db),
                api_keys=ApiKeyStore(db),
                audit=AuditLog(db),
                ws_tickets=WsTicketStore(db),
                accounts=AccountAdmin(db, self.revocation_cache),
                revocations=revocations,
                sessions=SessionStore(db, await self.tokens(), revocations),
            )
        return self._services

    async def local_owner(self) -> Principal:
        """The principal every request acts as in single-user mode."""
        db = await self.db()
        if self._local_owner is None or self._local_owner[0] != id(db):
            user = await UserStore(db).local_owner()
            principal = Principal(user_id=user.id, email=user.email, is_admin=True, method="local")
            self._local_owner = (id(db), principal)
        return self._local_owner[1]
