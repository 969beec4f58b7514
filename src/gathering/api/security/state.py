"""Per-app security state: the signing key, caches, limiter, and store factories."""

from __future__ import annotations

import asyncio

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

    async def users(self) -> UserStore:
        return UserStore(await self.db())

    async def api_keys(self) -> ApiKeyStore:
        return ApiKeyStore(await self.db())

    async def audit(self) -> AuditLog:
        return AuditLog(await self.db())

    async def ws_tickets(self) -> WsTicketStore:
        return WsTicketStore(await self.db())

    async def account_admin(self) -> AccountAdmin:
        """Audited, transactional account changes (revocations reach this app's cache)."""
        return AccountAdmin(await self.db(), self.revocation_cache)

    async def revocations(self) -> RevocationStore:
        return RevocationStore(await self.db(), self.revocation_cache)

    async def sessions(self) -> SessionStore:
        return SessionStore(await self.db(), await self.tokens(), await self.revocations())

    async def local_owner(self) -> Principal:
        """The principal every request acts as in single-user mode."""
        db = await self.db()
        if self._local_owner is None or self._local_owner[0] != id(db):
            user = await UserStore(db).local_owner()
            principal = Principal(user_id=user.id, email=user.email, is_admin=True, method="local")
            self._local_owner = (id(db), principal)
        return self._local_owner[1]
