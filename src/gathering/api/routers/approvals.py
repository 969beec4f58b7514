"""`/approvals`: tool calls waiting for a person, and the answers to them.

An agent's call of a tool whose policy is `ask` (and a direct invocation of one) becomes a
pending approval. The agent's owner (or an admin) approves or denies it here, from any
instance; the first answer wins. The waiting turn then goes on, on this instance at once, or
on whichever instance's duty finds it first. API keys need `approvals:read` / `approvals:write`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gathering.agents.approval_resumer import approval_events, resume_answered
from gathering.api.deps import MAX_ID, BusDep, DbDep, app_state
from gathering.api.fields import WholeNumber, text
from gathering.api.security import Principal, ensure_owner, not_found, rate_limit, require_scope
from gathering.api.security.dependencies import security_state
from gathering.api.security.spending import TurnSlot
from gathering.db import Database
from gathering.errors import NotFoundError, RateLimitedError
from gathering.events import EventBus
from gathering.tools.approvals import (
    MAX_COMMENT_CHARS,
    Approval,
    ApprovalState,
    decide,
    get_approval,
    list_approvals,
)

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/approvals", tags=["approvals"])
ApprovalsReader = Annotated[Principal, Depends(require_scope("approvals:read"))]
ApprovalsWriter = Annotated[Principal, Depends(require_scope("approvals:write"))]
ApprovalId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The approval's id")]


class ApprovalOut(BaseModel):
    """A tool call that waits for (or was answered by) a person."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    agent_id: int
    owner_id: int | None
    turn_id: str | None = Field(
        description="The waiting turn; null: a background task's call or a direct invocation"
    )
    task_id: int | None = Field(default=None, description="The waiting background task")
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    effect: Literal["read", "write", "external"]
    reason: str
    requested_by: int | None = Field(description="Who invoked it; null: the agent")
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    decided_by: int | None
    decided_at: datetime | None
    comment: str | None
    outcome: dict[str, Any] | None = Field(
        description="A direct invocation's result once it ran: {is_error, output | error}"
    )
    resumed_at: datetime | None = Field(description="When its turn or invocation was taken up")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = text(MAX_COMMENT_CHARS, default=None)


async def _visible(
    request: Request, principal: Principal, db: Database, approval_id: int
) -> Approval:
    try:
        approval = await get_approval(db, approval_id)
    except NotFoundError:
        raise not_found("approval", approval_id) from None
    await ensure_owner(
        request, principal, approval.owner_id, resource="approval", resource_id=approval_id
    )
    return approval


@router.get("", summary="List approvals (the inbox)", dependencies=[rate_limit("relaxed")])
async def approvals_inbox(
    principal: ApprovalsReader,
    db: DbDep,
    state: ApprovalState | None = None,
    agent_id: Annotated[WholeNumber | None, Query(ge=1, le=MAX_ID)] = None,
    before_id: Annotated[
        WholeNumber | None, Query(ge=1, le=MAX_ID, description="Page: older than this id")
    ] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=500)] = 50,
) -> list[ApprovalOut]:
    """Newest first; `?state=pending` is the inbox. Admins see every owner's."""
    found = await list_approvals(
        db,
        owner_id=principal.owner_filter,
        state=state,
        agent_id=agent_id,
        before_id=before_id,
        limit=limit,
    )
    return [ApprovalOut.model_validate(approval) for approval in found]


@router.get("/{approval_id:id}", summary="One approval", dependencies=[rate_limit("relaxed")])
async def one_approval(
    approval_id: ApprovalId, request: Request, principal: ApprovalsReader, db: DbDep
) -> ApprovalOut:
    return ApprovalOut.model_validate(await _visible(request, principal, db, approval_id))


async def _answer(
    request: Request,
    principal: Principal,
    db: Database,
    bus: EventBus,
    approval_id: int,
    body: DecisionIn | None,
    approve: bool,
) -> ApprovalOut:
    await _visible(request, principal, db, approval_id)
    comment = body.comment if body is not None else None
    async with db.transaction() as tx:
        answered = await decide(
            tx, approval_id, approve=approve, by=principal.user_id, comment=comment
        )
        await bus.publish_many(approval_events("approval.decided", answered), tx=tx)
    owner = answered.owner_id if answered.owner_id is not None else principal.user_id
    try:  # the resumed turn counts toward its owner's running turns
        slot = security_state(request).turn_admission.admit_user(owner)
    except RateLimitedError:  # at the cap: the server's duty goes on once one has finished
        return ApprovalOut.model_validate(answered)
    work = _resume(db, bus, answered, slot)
    app_state(request).run_in_background(work, name=f"approval-{approval_id}")
    return ApprovalOut.model_validate(answered)


async def _resume(db: Database, bus: EventBus, approval: Approval, slot: TurnSlot) -> None:
    """Go on with the answered call here; if that fails, the server's duty tries again."""
    try:
        with slot:
            await resume_answered(db, bus, approval)
    except Exception:
        log.warning("could not go on after an approval", approval_id=approval.id, exc_info=True)


_ANSWERS: dict[int | str, dict[str, Any]] = {409: {"description": "Already answered, or expired"}}


@router.post("/{approval_id:id}/approve", summary="Approve a tool call", responses=_ANSWERS)
async def approve(
    approval_id: ApprovalId,
    request: Request,
    principal: ApprovalsWriter,
    db: DbDep,
    bus: BusDep,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """The call runs, and the turn that waited for it goes on (at once, on this instance)."""
    return await _answer(request, principal, db, bus, approval_id, body, approve=True)


@router.post("/{approval_id:id}/deny", summary="Deny a tool call", responses=_ANSWERS)
async def deny(
    approval_id: ApprovalId,
    request: Request,
    principal: ApprovalsWriter,
    db: DbDep,
    bus: BusDep,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """The call does not run: the agent is told so (with the comment) and goes on."""
    return await _answer(request, principal, db, bus, approval_id, body, approve=False)
