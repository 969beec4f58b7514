"""Money and token budgets per user, agent, circle, pipeline or background task, over a UTC
day, a UTC month or in total. Everyone may read the budgets that concern them (admins: all);
only admins set and remove them (API keys: `usage:read` to read, `budgets:write` to change),
and every change is audited. A model call that a budget cannot take is refused before it is
made with 402 `budget_exceeded`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from gathering.api.deps import MAX_ID, DbDep
from gathering.api.fields import Integer, Number, WholeNumber
from gathering.api.security import not_found, require_admin, require_scope
from gathering.api.security.origin import request_origin
from gathering.auth.principal import Principal
from gathering.usage import Budget, BudgetSpec, get_budget, list_budgets, remove_budget, set_budget
from gathering.usage.budgets import DEFAULT_WARN_PERCENT

router = APIRouter(prefix="/budgets", tags=["budgets"])
BudgetsReader = Annotated[Principal, Depends(require_scope("usage:read"))]
BudgetId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The budget's id")]


async def budgets_writer(
    conn: HTTPConnection, principal: Principal = Depends(require_scope("budgets:write"))
) -> Principal:
    """Dependency: an admin whose credentials grant `budgets:write` (403 otherwise)."""
    return await require_admin(conn, principal)


BudgetsWriter = Annotated[Principal, Depends(budgets_writer)]
Scope = Literal["user", "agent", "circle", "pipeline", "task"]
Period = Literal["day", "month", "total"]


class BudgetIn(BaseModel):
    """A budget: whose (scope and target id), over what period, and its limits (one at least)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["limit_usd"], "properties": {"limit_usd": {"type": "number"}}},
                {"required": ["limit_tokens"], "properties": {"limit_tokens": {"type": "integer"}}},
            ]
        },
    )

    scope: Scope
    target_id: Integer = Field(ge=1, le=MAX_ID, description="The user, agent, circle, ... id")
    period: Period = Field(description="day and month are UTC calendar periods")
    limit_usd: Annotated[Number, Field(ge=1e-6, le=1e9)] | None = Field(
        default=None, description="USD"
    )
    limit_tokens: Annotated[Integer, Field(ge=1, le=MAX_ID)] | None = Field(
        default=None, description="Tokens"
    )
    warn_percent: Integer = Field(
        default=DEFAULT_WARN_PERCENT, ge=1, le=100, description="budget.warning at this share"
    )


class BudgetOut(BaseModel):
    id: int
    scope: str
    target_id: int
    period: str
    limit_usd: float | None
    limit_tokens: int | None
    warn_percent: int
    period_start: datetime | None = Field(description="Start of the current period (UTC)")
    resets_at: datetime | None = Field(description="When the period resets (null: total)")
    spent_usd: float
    spent_tokens: int
    reserved_usd: float = Field(description="Held by model calls in progress")
    reserved_tokens: int
    created_by: int | None
    created_at: datetime
    updated_at: datetime


def _out(budget: Budget) -> BudgetOut:
    return BudgetOut.model_validate(budget, from_attributes=True)


def _visible(principal: Principal, budget: Budget) -> bool:
    return principal.is_admin or (budget.scope == "user" and budget.target_id == principal.user_id)


@router.get("", summary="Budgets and where each stands in its period")
async def list_budgets_route(
    principal: BudgetsReader,
    db: DbDep,
    scope: Scope | None = None,
    target_id: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[BudgetOut]:
    budgets = await list_budgets(db, scope, target_id)
    return [_out(b) for b in budgets if _visible(principal, b)]


@router.get("/{budget_id}", summary="One budget")
async def get_budget_route(budget_id: BudgetId, principal: BudgetsReader, db: DbDep) -> BudgetOut:
    budget = await get_budget(db, budget_id)
    if not _visible(principal, budget):
        raise not_found("budget", budget_id)
    return _out(budget)


@router.put(
    "",
    summary="Set a budget (create it, or change the limits of its scope, target and period)",
)
async def set_budget_route(
    request: Request, body: BudgetIn, principal: BudgetsWriter, db: DbDep
) -> BudgetOut:
    spec = BudgetSpec(**body.model_dump())
    budget = await set_budget(db, spec, actor_id=principal.user_id, origin=request_origin(request))
    return _out(budget)


@router.delete("/{budget_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a budget")
async def remove_budget_route(
    request: Request, budget_id: BudgetId, principal: BudgetsWriter, db: DbDep
) -> Response:
    await remove_budget(db, budget_id, actor_id=principal.user_id, origin=request_origin(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
