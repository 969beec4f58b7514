"""What a schedule is: when it fires (`cron` in a time zone, `interval` anchored to its slots,
`once`, `event`: a durable event of a type, with values its data must hold), what it runs (an
action and its config), what it does about late slots (misfire) and runs that overlap
(concurrency), how long it lives, and how often a failed run is tried again. Unknown keys are
refused; every instant must carry its time zone."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gathering.errors import InvalidInputError
from gathering.scheduler.tasks.store import TaskSpec
from gathering.tools.validation import field_path

MAX_NAME = 200
ACTIONS = ("run_task", "execute_pipeline", "send_notification", "call_api")
MAX_DEPTH = 32  # levels of lists and objects in an action's config
_M = TypeVar("_M", bound=BaseModel)
_ZONES: dict[str, ZoneInfo] = {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutePipeline(_Strict):
    """Start a run of the owner's pipeline (by name or id, its current version)."""

    pipeline: (
        Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
        | Annotated[str, Field(min_length=1, max_length=200)]
    ) = Field(description="The pipeline's id or name")
    input: dict[str, Any] = Field(default_factory=dict, description="The run's input")

    @field_validator("pipeline", mode="before")
    @classmethod
    def _id_or_name(cls, value: Any) -> Any:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)  # "42" is the pipeline with id 42
        return value


class SendNotification(_Strict):
    """A notification to the schedule's owner: a durable `notification` event on subject
    `user:<owner id>` (the dashboard and WebSocket clients show it)."""

    title: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=10_000)
    level: Literal["info", "warning", "error"] = "info"


class CallApi(_Strict):
    """One HTTP request through the tools' egress policy; a 4xx or 5xx answer fails the run."""

    url: str = Field(min_length=1, max_length=2048)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: Any = Field(default=None, description="Sent as JSON when given")


ACTION_CONFIGS: dict[str, type[BaseModel]] = {
    "run_task": TaskSpec,
    "execute_pipeline": ExecutePipeline,
    "send_notification": SendNotification,
    "call_api": CallApi,
}


class ScheduleSpec(_Strict):
    """A schedule's definition (see the module's docstring)."""

    kind: Literal["cron", "interval", "once", "event"]
    cron: str | None = Field(default=None, max_length=200, description="For kind cron")
    timezone: str = Field(default="UTC", max_length=64, description="The cron's time zone")
    every_seconds: Annotated[float, Strict()] | None = Field(
        default=None, ge=1, le=366 * 86_400, description="For kind interval"
    )
    at: datetime | None = Field(default=None, description="For kind once")
    event_type: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.*-]+$",
        description="For kind event: an event type, or a pattern such as pipeline_run.*",
    )
    match: dict[str, str | int | float | bool | None] | None = Field(
        default=None, description="For kind event: values the event's data must hold"
    )
    action: Literal["run_task", "execute_pipeline", "send_notification", "call_api"]
    config: dict[str, Any] = Field(default_factory=dict, description="The action's settings")
    misfire: Literal["skip", "run_once", "catch_up"] = Field(
        default="run_once",
        description="Slots found late (the scheduler was down): skip them, run the latest "
        "once, or run up to catch_up_max of them",
    )
    catch_up_max: int = Field(default=10, ge=1, le=1_000)
    misfire_grace_seconds: float = Field(
        default=60, ge=1, le=86_400, description="How late a slot may run and be on time"
    )
    concurrency: Literal["allow", "forbid", "replace"] = Field(
        default="allow",
        description="When a run is still going at the next slot: run both, skip the new one, "
        "or cancel the old one",
    )
    max_executions: int | None = Field(default=None, ge=1, le=2**31 - 1)
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_retries: int = Field(default=0, ge=0, le=20)
    retry_backoff_seconds: float = Field(default=10, ge=0, le=86_400)

    @field_validator("at", "start_at", "end_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("give the time zone (e.g. 2026-12-01T09:00:00+01:00 or ...Z)")
        if not 1970 <= value.year <= 2500:
            raise ValueError("give an instant between the years 1970 and 2500")
        return value

    @field_validator("config")
    @classmethod
    def _shallow(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value) > MAX_DEPTH:
            raise ValueError(f"the config nests more than {MAX_DEPTH} levels deep")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleSpec:
        needs = {"cron": "cron", "interval": "every_seconds", "once": "at", "event": "event_type"}
        for kind, name in needs.items():
            given = getattr(self, name) is not None
            if given != (self.kind == kind):
                raise ValueError(
                    f"`{name}` is for kind {kind} only"
                    if given
                    else f"a {kind} schedule needs `{name}`"
                )
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None
        if self.match is not None and self.kind != "event":
            raise ValueError("`match` is for kind event only")
        if self.start_at and self.end_at and self.start_at >= self.end_at:
            raise ValueError("start_at must come before end_at")
        return self


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _checked(model: type[_M], value: Any, where: list[str]) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = [*where, *first["loc"]]
        path = field_path(location) if location else "(schedule)"
        raise InvalidInputError(
            f"invalid schedule at {path}: {first['msg']}", details={"path": path}
        ) from None


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (not `localtime` and the like, which differ between
    machines), kept once loaded (loading reads files: from async code, call `load_zone`
    first)."""
    found = _ZONES.get(name)
    if found is None:
        try:
            if name not in _known_zones():
                raise ZoneInfoNotFoundError(name)
            found = _ZONES[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise InvalidInputError(
                f"invalid schedule at timezone: unknown time zone {name!r}",
                hint="give an IANA name, e.g. Europe/Paris or UTC",
                details={"path": "timezone"},
            ) from None
    return found


@functools.cache
def _known_zones() -> frozenset[str]:
    """IANA zone names, without the machine's own (`localtime`) and tzdata's aliases of
    other rules (`posixrules`, `posix/...`, `right/...`)."""
    return frozenset(
        name
        for name in available_timezones()
        if name not in ("localtime", "posixrules", "Factory")
        and not name.startswith(("posix/", "right/"))
    )


async def load_zone(name: str) -> ZoneInfo:
    """`zone(name)`, its file read off the event loop the first time."""
    found = _ZONES.get(name)
    return found if found is not None else await asyncio.to_thread(zone, name)


def parse_spec(document: dict[str, Any]) -> ScheduleSpec:
    """`document` checked as a schedule; `InvalidInputError` naming the first mistake. Reads
    the time zone's file: call it in a thread from async code."""
    spec = _checked(ScheduleSpec, document, [])
    zone(spec.timezone)
    config = ACTION_CONFIGS.get(spec.action)
    if config is not None:  # as its action reads it (a pipeline's "42" is the id 42)
        spec.config = _checked(config, spec.config, ["config"]).model_dump(mode="json")
    return spec
