"""`GET /audit`: the security audit log, for administrators.

Filters: who acted (`actor_id`, `subject`), what (`event`, or a family such as `user.*`), on
what (`target_type`, `target_id`), when (`since`, `until`), and from where (`ip`,
`request_id`). Entries older than `GATHERING_AUDIT_RETENTION_DAYS` are pruned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from gathering.api.deps import AdminPrincipal
from gathering.api.fields import IsoDatetime, WholeNumber
from gathering.api.security.dependencies import security_state
from gathering.auth.audit import MAX_QUERY_LIMIT, AuditFilter

router = APIRouter(tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    occurred_at: datetime
    event: str
    outcome: str
    actor_id: int | None
    subject: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


@router.get("/audit", summary="Audit log entries, newest first (administrators only)")
async def list_audit_entries(
    request: Request,
    _admin: AdminPrincipal,
    event: Annotated[
        str | None,
        Query(
            max_length=100,
            examples=["auth.login", "user.*"],
            description="An event (the action), or a family of them: `user.*`",
        ),
    ] = None,
    outcome: Literal["success", "failure", "denied"] | None = None,
    actor_id: Annotated[
        WholeNumber | None, Query(ge=1, le=2**63 - 1, description="Who acted (a user id)")
    ] = None,
    target_type: Annotated[
        str | None,
        Query(max_length=50, examples=["user", "api_key", "session"], description="Resource"),
    ] = None,
    target_id: Annotated[
        str | None, Query(max_length=128, description="Resource id (with `target_type`)")
    ] = None,
    subject: Annotated[str | None, Query(max_length=254)] = None,
    ip: Annotated[str | None, Query(max_length=100)] = None,
    request_id: Annotated[str | None, Query(max_length=128)] = None,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
    before_id: Annotated[
        WholeNumber | None,
        Query(ge=1, le=2**63 - 1, description="Page: entries older than this id"),
    ] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=MAX_QUERY_LIMIT)] = 100,
) -> list[AuditEntry]:
    audit = (await security_state(request).services()).audit
    rows = await audit.query(
        AuditFilter(
            event=event,
            target_type=target_type,
            target_id=target_id,
            outcome=outcome,
            actor_id=actor_id,
            subject=subject,
            ip=ip,
            request_id=request_id,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
    )
    return [AuditEntry(**row) for row in rows]
