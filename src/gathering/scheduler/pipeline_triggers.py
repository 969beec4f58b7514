"""A pipeline's `schedule` and `event` trigger nodes, kept as schedules: one per trigger node,
named `pipeline:<pipeline id>:<node id>` and owned by the pipeline's owner, that starts a run of
the pipeline's current version (an `event` trigger's run gets the event as `input.event`). The
scheduler duty brings them in line with the pipelines whenever a pipeline was saved or deleted:
made, changed, or deleted with their trigger."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gathering.db.database import Database
from gathering.db.named_queries import queries_of
from gathering.errors import GatheringError
from gathering.scheduler.definition import parse_spec
from gathering.scheduler.store import (
    PREFIX,
    create_trigger_schedule,
    delete_schedule,
    replace_trigger_schedule,
)

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.scheduler")
_PIPELINES_SQL = queries_of("gathering.pipelines")


def trigger_schedules(pipeline_id: int, definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The schedules `definition` (pipeline `pipeline_id`'s current version) asks for, by
    name: one per trigger node of kind schedule (its cron, read in UTC) or event."""
    wanted: dict[str, dict[str, Any]] = {}
    action = {"action": "execute_pipeline", "config": {"pipeline": pipeline_id}}
    for node in definition.get("nodes", []):
        config = node.get("config") or {}
        if node.get("type") != "trigger":
            continue
        name = f"{PREFIX}{pipeline_id}:{node.get('id')}"
        if config.get("kind") == "schedule" and config.get("cron"):
            wanted[name] = {"kind": "cron", "cron": config["cron"], **action}
        elif config.get("kind") == "event" and config.get("event"):
            wanted[name] = {"kind": "event", "event_type": config["event"], **action}
    return wanted


class PipelineTriggers:
    """Keeps the trigger schedules in line with the pipelines (`sync`), doing the work only
    when, since the last time, a pipeline was saved, a trigger schedule made or deleted, or a
    pipeline deleted. The look (`pipelines_changed`: a count of the pipelines and index reads) is
    made every half second. An update committed long after it began, behind a later save, is
    seen at the next change."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._seen: tuple[Any, ...] | None = None

    async def sync(self) -> int:
        """Make, change and delete trigger schedules as the pipelines say; how many changed."""
        mark = tuple((await self.db.fetch_one(_PIPELINES_SQL["pipelines_changed"]) or {}).values())
        if mark == self._seen:
            return 0
        wanted: dict[str, tuple[int, dict[str, Any]]] = {}
        for row in await self.db.fetch_all(_SQL["pipelines_with_triggers"]):
            for name, spec in trigger_schedules(row["id"], row["definition"]).items():
                wanted[name] = (int(row["owner_id"]), spec)
        existing = {row["name"]: row for row in await self.db.fetch_all(_SQL["trigger_schedules"])}
        changed = 0
        for name, row in existing.items():
            target = wanted.get(name)
            try:
                if target is None or target[0] != row["owner_id"]:
                    await delete_schedule(self.db, int(row["id"]))
                    changed += 1
                elif await _changed(target[1], row["spec"]):
                    await replace_trigger_schedule(self.db, int(row["id"]), target[1])
                    changed += 1
            except GatheringError as exc:
                log.warning(
                    "a pipeline trigger's schedule could not be changed",
                    name=name,
                    error=exc.message,
                )
        for name, (owner_id, spec) in wanted.items():
            if name in existing and existing[name]["owner_id"] == owner_id:
                continue
            try:
                await create_trigger_schedule(self.db, owner_id, name, spec)
                changed += 1
            except GatheringError as exc:  # e.g. a cron with no instant to come
                log.warning("a pipeline trigger has no schedule", name=name, error=exc.message)
        # The mark read before: a save that came during this round makes the next one work
        # (this round's own changes make it look once more, and find nothing to do).
        self._seen = mark
        return changed


async def _changed(wanted: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether the stored spec differs from the wanted one, both as stored."""
    spec = await asyncio.to_thread(parse_spec, wanted)
    return spec.model_dump(mode="json", exclude_none=True) != stored
