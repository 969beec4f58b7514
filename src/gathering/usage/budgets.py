"""Money and token budgets, enforced before each model call.

A call's estimated cost (its estimated input tokens plus its `max_tokens`, at the model's
price) is reserved on every budget the call is charged to, under a row lock of each budget
(`SELECT ... FOR UPDATE`) that serialises the reservations of one budget across instances: a
call is refused unless spent + reserved + its estimate stays within the limit. The ledger row
written after the call deletes the reservation in the same statement (see `ledger.record`), so
nothing is counted twice and nothing is missed; a reservation of a process that died expires.
Concurrent turns therefore overshoot a budget by at most what one call's actual cost exceeds
its estimate, per turn. Periods are UTC calendar days and months, or `total` (never resets).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
import structlog

from gathering.auth.audit import AuditLog, RequestOrigin
from gathering.db.database import Database, OnConnection, Queries
from gathering.db.named_queries import queries_of
from gathering.errors import BudgetExceededError, DatabaseError, InvalidInputError, NotFoundError
from gathering.events.outbox import write as write_events
from gathering.events.types import Event
from gathering.usage.attribution import Attribution

log = structlog.get_logger(__name__)

Scope = Literal["user", "agent", "circle", "pipeline", "task"]
BudgetPeriod = Literal["day", "month", "total"]
SCOPES: tuple[Scope, ...] = ("user", "agent", "circle", "pipeline", "task")
PERIODS: tuple[BudgetPeriod, ...] = ("day", "month", "total")
DEFAULT_WARN_PERCENT = 80
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCOPE_FIELD = {
    "user": "user_id",
    "agent": "agent_id",
    "circle": "circle_id",
    "pipeline": "pipeline_id",
    "task": "task_id",
}

_SQL = queries_of("gathering.usage")


@dataclass(frozen=True)
class Budget:
    """A budget and where it stands in its current period (UTC)."""

    id: int
    scope: Scope
    target_id: int
    period: BudgetPeriod
    limit_usd: float | None
    limit_tokens: int | None
    warn_percent: int
    period_start: datetime | None  # None for `total`
    resets_at: datetime | None  # None for `total`
    spent_usd: float
    spent_tokens: int
    reserved_usd: float
    reserved_tokens: int
    created_by: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Budget:
        """A `budget_states` row."""
        return cls(
            row["id"],
            row["scope"],
            row["target_id"],
            row["period"],
            row["limit_usd"],
            row["limit_tokens"],
            row["warn_percent"],
            row["period_start"],
            row["resets_at"],
            float(row["spent_usd"]),
            int(row["spent_tokens"]),
            float(row["reserved_usd"]),
            int(row["reserved_tokens"]),
            row["created_by"],
            row["created_at"],
            row["updated_at"],
        )

    def fraction_after(self, cost_usd: float, tokens: int) -> float:
        """The largest share of a limit that spent + reserved + this call would reach."""
        shares = []
        if self.limit_usd is not None:
            shares.append((self.spent_usd + self.reserved_usd + cost_usd) / self.limit_usd)
        if self.limit_tokens is not None:
            shares.append((self.spent_tokens + self.reserved_tokens + tokens) / self.limit_tokens)
        return max(shares, default=0.0)

    def fraction_spent(self) -> float:
        """The largest share of a limit that the settled spending (the ledger) has reached."""
        shares = []
        if self.limit_usd is not None:
            shares.append(self.spent_usd / self.limit_usd)
        if self.limit_tokens is not None:
            shares.append(self.spent_tokens / self.limit_tokens)
        return max(shares, default=0.0)

    def describe(self) -> dict[str, Any]:
        """The JSON-ready form used in errors and events."""
        return {
            "budget_id": self.id,
            "scope": self.scope,
            "target_id": self.target_id,
            "period": self.period,
            "limit_usd": self.limit_usd,
            "limit_tokens": self.limit_tokens,
            "spent_usd": round(self.spent_usd, 6),
            "spent_tokens": self.spent_tokens,
            "reserved_usd": round(self.reserved_usd, 6),
            "reserved_tokens": self.reserved_tokens,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }


@dataclass(frozen=True)
class BudgetSpec:
    """What an admin sets: a limit in USD and/or tokens for one target over one period."""

    scope: Scope
    target_id: int
    period: BudgetPeriod
    limit_usd: float | None = None
    limit_tokens: int | None = None
    warn_percent: int = DEFAULT_WARN_PERCENT

    def check(self) -> BudgetSpec:
        """This spec; `InvalidInputError` when it cannot be a budget."""
        if self.scope not in SCOPES:
            raise InvalidInputError(
                f"no budget scope {self.scope!r}", hint=f"use one of {', '.join(SCOPES)}"
            )
        if self.period not in PERIODS:
            raise InvalidInputError(
                f"no budget period {self.period!r}", hint=f"use one of {', '.join(PERIODS)}"
            )
        if self.limit_usd is None and self.limit_tokens is None:
            raise InvalidInputError(
                "a budget needs a limit", hint="give limit_usd, limit_tokens or both"
            )
        if self.limit_usd is not None and not self.limit_usd > 0:
            raise InvalidInputError("limit_usd must be more than 0")
        if self.limit_tokens is not None and self.limit_tokens < 1:
            raise InvalidInputError("limit_tokens must be at least 1")
        if not 1 <= self.warn_percent <= 100:
            raise InvalidInputError("warn_percent must be between 1 and 100")
        if self.target_id < 1:
            raise InvalidInputError("target_id must be a positive id")
        return self


async def list_budgets(
    q: Queries, scope: Scope | None = None, target_id: int | None = None
) -> list[Budget]:
    """The budgets (of `scope` and `target_id`, each None: any) with their current state."""
    rows = await q.fetch_all(_SQL["budget_states"], None, scope, target_id)
    return [Budget.from_row(row) for row in rows]


async def get_budget(q: Queries, budget_id: int) -> Budget:
    """Budget `budget_id` with its current state; `NotFoundError` when there is none."""
    rows = await q.fetch_all(_SQL["budget_states"], [budget_id], None, None)
    if not rows:
        raise NotFoundError(f"no budget {budget_id}", hint="list them: GET /budgets")
    return Budget.from_row(rows[0])


async def set_budget(
    db: Database,
    spec: BudgetSpec,
    *,
    actor_id: int | None,
    origin: RequestOrigin | None = None,
) -> Budget:
    """Create the budget of `spec`'s target and period, or change its limits; audited as
    `budget.set` in the same transaction."""
    spec.check()
    async with db.transaction() as tx:
        # Ledger rows written while a new budget is seeded would be counted by neither the
        # seed nor the counter: the ledger's writers wait (they never wait for a budget here).
        await tx.execute("LOCK TABLE usage.ledger IN SHARE MODE")
        row = await tx.fetch_one(
            _SQL["upsert_budget"],
            spec.scope,
            spec.target_id,
            spec.period,
            spec.limit_usd,
            spec.limit_tokens,
            spec.warn_percent,
            actor_id,
        )
        assert row is not None
        if row["inserted"]:
            await tx.execute(_SQL["seed_budget_spending"], row["id"])
        await AuditLog(db).record(
            "budget.set",
            "success",
            origin=origin,
            actor_id=actor_id,
            target_type="budget",
            target_id=row["id"],
            details={
                "created": bool(row["inserted"]),
                "scope": spec.scope,
                "target_id": spec.target_id,
                "period": spec.period,
                "limit_usd": spec.limit_usd,
                "limit_tokens": spec.limit_tokens,
                "warn_percent": spec.warn_percent,
            },
            on=tx,
        )
        return await get_budget(tx, int(row["id"]))


async def remove_budget(
    db: Database, budget_id: int, *, actor_id: int | None, origin: RequestOrigin | None = None
) -> None:
    """Delete budget `budget_id` (its reservations go with it); audited as `budget.removed`."""
    async with db.transaction() as tx:
        row = await tx.fetch_one(_SQL["delete_budget"], budget_id)
        if row is None:
            raise NotFoundError(f"no budget {budget_id}", hint="list them: GET /budgets")
        await AuditLog(db).record(
            "budget.removed",
            "success",
            origin=origin,
            actor_id=actor_id,
            target_type="budget",
            target_id=budget_id,
            details={"scope": row["scope"], "target_id": row["target_id"], "period": row["period"]},
            on=tx,
        )


@asynccontextmanager
async def _transaction(q: Queries) -> AsyncIterator[Queries]:
    """One transaction on `q`: the pool's, or on the connection `q` holds (a savepoint when
    that connection is in a transaction already)."""
    if isinstance(q, Database):
        async with q.transaction() as tx:
            yield tx
        return
    assert isinstance(q, OnConnection), "a reservation needs a database connection"
    try:
        async with q.connection.transaction():
            yield q
    except psycopg.Error as exc:
        raise DatabaseError(f"a budget reservation failed: {exc}") from exc


async def reserve(
    q: Queries,
    attribution: Attribution,
    cost_usd: float,
    tokens: int,
    *,
    seconds: float,
) -> uuid.UUID | None:
    """Reserve `cost_usd` and `tokens` on every budget `attribution` is charged to, for at
    most `seconds`; the call id that the ledger row of the call settles (None: no budget
    applies). `BudgetExceededError` when a budget cannot take it (nothing is reserved then).

    Events, on the settled spending (never on estimates): `budget.warning` once per budget
    and period when the spending has reached warn_percent; `budget.exceeded` once when it has
    reached the limit, or a call is refused past warn_percent; `budget.refused` for every
    refused call (it uses up neither)."""
    ids = scope_ids(attribution)
    if all(i is None for i in ids):
        return None
    refused: Budget | None = None
    call_id = uuid.uuid4()
    async with _transaction(q) as tx:
        locked = [row["id"] for row in await tx.fetch_all(_SQL["lock_budgets"], *ids)]
        if not locked:
            return None
        budgets = [
            Budget.from_row(row)
            for row in await tx.fetch_all(_SQL["budget_states"], locked, None, None)
        ]
        alerts: list[Event] = []
        for budget in budgets:
            spent = budget.fraction_spent()
            over = budget.fraction_after(cost_usd, tokens) > 1.0
            if spent * 100 >= budget.warn_percent:
                await _alert(tx, budget, "warning", cost_usd, tokens, alerts)
                if spent >= 1.0 or over:
                    await _alert(tx, budget, "exceeded", cost_usd, tokens, alerts)
            if over:
                refused = budget
                alerts.append(_event(budget, "refused", cost_usd, tokens))
                break
        if refused is None:
            await tx.execute(
                _SQL["insert_reservations"], call_id, locked, cost_usd, tokens, seconds
            )
        if alerts:
            await write_events(tx, alerts)
    if refused is not None:
        raise exceeded_error(refused, cost_usd, tokens)
    return call_id


async def refusal_of(
    q: Queries, attribution: Attribution, cost_usd: float, tokens: int
) -> BudgetExceededError | None:
    """The refusal `reserve` would answer a call of `cost_usd` and `tokens` with now, or None;
    a look only (nothing reserved, no event): for work that waits for a budget to decide
    whether to try again."""
    ids = [row["id"] for row in await q.fetch_all(_SQL["budgets_of"], *scope_ids(attribution))]
    if not ids:
        return None
    for row in await q.fetch_all(_SQL["budget_states"], ids, None, None):
        budget = Budget.from_row(row)
        if budget.fraction_after(cost_usd, tokens) > 1.0:
            return exceeded_error(budget, cost_usd, tokens)
    return None


def larger_than_its_budget(refusal: BudgetExceededError) -> bool:
    """Whether the refused call is larger than the budget's whole limit (no reset, no wait
    makes room for it)."""
    details = refusal.details
    over_usd = (details.get("limit_usd") is not None) and (
        details.get("call_estimate_usd", 0) > details["limit_usd"]
    )
    over_tokens = (details.get("limit_tokens") is not None) and (
        details.get("call_estimate_tokens", 0) > details["limit_tokens"]
    )
    return over_usd or over_tokens


def reset_of(refusal: BudgetExceededError) -> datetime | None:
    """When the refusing budget's period ends (None for a `total` budget)."""
    resets = refusal.details.get("resets_at")
    return datetime.fromisoformat(resets) if isinstance(resets, str) else None


async def _alert(
    tx: Queries, budget: Budget, kind: str, cost_usd: float, tokens: int, alerts: list[Event]
) -> None:
    """Queue the `budget.<kind>` event, unless it was sent already in this period."""
    start = budget.period_start or EPOCH  # `total`: one period, from the start
    first = await tx.fetch_val(_SQL["insert_budget_alert"], budget.id, kind, start)
    if first is None:
        return
    alerts.append(_event(budget, kind, cost_usd, tokens))


def _event(budget: Budget, kind: str, cost_usd: float, tokens: int) -> Event:
    """The `budget.<kind>` event of `budget`, for a call estimated at `cost_usd` and `tokens`."""
    data = budget.describe() | {"warn_percent": budget.warn_percent}
    data |= {"call_estimate_usd": round(cost_usd, 6), "call_estimate_tokens": tokens}
    log.warning(f"budget {kind}", **budget.describe())
    return Event(f"budget.{kind}", data, subject=f"budget:{budget.id}")


def exceeded_error(budget: Budget, cost_usd: float, tokens: int) -> BudgetExceededError:
    """The refusal of a call that `budget` cannot take."""
    when = f"it resets at {budget.resets_at:%Y-%m-%d %H:%M} UTC" if budget.resets_at else ""
    period = {"day": "for today (UTC)", "month": "for this month (UTC)", "total": "in total"}
    return BudgetExceededError(
        f"the {budget.scope} {budget.target_id} budget ({budget.id}) {period[budget.period]} "
        f"cannot take this model call{': ' + when if when else ''}",
        hint="an admin can raise it (`gathering budgets set` or PUT /budgets), then resume or "
        "send the message again" + ("; or wait for the reset" if budget.resets_at else ""),
        details=budget.describe() | {"call_estimate_usd": cost_usd, "call_estimate_tokens": tokens},
    )


def scope_ids(attribution: Attribution) -> Sequence[int | None]:
    """The target id of each budget scope (`SCOPES` order) that `attribution` names."""
    return [getattr(attribution, _SCOPE_FIELD[scope]) for scope in SCOPES]
