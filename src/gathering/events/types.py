"""`Event`: what happened, to which subject, when, and where it sits in the durable stream."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from gathering.errors import InvalidInputError

MAX_TYPE_LENGTH = 200
MAX_SUBJECT_LENGTH = 200

# Dotted words, e.g. `pipeline.node.started`. The same rule is a CHECK on `events.outbox.type`.
_TYPE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _now() -> datetime:
    return datetime.now(UTC)


def validate_type(value: str) -> str:
    """`value` if it is a valid event type, else `InvalidInputError`."""
    if not isinstance(value, str) or not _TYPE.match(value) or len(value) > MAX_TYPE_LENGTH:
        raise InvalidInputError(
            f"invalid event type {value!r}",
            hint="use dotted words of letters, digits, '_' or '-', e.g. 'pipeline.started'",
        )
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One event. Immutable; `data` must be JSON-serializable when the event is durable.

    `subject` names the thing the event is about (e.g. `"circle:7"`, `"run:42"`): consumers
    filter on it and durable events are delivered in order per subject. `cursor` is None until
    the event is stored in the outbox; then it is its position in the durable stream, the
    number a consumer gives back to `EventBus.replay` to resume.
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    subject: str | None = None
    id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=_now)
    source: str | None = None
    correlation_id: str | None = None
    cursor: int | None = None

    def __post_init__(self) -> None:
        validate_type(self.type)
        if not isinstance(self.data, Mapping):
            raise InvalidInputError(
                f"event data must be a mapping, not {type(self.data).__name__}",
                details={"type": self.type},
            )
        if self.subject is not None and not (
            isinstance(self.subject, str) and 0 < len(self.subject) <= MAX_SUBJECT_LENGTH
        ):
            raise InvalidInputError(
                f"invalid event subject {self.subject!r}",
                hint=f"use a non-empty string of at most {MAX_SUBJECT_LENGTH} characters",
            )
        if not isinstance(self.id, UUID):
            raise InvalidInputError(f"event id must be a UUID, not {self.id!r}")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            raise InvalidInputError(
                "event occurred_at must be a timezone-aware datetime",
                hint="use datetime.now(UTC)",
            )

    # `data` is a mapping, so the generated hash would fail; the id identifies an event.
    def __hash__(self) -> int:
        return hash(self.id)

    def with_cursor(self, cursor: int) -> Event:
        """This event as stored at `cursor` in the outbox."""
        return replace(self, cursor=cursor)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (id as a string, occurred_at in ISO 8601), e.g. for a WebSocket."""
        return {
            "type": self.type,
            "data": dict(self.data),
            "subject": self.subject,
            "id": str(self.id),
            "occurred_at": self.occurred_at.isoformat(),
            "source": self.source,
            "correlation_id": self.correlation_id,
            "cursor": self.cursor,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """The event stored in an `events.outbox` row."""
        return cls(
            type=row["type"],
            data=row["data"],
            subject=row["subject"],
            id=row["id"],
            occurred_at=row["occurred_at"],
            source=row["source"],
            correlation_id=row["correlation_id"],
            cursor=row["cursor"],
        )


class OverflowPolicy(StrEnum):
    """What publishing does once a subscriber's queue has stayed full for `max_wait` seconds."""

    BLOCK = "block"
    """Keep waiting until the subscriber makes room (nothing is lost; publishers slow down)."""
    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued event to make room, and count it in `dropped`."""
    RAISE = "raise"
    """Skip this subscriber, count it in `refused`, and raise `EventBackpressureError`."""
