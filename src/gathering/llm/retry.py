"""Retrying transient provider failures: exponential backoff with full jitter, bounded.

The SDKs' own retries are switched off (``max_retries=0``) so that this is the only retry
layer, and so that a rate limit with a long ``retry-after`` reaches the caller at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from gathering.errors import InvalidInputError, LLMError, ProviderRateLimitError

T = TypeVar("T")

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient errors (`LLMError.retryable`) are retried.

    `max_attempts` counts the first try. The wait before retry n is drawn uniformly from
    ``[0, min(max_delay, base_delay * 2**(n-1))]``. A rate limit that names its wait is waited
    out when that wait is at most `max_rate_limit_wait` seconds, and raised at once otherwise.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_rate_limit_wait: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidInputError("retry max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_rate_limit_wait) < 0:
            raise InvalidInputError("retry delays must not be negative")

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """Accept a policy, a mapping of its fields (e.g. from JSON config) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(
                f"unknown retry settings: {sorted(unknown)}",
                hint=f"known: {sorted(cls.__dataclass_fields__)}",
            )
        return cls(**value)

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not cryptography

    def delay_before_retry(self, attempt: int, error: LLMError) -> float | None:
        """Seconds to wait before retrying after `error`, or None to give up and raise it."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if isinstance(error, ProviderRateLimitError) and error.retry_after is not None:
            if error.retry_after > self.max_rate_limit_wait:
                return None
            return max(error.retry_after, 0.0)
        return self.backoff(attempt)


async def retry_async(
    operation: Callable[[], Awaitable[T]], policy: RetryPolicy, *, what: str = "LLM call"
) -> T:
    """Run `operation`, retrying the `LLMError`s the policy calls transient."""
    attempt = 1
    while True:
        try:
            return await operation()
        except LLMError as error:
            delay = policy.delay_before_retry(attempt, error)
            if delay is None:
                raise
            log.warning(
                "llm_retry",
                what=what,
                attempt=attempt,
                error=error.code,
                detail=error.message,
                wait_seconds=round(delay, 3),
            )
            await asyncio.sleep(delay)
            attempt += 1
