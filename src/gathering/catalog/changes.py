"""What every change to the catalog's providers and models shares: the audit entry written in
the change's transaction, and the pattern of provider names."""

from __future__ import annotations

import re
from typing import Any, Literal

from gathering.auth.accounts import Actor
from gathering.auth.audit import AuditLog
from gathering.db import Database, Transaction

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""A provider's name (and a provider kind): lower case, digits, `_`, `.` and `-`."""


async def audit_change(
    db: Database,
    tx: Transaction | None,
    actor: Actor,
    event: str,
    target_type: str,
    target_id: str | int,
    details: dict[str, Any],
    *,
    outcome: Literal["success", "denied"] = "success",
) -> None:
    """The audit entry of `actor`'s change: in the change's transaction `tx` (no entry, no
    change), or, for a refused change (`outcome="denied"`, `tx` None), on its own after the
    change's transaction rolled back. `details` must never hold a key."""
    await AuditLog(db).record(
        event,
        outcome,
        origin=actor.origin,
        actor_id=actor.user_id,
        subject=actor.subject,
        target_type=target_type,
        target_id=target_id,
        details={**details, "via": actor.via},
        on=tx,
    )
