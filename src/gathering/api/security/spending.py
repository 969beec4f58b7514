"""Spending guards on the chat routes: their own rate tier (`chat`), and a cap on the turns one
user has running at once on this instance (`GATHERING_CHAT_MAX_CONCURRENT_PER_USER`).

Every chat turn passes `TurnAdmission.admit` before it starts; money budgets (the usage issue:
reserve before a call, settle after) belong there too.
"""

from __future__ import annotations

from collections import Counter

from gathering.auth.principal import Principal
from gathering.errors import RateLimitedError

BUSY_RETRY_AFTER = 5  # seconds a refused turn is asked to wait


class TurnSlot:
    """One admitted turn; `release()` (idempotent) gives the slot back."""

    def __init__(self, admission: TurnAdmission, user_id: int) -> None:
        self._admission, self._user_id = admission, user_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self._user_id)

    def __enter__(self) -> TurnSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class TurnAdmission:
    """Counts the chat turns each user has running here, and refuses one past the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: Counter[int] = Counter()

    def running(self, user_id: int) -> int:
        return self._running[user_id]

    def admit(self, principal: Principal) -> TurnSlot:
        """A slot for a turn of `principal`; `RateLimitedError` (429) past the cap."""
        return self.admit_user(principal.user_id)

    def admit_user(self, user_id: int) -> TurnSlot:
        """A slot for a turn of the user `user_id` (a turn resumed after an approval counts
        for the agent's owner); `RateLimitedError` past the cap."""
        if self._running[user_id] >= self.limit:
            raise RateLimitedError(
                f"you already have {self.limit} chat turn(s) running on this server",
                hint="wait for one to finish; an administrator can raise "
                "GATHERING_CHAT_MAX_CONCURRENT_PER_USER",
                retry_after=BUSY_RETRY_AFTER,
            )
        self._running[user_id] += 1
        return TurnSlot(self, user_id)

    def _release(self, user_id: int) -> None:
        self._running[user_id] -= 1
        if self._running[user_id] <= 0:
            del self._running[user_id]
