"""The usage ledger: `GET /usage` sums it per day, week or month (UTC), grouped by user,
agent, circle, model, provider or kind, with filters, as JSON or CSV (`format=csv`, or
`Accept: text/csv`); `GET /usage/summary` is the dashboard's overview (today, this month, the
costliest agents and models). A user sees their own usage; admins see everyone's and may
filter by user. API keys need `usage:read`.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from gathering.api.deps import MAX_ID, DbDep
from gathering.api.fields import NO_NUL_PATTERN, IsoDatetime, WholeNumber
from gathering.api.security import require_scope
from gathering.auth.principal import Principal
from gathering.errors import PermissionDeniedError
from gathering.usage import ReportFilter, csv_cell, report, summary
from gathering.usage.ledger import MAX_REPORT_ROWS

router = APIRouter(tags=["usage"])
UsageReader = Annotated[Principal, Depends(require_scope("usage:read"))]
CSV_COLUMNS = (
    "period_start",
    "key",
    "calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_calls",
    "failed_calls",
)


class UsageRow(BaseModel):
    period_start: datetime = Field(description="Start of the day, week or month (UTC)")
    key: str | None = Field(
        description="The group's value: a user, agent or circle id, a model, a provider or a "
        "kind (null: rows without one, e.g. calls outside any circle)"
    )
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(description="USD; unpriced model calls count 0")
    unpriced_calls: int = Field(description="Model calls of a model without a known price")
    failed_calls: int = Field(description="Calls whose outcome was not ok")


class UsageReport(BaseModel):
    period: str
    group_by: str
    rows: list[UsageRow]


class UsageTotals(BaseModel):
    model_calls: int
    input_tokens: int
    output_tokens: int
    embedding_tokens: int
    tool_calls: int
    cost_usd: float


class UsageTop(BaseModel):
    key: str | None = Field(description="The agent id, or the model")
    provider: str
    calls: int
    tokens: int
    cost_usd: float


class UsageSummary(BaseModel):
    day_start: datetime = Field(description="Start of today (UTC)")
    month_start: datetime = Field(description="Start of this month (UTC)")
    today: UsageTotals
    month: UsageTotals
    top_agents: list[UsageTop] = Field(description="The costliest agents this month")
    top_models: list[UsageTop] = Field(description="The costliest models this month")


def _user_filter(principal: Principal, user: int | None) -> int | None:
    """Whose usage the caller may read: an admin anyone's (None: everyone's), a user their own."""
    if principal.is_admin:
        return user
    if user is not None and user != principal.user_id:
        raise PermissionDeniedError(
            "only administrators may read another user's usage",
            hint="leave out `user` to read your own",
        )
    return principal.user_id


def _csv(rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [row[c] for c in CSV_COLUMNS]
        values[0] = row["period_start"].isoformat()
        writer.writerow([csv_cell(v) for v in values])
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
    )


@router.get(
    "/usage",
    summary="Usage summed per period and group, with filters (JSON or CSV)",
    response_model=UsageReport,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def usage_report(
    request: Request,
    principal: UsageReader,
    db: DbDep,
    period: Literal["day", "week", "month"] = "day",
    group_by: Annotated[
        Literal["user", "agent", "circle", "model", "provider", "kind"],
        Query(alias="by", description="What each row sums"),
    ] = "agent",
    since: Annotated[IsoDatetime | None, Query(alias="from")] = None,
    until: Annotated[IsoDatetime | None, Query(alias="to")] = None,
    user: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
    agent: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
    circle: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
    provider: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    model: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    kind: Literal["model", "embedding", "tool"] | None = None,
    output: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=MAX_REPORT_ROWS)] = 1000,
) -> Any:
    where = ReportFilter(
        since, until, _user_filter(principal, user), agent, circle, provider, model, kind
    )
    rows = await report(db, period, group_by, where, limit)
    wants_csv = output == "csv" or (
        output is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        return _csv(rows)
    return UsageReport(
        period=period, group_by=group_by, rows=[UsageRow.model_validate(r) for r in rows]
    )


@router.get("/usage/summary", summary="Today, this month, and the costliest agents and models")
async def usage_summary(
    principal: UsageReader,
    db: DbDep,
    user: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
) -> UsageSummary:
    return UsageSummary.model_validate(await summary(db, _user_filter(principal, user)))
