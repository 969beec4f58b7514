"""Rate limits with the `limits` library: per-endpoint tiers and failed-login throttling.

Counters live in memory (one process) or in Redis (shared by every instance). A storage that
cannot be reached lets requests through and logs an error: an outage of the limiter must not
become an outage of the API. Login is the exception: failed logins that cannot be counted
could be guessed without limit, so by default (`GATHERING_AUTH_THROTTLE_FAIL=closed`) login
answers 503 until the storage is back.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError

from gathering.config import Settings, redact_credentials
from gathering.errors import ConfigurationError, GatheringError, RateLimitedError

log = structlog.get_logger(__name__)

Tier = Literal["strict", "standard", "relaxed", "bulk", "chat"]
TIERS: tuple[Tier, ...] = get_args(Tier)
DEFAULT_TIER: Tier = "standard"
REDIS_TIMEOUT = 2.0
# Seconds a refused login asks the client to wait while the storage is down.
THROTTLE_UNAVAILABLE_RETRY_AFTER = 10


@dataclass(frozen=True)
class RateLimitStatus:
    """Where a caller stands against a limit after a request."""

    limit: int
    remaining: int
    reset_at: int  # epoch seconds when a slot frees up
    allowed: bool
    window: int  # seconds the limit counts over

    @property
    def retry_after(self) -> int:
        return min(self.window, max(1, math.ceil(self.reset_at - time.time())))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


def tier_limits(settings: Settings) -> dict[Tier, list[RateLimitItem]]:
    """The limits of each tier (a tier may combine several: `10/second;100/hour`)."""
    return {
        "strict": parse_many(settings.rate_limit_strict),
        "standard": parse_many(settings.rate_limit_standard),
        "relaxed": parse_many(settings.rate_limit_relaxed),
        "bulk": parse_many(settings.rate_limit_bulk),
        "chat": parse_many(settings.rate_limit_chat),
    }


def _storage(settings: Settings) -> Storage:
    url = settings.rate_limit_storage
    if url.startswith("memory:"):
        return MemoryStorage()
    try:
        return RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=settings.rate_limit_key_prefix,
            wrap_exceptions=True,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
        )
    except (LimitsConfigurationError, ValueError) as exc:
        # Their text quotes the URL: the log gets it without the password, a client nothing.
        log.error("rate-limit storage URL refused", error=redact_credentials(str(exc), url))
        raise ConfigurationError(
            "GATHERING_RATE_LIMIT_STORAGE is not a usable storage URL (the server log says why)",
            hint="write it like redis://host:6379/0, percent-encoding / ? # @ in a password",
        ) from None


class RateLimiter:
    """A moving-window limiter over the configured storage (made per event loop)."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.rate_limit_storage
        self.storage = _storage(settings)
        self._strategy = MovingWindowRateLimiter(self.storage)
        self.loop = asyncio.get_running_loop()

    async def _status(
        self, items: list[RateLimitItem], identifiers: tuple[str, ...], *, consume: bool
    ) -> RateLimitStatus | None:
        tightest: RateLimitStatus | None = None
        try:
            for item in items:
                if consume:
                    allowed = await self._strategy.hit(item, *identifiers)
                else:
                    allowed = await self._strategy.test(item, *identifiers)
                stats = await self._strategy.get_window_stats(item, *identifiers)
                status = RateLimitStatus(
                    limit=item.amount,
                    remaining=max(0, stats.remaining),
                    reset_at=math.ceil(stats.reset_time),
                    allowed=allowed,
                    window=item.get_expiry(),
                )
                if tightest is None or (not status.allowed, -status.remaining) > (
                    not tightest.allowed,
                    -tightest.remaining,
                ):
                    tightest = status
        except StorageError as exc:
            log.error(
                "rate-limit storage unavailable; request let through",
                storage=redact_credentials(self._url, self._url),
                error=redact_credentials(str(exc), self._url),
            )
            return None
        return tightest

    async def hit(self, items: list[RateLimitItem], *identifiers: str) -> RateLimitStatus | None:
        """Count one request; the status of the tightest limit (None if storage is down)."""
        return await self._status(items, identifiers, consume=True)

    async def peek(self, items: list[RateLimitItem], *identifiers: str) -> RateLimitStatus | None:
        """The status without counting a request."""
        return await self._status(items, identifiers, consume=False)

    async def clear(self, items: list[RateLimitItem], *identifiers: str) -> None:
        """Forget the counts (e.g. of an account after a successful login)."""
        try:
            for item in items:
                await self._strategy.clear(item, *identifiers)
        except StorageError as exc:
            log.error(
                "rate-limit storage unavailable; counter not cleared",
                storage=redact_credentials(self._url, self._url),
                error=redact_credentials(str(exc), self._url),
            )

    async def close(self) -> None:
        """Release the storage's connections."""
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def rate_limited(status: RateLimitStatus, what: str = "requests") -> RateLimitedError:
    """The 429 error for an exhausted `status`."""
    return RateLimitedError(
        f"too many {what}; retry in {status.retry_after} s", retry_after=status.retry_after
    )


class LoginThrottleUnavailableError(GatheringError):
    """Failed logins cannot be counted (the rate-limit storage does not answer), so login is
    refused rather than left open to unlimited guessing (`GATHERING_AUTH_THROTTLE_FAIL`)."""

    code = "login_unavailable"
    http_status = 503

    def __init__(self) -> None:
        super().__init__(
            "login is unavailable for now: failed attempts cannot be counted because the "
            "rate-limit storage does not answer",
            hint=f"retry in {THROTTLE_UNAVAILABLE_RETRY_AFTER} s; operators: bring back the "
            "storage of GATHERING_RATE_LIMIT_STORAGE (the server log says why it fails), or set "
            "GATHERING_AUTH_THROTTLE_FAIL=open to accept logins uncounted meanwhile",
            details={"retry_after": THROTTLE_UNAVAILABLE_RETRY_AFTER},
        )


class LoginThrottle:
    """Failed logins counted per account and per client address."""

    def __init__(self, settings: Settings) -> None:
        self.per_account = parse_many(settings.login_attempts_per_account)
        self.per_ip = parse_many(settings.login_attempts_per_ip)
        self.fail_closed = settings.auth_throttle_fail == "closed"

    async def attempt(self, limiter: RateLimiter, email: str, ip: str) -> None:
        """Count a login attempt against the account and the address before the password is
        checked (so concurrent guesses cannot slip past); `RateLimitedError` when either has
        no attempts left. A successful login clears the account's count. When the storage
        cannot count, `LoginThrottleUnavailableError` (fail closed) or nothing (fail open)."""
        await self._count(limiter, self.per_account, ("login-failures", "account", email), "logins")
        await self._count(limiter, self.per_ip, ("login-failures", "ip", ip), "logins")

    async def succeeded(self, limiter: RateLimiter, email: str) -> None:
        await limiter.clear(self.per_account, "login-failures", "account", email)

    async def password_check(self, limiter: RateLimiter, user_id: int) -> None:
        """Count a guess at a logged-in user's current password (a password change) against
        that user alone, at the per-account rate: a stranger's failed logins cannot stop the
        user changing a password they know, and a stolen session cannot lock out their login."""
        checks = ("password-checks", "user", str(user_id))
        await self._count(limiter, self.per_account, checks, "password checks")

    async def password_check_succeeded(self, limiter: RateLimiter, user_id: int) -> None:
        await limiter.clear(self.per_account, "password-checks", "user", str(user_id))

    async def _count(
        self,
        limiter: RateLimiter,
        items: list[RateLimitItem],
        identifiers: tuple[str, ...],
        what: str,
    ) -> None:
        status = await limiter.hit(items, *identifiers)
        if status is None and self.fail_closed:
            log.error(f"{what} refused: failed attempts cannot be counted", fail="closed")
            raise LoginThrottleUnavailableError()
        if status is not None and not status.allowed:
            raise rate_limited(status, f"failed {what}")
