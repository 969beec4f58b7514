"""The audit log: who did what security-relevant thing, from where, and how it ended."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog

from gathering.db import Database

log = structlog.get_logger(__name__)

Outcome = Literal["success", "failure", "denied"]
MAX_USER_AGENT = 512
MAX_QUERY_LIMIT = 500
MAX_SUBJECT = 320
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuditEvent:
    """The event names written to the log."""

    LOGIN = "auth.login"
    LOGOUT = "auth.logout"
    REFRESH = "auth.refresh"
    TOKEN_REUSE = "auth.refresh_reuse"  # noqa: S105 - an event name
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    PASSWORD_RESET = "user.password_reset"  # noqa: S105 - an event name
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    PERMISSION_DENIED = "permission.denied"
    LOGIN_THROTTLED = "auth.login_throttled"


@dataclass(frozen=True)
class RequestOrigin:
    """Where a request came from: address, user agent, request id."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


def _printable(text: str | None) -> str | None:
    """`text` with control characters replaced: attacker-chosen input is recorded, not obeyed."""
    if text is None:
        return None
    return _CONTROL.sub("\ufffd", text[:MAX_SUBJECT])


@dataclass
class AuditFilter:
    """What `GET /audit` can filter on."""

    event: str | None = None
    outcome: str | None = None
    actor_id: int | None = None
    subject: str | None = None
    ip: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


class AuditLog:
    """Writes and reads `auth.audit_log`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        event: str,
        outcome: Outcome,
        *,
        origin: RequestOrigin | None = None,
        actor_id: int | None = None,
        subject: str | None = None,
        target_type: str | None = None,
        target_id: str | int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry (and log it, so it also reaches the log pipeline)."""
        origin = origin or RequestOrigin()
        subject = _printable(subject)
        await self.db.execute(
            "INSERT INTO auth.audit_log (event, outcome, actor_id, subject, target_type,"
            " target_id, ip, user_agent, request_id, details)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)",
            event,
            outcome,
            actor_id,
            subject,
            target_type,
            None if target_id is None else str(target_id),
            origin.ip,
            origin.user_agent,
            origin.request_id,
            json.dumps(details or {}),
        )
        log.info(
            "audit",
            audit_event=event,
            outcome=outcome,
            actor_id=actor_id,
            subject=subject,
            target_type=target_type,
            target_id=target_id,
            ip=origin.ip,
        )

    async def query(self, where: AuditFilter) -> list[dict[str, Any]]:
        """Entries matching `where`, newest first (page with `before_id`)."""
        return await self.db.fetch_all(
            "SELECT id, occurred_at, event, outcome, actor_id, subject, target_type, target_id,"
            " ip, user_agent, request_id, details FROM auth.audit_log"
            " WHERE ($1::text IS NULL OR event = $1)"
            " AND ($2::text IS NULL OR outcome = $2)"
            " AND ($3::bigint IS NULL OR actor_id = $3)"
            " AND ($4::text IS NULL OR subject = $4)"
            " AND ($5::text IS NULL OR ip = $5)"
            " AND ($6::text IS NULL OR request_id = $6)"
            " AND ($7::timestamptz IS NULL OR occurred_at >= $7)"
            " AND ($8::timestamptz IS NULL OR occurred_at < $8)"
            " AND ($9::bigint IS NULL OR id < $9)"
            " ORDER BY id DESC LIMIT $10",
            where.event,
            where.outcome,
            where.actor_id,
            where.subject,
            where.ip,
            where.request_id,
            where.since,
            where.until,
            where.before_id,
            min(max(where.limit, 1), MAX_QUERY_LIMIT),
        )
