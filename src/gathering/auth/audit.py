"""The audit log: who did what security-relevant thing, from where, and how it ended."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from gathering.db import Database, Transaction
from gathering.db.named_queries import queries_of
from gathering.errors import DatabaseError, GatheringError

log = structlog.get_logger(__name__)

Outcome = Literal["success", "failure", "denied"]
MAX_USER_AGENT = 512
MAX_QUERY_LIMIT = 500
MAX_SUBJECT = 320
PRUNE_BATCH = 5000  # rows deleted per statement, so pruning never holds long locks
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SQL = queries_of("gathering.auth")


class AuditWriteError(GatheringError):
    """The audit entry of a change could not be written, so the change was not made."""

    code = "audit_write_failed"
    http_status = 503


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
    PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - an event name
    ROLE_CHANGED = "user.role_changed"
    SESSION_REVOKED = "session.revoked"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    PERMISSION_DENIED = "permission.denied"
    LOGIN_THROTTLED = "auth.login_throttled"
    AUDIT_PRUNED = "audit.pruned"


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


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with `text` (its wildcards taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class AuditFilter:
    """What `GET /audit` can filter on. `event` is a name, or a family such as `user.*`."""

    event: str | None = None
    target_type: str | None = None
    target_id: str | None = None
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
        on: Transaction | None = None,
    ) -> None:
        """Append one entry (and log it, so it also reaches the log pipeline).

        With `on` (a transaction), the entry is part of it: it commits with the change it
        records, and when it cannot be written `AuditWriteError` rolls the change back.
        """
        origin = origin or RequestOrigin()
        subject = _printable(subject)
        try:
            await (on or self.db).execute(
                _SQL["insert_audit_entry"],
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
        except DatabaseError as exc:
            if on is None:
                raise
            # The driver's text (table and constraint names) goes to the log, not the caller.
            log.error("audit entry not written", audit_event=event, error=exc.message)
            raise AuditWriteError(
                f"the change was not made: its audit entry ({event}) could not be written",
                hint="retry; if it persists, check the database and the server log",
            ) from exc
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
            _SQL["audit_entries"],
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
            _like_prefix(where.event[:-1]) if where.event and where.event.endswith(".*") else None,
            where.target_type,
            where.target_id,
        )

    async def apply_retention(self, days: int) -> int:
        """Prune the entries older than `days` days, leaving one `audit.pruned` entry that
        says how many went (when any did); return how many."""
        deleted = await self.prune(timedelta(days=days))
        if deleted:
            await self.record(
                AuditEvent.AUDIT_PRUNED,
                "success",
                subject="retention",
                target_type="audit_log",
                details={"deleted": deleted, "retention_days": days},
            )
        return deleted

    async def prune(self, older_than: timedelta, *, batch_size: int = PRUNE_BATCH) -> int:
        """Delete the entries older than `older_than`, in batches; return how many."""
        deleted = 0
        while True:
            count = await self.db.fetch_val(_SQL["prune_audit_entries"], older_than, batch_size)
            deleted += int(count or 0)
            if not count or count < batch_size:
                return deleted
