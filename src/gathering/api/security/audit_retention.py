"""Audit retention: one instance (the holder of an advisory lock) prunes expired entries."""

from __future__ import annotations

import structlog

from gathering.api.lifecycle import Component, Health
from gathering.api.security.state import SecurityState
from gathering.auth.audit import AuditLog
from gathering.db.locks import LockKey, SingletonDuty
from gathering.errors import GatheringError

log = structlog.get_logger(__name__)

RETENTION_LOCK = LockKey("audit", "retention")


class AuditRetentionComponent(Component):
    """Prunes audit entries older than `GATHERING_AUDIT_RETENTION_DAYS`, every `interval`
    seconds, on the one instance that holds the retention lock (`SingletonDuty`)."""

    name = "audit_retention"

    def __init__(self, security: SecurityState, *, interval: float = 3600.0) -> None:
        self.security = security
        self.interval = interval
        self.duty: SingletonDuty | None = None

    async def start(self) -> None:
        db = await self.security.db()
        audit = AuditLog(db)
        days = self.security.settings.audit_retention_days

        async def prune() -> None:
            try:
                deleted = await audit.apply_retention(days)
            except GatheringError as exc:  # the next round tries again
                log.warning("could not prune the audit log", error=str(exc))
                return
            if deleted:
                log.info("audit log pruned", deleted=deleted, retention_days=days)

        self.duty = SingletonDuty(db, RETENTION_LOCK, prune, interval=self.interval)
        await self.duty.start()

    async def stop(self) -> None:
        if self.duty is not None:
            await self.duty.stop()

    async def health(self) -> Health:
        if self.duty is None:
            return Health(True, "not started")
        ok, detail = self.duty.health()
        return Health(ok, detail)
