"""The usage ledger: one row per model call, embedding call and tool call, written with what
the call produced, and the reports read from it (`GET /usage`, `GET /usage/summary`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import structlog

from gathering.catalog.models import model_price
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import DatabaseError
from gathering.llm.types import Usage
from gathering.usage.attribution import Attribution, current_attribution

Kind = Literal["model", "embedding", "tool"]
Period = Literal["day", "week", "month"]
Group = Literal["user", "agent", "circle", "model", "provider", "kind"]
MAX_REPORT_ROWS = 10_000

log = structlog.get_logger(__name__)

_SQL = queries_of("gathering.usage")


@dataclass(frozen=True)
class LedgerEntry:
    """One event to charge: a model call, an embedding call or a tool call.

    `reservation` is the call id of the budget reservation this row settles (deleted in the
    same statement), if the call reserved one; `call_id` names the call (default: the
    reservation's), whose row is written once. `estimated`: the provider reported no usage,
    the tokens are an estimate.
    """

    kind: Kind
    attribution: Attribution
    provider: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 1
    cost_usd: float | None = None
    latency_ms: int | None = None
    outcome: str = "ok"
    reservation: UUID | None = None
    estimated: bool = False
    call_id: UUID | None = None


async def call_cost(q: Queries, provider: str, model: str, usage: Usage) -> float | None:
    """The USD cost of `usage` on `model` at the catalog's price now (an admin's override, else
    the shipped table); None when the model is unpriced."""
    price = await model_price(q, provider.replace("\x00", ""), model.replace("\x00", ""))
    return None if price is None else price.cost(usage.input_tokens, usage.output_tokens)


MAX_TOKENS = 2**62
"""Reported token counts are clamped to this (a provider's absurd usage still gets its row)."""


async def record(q: Queries, entry: LedgerEntry) -> int | None:
    """Write `entry` as one ledger row (settling its reservation); its id (None: the row of
    that call id was written already)."""
    who = entry.attribution
    row_id = await q.fetch_val(
        _SQL["insert_ledger_row"],
        entry.kind,
        who.user_id,
        who.agent_id,
        who.circle_id,
        who.pipeline_id,
        who.pipeline_run_id,
        who.task_id,
        entry.provider.replace("\x00", "")[:200],  # a provider's answer names the model:
        entry.model.replace("\x00", "")[:200],  # PostgreSQL text holds no NUL
        min(max(0, entry.input_tokens), MAX_TOKENS),
        min(max(0, entry.output_tokens), MAX_TOKENS),
        min(max(0, entry.calls), 2**31 - 1),
        None if entry.cost_usd is None else max(0.0, entry.cost_usd),
        None if entry.latency_ms is None else min(max(0, entry.latency_ms), 2**31 - 1),
        entry.outcome[:100],
        entry.reservation,
        entry.estimated,
        entry.call_id,
    )
    return None if row_id is None else int(row_id)


async def record_embedding(
    q: Queries | None, provider: str, model: str, input_tokens: int, latency_ms: int | None = None
) -> None:
    """Charge one embedding call of `input_tokens` to the current attribution. Without a
    database nothing is written; a row the database refuses is logged, not raised (the
    vectors were made and are kept)."""
    if q is None:
        return
    try:
        cost = await call_cost(q, provider, model, Usage(input_tokens, 0))
        who = current_attribution()
        entry = LedgerEntry("embedding", who, provider, model, input_tokens, 0, 1, cost, latency_ms)
        await record(q, entry)
    except DatabaseError as exc:
        log.warning("embedding call not written to the usage ledger", error=exc.message)


async def record_tool_call(
    q: Queries | None,
    tool: str,
    outcome: str,
    latency_ms: int,
    *,
    agent_id: int | None = None,
    owner_id: int | None = None,
) -> None:
    """Charge one tool call (its duration and outcome) to the current attribution, the agent
    that made it and (when no caller named a user) its owner. Without a database nothing is
    written; a row the database refuses is logged, not raised: the tool has run."""
    if q is None:
        return
    who = current_attribution().merged(agent_id=agent_id)
    if who.user_id is None:
        who = who.merged(user_id=owner_id)
    entry = LedgerEntry("tool", who, "", tool, 0, 0, 1, None, max(0, latency_ms), outcome)
    try:
        await record(q, entry)
    except DatabaseError as exc:
        log.warning("tool call not written to the usage ledger", tool=tool, error=exc.message)


@dataclass(frozen=True)
class ReportFilter:
    """What `GET /usage` sums: the time range and the ids to keep (None: any)."""

    since: datetime | None = None
    until: datetime | None = None
    user_id: int | None = None
    agent_id: int | None = None
    circle_id: int | None = None
    provider: str | None = None
    model: str | None = None
    kind: Kind | None = None


async def report(
    q: Queries, period: Period, group: Group, where: ReportFilter, limit: int = MAX_REPORT_ROWS
) -> list[dict[str, Any]]:
    """The ledger summed per `period` (UTC) and `group`, oldest period first."""
    return await q.fetch_all(
        _SQL["usage_report"],
        period,
        group,
        where.since,
        where.until,
        where.user_id,
        where.agent_id,
        where.circle_id,
        where.provider,
        where.model,
        where.kind,
        limit,
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """`value` safe for a spreadsheet: a text starting like a formula (= + - @ tab, CR) gets a
    leading `'`, so that it is shown as text and never evaluated (CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def day_start(now: datetime | None = None) -> datetime:
    """The start of the current UTC day."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime | None = None) -> datetime:
    """The start of the current UTC month."""
    return day_start(now).replace(day=1)


async def summary(q: Queries, user_id: int | None, top: int = 5) -> dict[str, Any]:
    """Today's and this month's totals (UTC), and the costliest agents and models this month,
    of `user_id` (None: everyone's)."""
    today, month = day_start(), month_start()
    return {
        "today": await q.fetch_one(_SQL["usage_totals"], today, user_id),
        "month": await q.fetch_one(_SQL["usage_totals"], month, user_id),
        "top_agents": await q.fetch_all(_SQL["usage_top"], month, user_id, top, "agent"),
        "top_models": await q.fetch_all(_SQL["usage_top"], month, user_id, top, "model"),
        "day_start": today,
        "month_start": month,
    }
