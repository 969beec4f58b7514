"""Human approvals of tool calls, stored in PostgreSQL (`tool.approvals`).

A call whose policy is `ask` becomes a pending approval; a person approves or denies it from
any instance (the first answer wins), or it expires after `GATHERING_APPROVAL_TIMEOUT`. The
waiting turn (or a direct invocation) is then picked up once, by whichever instance gets to it
first (`mark_resumed`); nothing waits in memory meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from gathering.db.database import Queries, Row
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text, storable_value
from gathering.errors import ConflictError, NotFoundError
from gathering.tools.function import FunctionTool

ApprovalState = Literal["pending", "approved", "denied", "expired"]
MAX_COMMENT_CHARS = 2000
_SQL = queries_of("gathering.tools")


@dataclass(frozen=True)
class Approval:
    """One call waiting for (or answered by) a person."""

    id: int
    agent_id: int
    owner_id: int | None
    turn_id: str | None
    call_id: str
    tool_name: str
    arguments: Mapping[str, Any]
    effect: str
    reason: str
    requested_by: int | None
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    decided_by: int | None
    decided_at: datetime | None
    comment: str | None
    outcome: Mapping[str, Any] | None
    resumed_at: datetime | None
    task_id: int | None = None  # a background task's call (then `turn_id` is None)

    @classmethod
    def from_row(cls, row: Row) -> Approval:
        """An approval from its stored row."""
        turn = row["turn_id"]
        return cls(**{**row, "turn_id": str(turn) if turn is not None else None})

    def event_body(self) -> dict[str, Any]:
        """What `approval.requested` and `approval.decided` events carry."""
        return {
            "approval_id": self.id,
            "agent_id": self.agent_id,
            "turn_id": self.turn_id,
            "task_id": self.task_id,
            "call_id": self.call_id,
            "tool": self.tool_name,
            "state": self.state,
            "decided_by": self.decided_by,
            "expires_at": self.expires_at.isoformat(),
        }


async def request_approval(
    queries: Queries,
    *,
    agent_id: int,
    owner_id: int | None,
    turn_id: str | None,
    call_id: str,
    tool: FunctionTool,
    arguments: Mapping[str, Any],
    reason: str,
    requested_by: int | None,
    seconds: float,
    task_id: int | None = None,
) -> Approval:
    """Store a pending approval of one call (of a turn, of a background task, or a direct
    invocation), expiring `seconds` from now."""
    row = await queries.fetch_one(
        _SQL["request_approval"],
        agent_id,
        owner_id,
        turn_id,
        call_id,
        tool.name,
        Jsonb(storable_value(dict(arguments))),
        tool.effect,
        reason,
        requested_by,
        seconds,
        task_id,
    )
    assert row is not None
    return Approval.from_row(row)


async def get_approval(queries: Queries, approval_id: int) -> Approval:
    """The approval `approval_id`; `NotFoundError` when there is none."""
    row = await queries.fetch_one(_SQL["approval"], approval_id)
    if row is None:
        raise NotFoundError(f"approval {approval_id} not found")
    return Approval.from_row(row)


async def list_approvals(
    queries: Queries,
    *,
    owner_id: int | None = None,
    state: ApprovalState | None = None,
    agent_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Approval]:
    """Approvals, newest first: of one owner (None: all), state and agent (None: any)."""
    rows = await queries.fetch_all(_SQL["approvals"], owner_id, state, agent_id, before_id, limit)
    return [Approval.from_row(row) for row in rows]


async def decide(
    queries: Queries,
    approval_id: int,
    *,
    approve: bool,
    by: int | None,
    comment: str | None = None,
) -> Approval:
    """Approve or deny a pending approval. `ConflictError` when it was already answered or
    has expired (the first answer wins, on any instance); `NotFoundError` when it is gone."""
    state = "approved" if approve else "denied"
    comment = storable_text(comment) if comment is not None else None
    row = await queries.fetch_one(_SQL["decide_approval"], approval_id, state, by, comment)
    if row is not None:
        return Approval.from_row(row)
    current = await get_approval(queries, approval_id)
    expired = current.state == "pending" or current.state == "expired"
    raise ConflictError(
        f"approval {approval_id} is {'expired' if expired else current.state} already",
        hint="it can no longer be answered; ask the agent again if the call is still wanted",
        details={"state": "expired" if expired else current.state},
    )


async def expire_due(queries: Queries) -> list[Approval]:
    """Mark pending approvals past their time expired; the ones that were."""
    return [Approval.from_row(row) for row in await queries.fetch_all(_SQL["expire_approvals"])]


async def to_resume(queries: Queries, limit: int = 100) -> list[Approval]:
    """Answered approvals whose turn or invocation has not been picked up, oldest first."""
    return [
        Approval.from_row(row)
        for row in await queries.fetch_all(_SQL["approvals_to_resume"], limit)
    ]


async def mark_resumed(queries: Queries, approval_id: int) -> bool:
    """Pick up an answered approval; False when it was picked up already (by any instance)."""
    return await queries.fetch_one(_SQL["mark_resumed"], approval_id) is not None


RUNNING: Mapping[str, Any] = {"state": "running"}
UNKNOWN: Mapping[str, Any] = {
    "is_error": True,
    "error": {
        "code": "outcome_unknown",
        "message": "the process running this call stopped before it finished; whether its "
        "effect happened is unknown",
        "hint": "check the effect yourself before invoking the tool again",
    },
}


async def set_outcome(queries: Queries, approval_id: int, outcome: Mapping[str, Any]) -> None:
    """Keep a direct invocation's result (or `RUNNING`) with its approval."""
    await queries.execute(_SQL["set_outcome"], approval_id, Jsonb(storable_value(dict(outcome))))


async def mark_outcomes_unknown(queries: Queries, older_than: float) -> list[int]:
    """Direct invocations left `RUNNING` for `older_than` seconds get the outcome `UNKNOWN`
    (the process running them stopped); their ids."""
    rows = await queries.fetch_all(_SQL["outcome_unknown"], older_than, Jsonb(dict(UNKNOWN)))
    return [row["id"] for row in rows]


async def agents_with_orphaned_resumes(queries: Queries) -> list[int]:
    """Agents whose resumed turn is still `running` (running now, or left by a dead process)."""
    return [r["agent_id"] for r in await queries.fetch_all(_SQL["agents_with_orphaned_resumes"])]


async def approvals_of_turn(queries: Queries, turn_id: str) -> list[Approval]:
    """The approvals a turn asked for, oldest first."""
    return [
        Approval.from_row(row)
        for row in await queries.fetch_all(_SQL["approvals_of_turn"], turn_id)
    ]
