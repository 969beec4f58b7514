"""Circuit breakers, one per owner and target (`3/agent:writer`, `3/tool:web_page`,
`3/host:api.example.com`),
stored in PostgreSQL so that every instance sees the same state.

closed → open after `failures` failures within `window` seconds; while open, nodes on that
target fail at once with `circuit_open`; after `cooldown` seconds it reads half open and lets
calls try: a success closes it, a failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gathering.config import get_settings
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import CircuitOpenError

_SQL = queries_of("gathering.pipelines")


@dataclass(frozen=True)
class BreakerPolicy:
    """When a target's breaker opens and for how long."""

    failures: int = 5
    window: float = 60.0
    cooldown: float = 30.0

    @classmethod
    def from_settings(cls) -> BreakerPolicy:
        """GATHERING_BREAKER_FAILURES, _WINDOW and _COOLDOWN."""
        settings = get_settings()
        return cls(settings.breaker_failures, settings.breaker_window, settings.breaker_cooldown)


@dataclass(frozen=True)
class BreakerState:
    target: str
    state: str  # closed, open, half_open
    failures: int
    opened_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BreakerState:
        return cls(row["target"], row["state"], int(row["failures"]), row["opened_at"])


async def check_breaker(db: Queries, target: str, policy: BreakerPolicy) -> bool:
    """`CircuitOpenError` when `target`'s breaker is open (not when closed or half open);
    whether `target` has a breaker at all (one with no failure needs no reset on success)."""
    return admit(await db.fetch_one(_SQL["breaker_state"], target), target, policy)


def admit(row: dict[str, Any] | None, target: str, policy: BreakerPolicy) -> bool:
    """`check_breaker` on `target`'s breaker as read (`breaker_state`'s columns; None when it
    has none): an open one refuses the call until its cooldown is over (then it is half open
    and lets calls try)."""
    if row is None:
        return False
    if row["state"] == "open" and row["opened_at"] >= row["now"] - timedelta(
        seconds=policy.cooldown
    ):
        raise CircuitOpenError(
            f"circuit open for {target}: {row['failures']} recent failures",
            hint=f"it lets calls try again {policy.cooldown:g}s after it opened",
            details={"target": target},
        )
    return True


async def record_failure(db: Queries, target: str, policy: BreakerPolicy) -> str:
    """Count a failure of `target`; the breaker's state after it."""
    row = await db.fetch_one(
        _SQL["breaker_failure"], target, policy.window, policy.failures, policy.cooldown
    )
    assert row is not None
    return str(row["state"])


async def record_success(db: Queries, target: str) -> None:
    """A call of `target` succeeded: its breaker closes."""
    await db.execute(_SQL["breaker_success"], target)


async def list_breakers(
    db: Queries, policy: BreakerPolicy, *, owner_id: int | None = None
) -> list[BreakerState]:
    """Every target's breaker (or one owner's), as calls see it now."""
    prefix = None if owner_id is None else f"{owner_id}/"
    rows = await db.fetch_all(_SQL["list_breakers"], policy.cooldown, prefix)
    return [BreakerState.from_row(row) for row in rows]
