"""Real-time events over WebSocket: `/ws` and `/ws/circles/{name}`.

Protocol (JSON text frames):
  client {"type": "ping"}                          -> {"type": "pong"}   (even before auth)
  client {"type": "auth", "token": "<access JWT>"} -> {"type": "authenticated", "user_id": ..}
  client {"type": "auth", "ticket": "<ticket>"}    -> the same, with a one-time ticket
  client {"type": "subscribe", "patterns": ["agent.*"], "subjects": ["agent:7"], "since": 42}
                                                   -> {"type": "subscribed", "cursor": ..}
  client {"type": "unsubscribe"}                   -> {"type": "unsubscribed"}
  server {"type": "event", "event": {...}}          one per matching event
  server {"type": "heartbeat", "cursor": ..}        every GATHERING_WS_HEARTBEAT seconds
  server {"type": "error", "code": .., "message": ..}

Authentication (multi-user mode), preferred first: an `auth` frame with an access token; a
one-time ticket from `POST /auth/ws-ticket` (valid 30 s, for browsers), as `?ticket=` on the
handshake or in an `auth` frame; `?access_token=` on the handshake. A socket that has not
authenticated GATHERING_WS_AUTH_GRACE seconds after it was accepted closes with 4401 (pings do
not extend the deadline); a subject the caller may not see is refused.

Limits (counts are per instance): GATHERING_WS_MAX_PER_ADDRESS sockets per client address and
GATHERING_WS_MAX_PER_USER per user (multi-user mode); the next one closes with 4430. A client
may send GATHERING_WS_MESSAGE_BURST frames at once, then GATHERING_WS_MESSAGE_RATE per second;
past that it gets an error `rate_limited` and 4429. A frame over 64 KiB gets an error and 1009.
A subscribe names at most 20 patterns and 50 subjects (200 characters each). While a replay
(`since`) runs, another subscribe is refused (`replay_in_progress`); a replay runs until the
socket has received the events up to the cursor of the moment it subscribed, or a heartbeat
finds it idle; `unsubscribe` ends it. A client too slow to keep up closes with 4429. A draining
server closes every socket with 1001, and a socket opened while it drains at once.

Frames: only JSON text frames are part of the protocol. A binary frame gets an error
`invalid_frame` and closes the socket with 1003 (unsupported data), before or after
authentication. A text frame that is not a JSON object with a string `type` gets an error
`invalid_message`, and a subscribe that does not validate (a subject such as `agent:¹`
included: ids are ASCII digits) an error `invalid_input` or `not_found`; the socket stays
open. A fault of ours while handling a frame gets an error `internal_error` (logged) and the
socket stays open; a fault outside the handling of a frame closes it with 1011.

Authorization follows the account: the credentials are checked again on every subscribe,
with every heartbeat and at most RECHECK_SECONDS before each event. When that check finds the
caller may no longer see what the socket is subscribed to (an administrator demoted while
subscribed to every event, to another user's subject, to an agent they do not own, or to a
circle or a project they neither own nor belong to any more), the socket closes with 4403
("subscription no longer allowed") at that check instead of sending the event it preceded; it is not
narrowed silently. Reconnect and subscribe to what the account may see now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnected

from gathering.agents import PostgresAgentStore
from gathering.api.deps import app_state
from gathering.api.errors import public_error
from gathering.api.security import Principal, authenticate_socket, public_route
from gathering.api.security.dependencies import recheck_socket, security_state
from gathering.api.security.origin import client_ip
from gathering.api.security.ws_limits import SocketLease, TokenBucket
from gathering.circles import circle_named, member_of_user
from gathering.db import Database
from gathering.errors import (
    AuthenticationError,
    EventStreamClosedError,
    GatheringError,
    NotFoundError,
)
from gathering.events import Event, EventStream
from gathering.pipelines import get_pipeline
from gathering.projects import get_project, permissions_of
from gathering.scheduler import get_schedule
from gathering.scheduler.tasks import get_task

log = structlog.get_logger(__name__)

router = APIRouter(tags=["events"], dependencies=[Depends(public_route)])

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403  # the subscription is no longer allowed (e.g. an admin was demoted)
CLOSE_TOO_SLOW = 4429  # also: too many messages
CLOSE_TOO_MANY_SOCKETS = 4430
SEND_TIMEOUT = 10.0
RECHECK_SECONDS = 1.0  # a revoked or disabled account stops receiving within this delay
TICKET_PARAM = "ticket"
TOKEN_PARAM = "access_token"  # noqa: S105 - a parameter name
MAX_FRAME_CHARS = 64 * 1024
MAX_PATTERNS = 20
# A subject other than the caller's own costs a query to check ownership.
MAX_SUBJECTS = 50

BoundedText = Annotated[str, Field(min_length=1, max_length=200)]
# An id in a subject: ASCII digits only (`str.isdigit()` accepts `¹`, which `int()` refuses).
_ID = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1  # ids are bigint


class Subscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    patterns: list[BoundedText] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=MAX_PATTERNS
    )
    subjects: list[BoundedText] | None = Field(default=None, max_length=MAX_SUBJECTS)
    since: int | None = Field(default=None, ge=0)


class _Closed(Exception):
    """The session ends with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


# Subjects `<kind>:<id>` of resources with an owner, and how to read one.
_OWNED: dict[str, Callable[[Database, int], Awaitable[Any]]] = {
    "pipeline": get_pipeline,
    "schedule": get_schedule,
    "task": get_task,
}


async def _may_see(websocket: WebSocket, principal: Principal, subject: str) -> str | None:
    """None when `principal` may see events about `subject`, else the reason it may not."""
    kind, _, ident = subject.partition(":")
    if kind == "project" and not principal.has_scope("projects:read"):
        return "this API key lacks the scope 'projects:read'"  # file names, activity
    if principal.is_admin:
        return None
    if kind == "user" and ident == str(principal.user_id):
        return None
    if kind == "agent" and _ID.fullmatch(ident):
        agent_id = int(ident)
        if agent_id > _MAX_ID:
            return f"no agent {ident}"
        store = PostgresAgentStore(await app_state(websocket).database())
        owner = await store.owner_of(agent_id)
        return None if owner == principal.user_id else f"no agent {ident}"
    if kind == "circle":
        db = await app_state(websocket).database()
        try:
            circle = await circle_named(db, ident)
        except NotFoundError:
            return f"no circle {ident!r}"
        if circle.owner_id == principal.user_id:
            return None
        member = await member_of_user(db, circle.id, principal.user_id)
        return None if member is not None else f"no circle {ident!r}"
    if kind == "project" and _ID.fullmatch(ident):
        db = await app_state(websocket).database()
        try:
            project = await get_project(db, int(ident)) if int(ident) <= _MAX_ID else None
        except NotFoundError:
            project = None
        if project is not None and "read" in await permissions_of(db, project, principal.user_id):
            return None
        return f"no project {ident}"
    owned = _OWNED.get(kind)
    if owned is not None and _ID.fullmatch(ident):  # a pipeline's, schedule's or task's
        found_id = int(ident)
        try:
            if found_id <= _MAX_ID:
                record = await owned(await app_state(websocket).database(), found_id)
                if record.owner_id == principal.user_id:
                    return None
        except NotFoundError:
            pass
        return f"no {kind} {ident}"
    return f"subject {subject!r} is not one you may subscribe to"


async def _may_keep(
    websocket: WebSocket, principal: Principal, subjects: list[str] | None
) -> str | None:
    """None when `principal` may still receive a subscription to `subjects` (None: every
    event, which only an administrator may), else the reason it may not."""
    if principal.is_admin:
        return None
    if subjects is None:
        return "every event is for administrators only"
    for subject in subjects:
        reason = await _may_see(websocket, principal, subject)
        if reason is not None:
            return reason
    return None


async def _circle_ids(websocket: WebSocket, subjects: list[str] | None) -> dict[str, int]:
    """The circles that the `circle:<name>` subjects name now, by name."""
    found: dict[str, int] = {}
    for subject in subjects or []:
        kind, _, name = subject.partition(":")
        if kind == "circle":
            try:
                found[name] = (await circle_named(await app_state(websocket).database(), name)).id
            except NotFoundError:
                found[name] = 0  # none: no event is of it
    return found


def _string_field(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    return value if isinstance(value, str) else None


class SocketSession:
    """One connected client: authentication, limits, its subscription, and both directions."""

    def __init__(self, websocket: WebSocket, default_subjects: list[str] | None) -> None:
        self.ws = websocket
        self.state = app_state(websocket)
        self.settings = self.state.settings
        self.default_subjects = default_subjects
        self.principal: Principal | None = None
        self._checked_at = 0.0
        self._auth_deadline: float | None = None
        limits = security_state(websocket).socket_limits
        self.address_slot = SocketLease(limits.by_address)
        self.user_slot = SocketLease(limits.by_user)
        self.bucket = TokenBucket(self.settings.ws_message_rate, self.settings.ws_message_burst)
        self.stream: EventStream | None = None
        # What the stream is subscribed to (None: every event), and whether the principal
        # that was allowed it was an administrator (then a demotion checks it again).
        self.subjects: list[str] | None = None
        self.allowed_as_admin = False
        self.circles: dict[str, int] = {}  # circle subjects' names -> the circles they named
        self.forwarder: asyncio.Task[None] | None = None
        # While a replay runs: the cursor it ends at (the bus's cursor when it began).
        self.replay_until: int | None = None
        self.closing: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self.ws.send_text(json.dumps(message, default=str))
            except TimeoutError:
                raise _Closed(CLOSE_TOO_SLOW, "client too slow to read its events") from None

    async def run(self) -> None:
        await self.ws.accept()
        loop = asyncio.get_running_loop()
        self._auth_deadline = loop.time() + self.settings.ws_auth_grace
        stop_on_drain = self.state.drain.on_begin(self._on_drain)
        try:
            if self.state.drain.draining:
                raise _Closed(CLOSE_GOING_AWAY, "server shutting down")
            if not self.address_slot.take(client_ip(self.ws)):
                raise _Closed(CLOSE_TOO_MANY_SOCKETS, "too many sockets from this address")
            token = self.ws.query_params.get(TOKEN_PARAM)
            ticket = self.ws.query_params.get(TICKET_PARAM)
            if token or ticket or not self.settings.auth_required:
                await self._authenticate(token, ticket)
            await self._loop()
        except _Closed as closed:
            await self._close(closed.code, closed.reason)
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        except Exception:  # a fault of ours: log it, close, give the slots back
            log.exception("websocket session failed")
            await self._close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            stop_on_drain()
            self.address_slot.release()
            self.user_slot.release()
            await self._stop_stream()

    def _on_drain(self) -> None:
        self.closing = asyncio.get_running_loop().create_task(
            self._close(CLOSE_GOING_AWAY, "server shutting down")
        )

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):  # the peer may already be gone
            await self.ws.close(code=code, reason=reason)

    async def _authenticate(
        self, token: str | None, ticket: str | None, *, answer: bool = False
    ) -> None:
        try:
            principal = await authenticate_socket(self.ws, token, ticket=ticket)
        except AuthenticationError as exc:
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
            raise _Closed(CLOSE_UNAUTHENTICATED, "authentication failed") from None
        except GatheringError as exc:  # e.g. the database is unreachable
            await self.send({"type": "error", **public_error(exc)})
            raise _Closed(CLOSE_INTERNAL_ERROR, "authentication unavailable") from None
        # Single-user mode: every socket is the local owner; the address cap bounds them.
        if self.settings.auth_required and not self.user_slot.take(f"{principal.user_id}"):
            raise _Closed(CLOSE_TOO_MANY_SOCKETS, "too many sockets for this user")
        self.principal = principal
        self._checked_at = asyncio.get_running_loop().time()
        if answer:
            await self.send({"type": "authenticated", "user_id": principal.user_id})

    async def _receive(self) -> dict[str, Any]:
        deadline = None if self.principal else self._auth_deadline
        try:
            async with asyncio.timeout_at(deadline):
                frame = await self.ws.receive()
        except TimeoutError:
            raise _Closed(CLOSE_UNAUTHENTICATED, "no authentication in time") from None
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000), frame.get("reason"))
        if not self.bucket.allow(asyncio.get_running_loop().time()):
            await self.send(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "message": f"more than {self.bucket.rate:g} messages a second",
                    "hint": "send fewer messages; reconnect after a pause",
                }
            )
            raise _Closed(CLOSE_TOO_SLOW, "too many messages")
        raw = frame.get("text")
        if not isinstance(raw, str):  # a binary frame
            await self.send(
                {
                    "type": "error",
                    "code": "invalid_frame",
                    "message": "binary frames are not supported",
                    "hint": "send JSON text frames",
                }
            )
            raise _Closed(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported")
        if len(raw) > MAX_FRAME_CHARS:
            await self.send(
                {
                    "type": "error",
                    "code": "invalid_message",
                    "message": f"a frame may hold at most {MAX_FRAME_CHARS} characters",
                }
            )
            raise _Closed(CLOSE_TOO_BIG, "frame too big")
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return {"type": "<invalid>"}
        return message

    async def _loop(self) -> None:
        while True:
            message = await self._receive()
            try:
                await self._handle(message)
            except (_Closed, WebSocketDisconnect, WebSocketDisconnected):
                raise
            except GatheringError as exc:  # e.g. the database failed checking a subject
                await self.send({"type": "error", **public_error(exc)})
            except Exception:  # a fault of ours: this frame fails, the socket stays
                log.exception("websocket message failed", message_type=message["type"])
                await self.send(
                    {
                        "type": "error",
                        "code": "internal_error",
                        "message": "the server failed handling this message; it has been logged",
                    }
                )

    async def _handle(self, message: dict[str, Any]) -> None:
        """Answer one frame of the client."""
        kind = message["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "auth":
            await self._authenticate(
                _string_field(message, "token"), _string_field(message, "ticket"), answer=True
            )
        elif self.principal is None:
            await self.send(
                {
                    "type": "error",
                    "code": "unauthenticated",
                    "message": 'authenticate first: {"type": "auth", ...}',
                }
            )
            raise _Closed(CLOSE_UNAUTHENTICATED, "authentication required")
        elif kind == "subscribe":
            await self._subscribe(message)
        elif kind == "unsubscribe":
            await self._stop_stream()
            await self.send({"type": "unsubscribed"})
        else:
            await self.send(
                {
                    "type": "error",
                    "code": "invalid_message",
                    "message": f"unknown message type {kind!r}",
                    "hint": "send ping, auth, subscribe or unsubscribe",
                }
            )

    async def _recheck(self, *, at_most_every: float = 0.0) -> None:
        """Close with 4401 once the socket's credentials were revoked, disabled or expired, and
        with 4403 once the account may no longer see what the socket is subscribed to."""
        if not self.settings.auth_required or self.principal is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._checked_at < at_most_every:
            return
        self._checked_at = now
        try:
            principal = await recheck_socket(self.ws, self.principal)
        except AuthenticationError:
            raise _Closed(CLOSE_UNAUTHENTICATED, "credentials no longer valid") from None
        self.principal = principal
        # A subscription allowed to a member stays allowed while its user owns what it names
        # (the ownership of agents, pipelines, schedules and tasks does not change); one
        # allowed to an administrator is checked again as soon as the account is no longer
        # one, and one to a circle or a project every time (members leave; a circle's name may
        # pass to a new circle).
        projects = any(subject.startswith("project:") for subject in self.subjects or ())
        recheck = self.allowed_as_admin or bool(self.circles) or projects
        if self.stream is not None and recheck and not principal.is_admin:
            reason = await _may_keep(self.ws, principal, self.subjects)
            if reason is not None:
                self._halt_delivery()
                log.info(
                    "websocket subscription withdrawn", user_id=principal.user_id, reason=reason
                )
                raise _Closed(CLOSE_FORBIDDEN, "subscription no longer allowed")
            self.allowed_as_admin = False
            if self.circles != await _circle_ids(self.ws, self.subjects):
                self._halt_delivery()
                raise _Closed(CLOSE_FORBIDDEN, "subscription no longer allowed")

    def _of_bound_circle(self, event: Event) -> bool:
        """False for an event of a circle other than the one a `circle:<name>` subject named
        when the socket subscribed (deleted since, its name now another circle's)."""
        subject = event.subject or ""
        if not subject.startswith("circle:"):
            return True
        bound = self.circles.get(subject.partition(":")[2])
        return bound is None or event.data.get("circle_id") == bound

    def _halt_delivery(self) -> None:
        """Deliver nothing more from the current stream (the socket is about to close)."""
        if self.stream is not None:
            self.stream.close()

    async def _subscribe(self, message: dict[str, Any]) -> None:
        if self.replay_until is not None:
            await self.send(
                {
                    "type": "error",
                    "code": "replay_in_progress",
                    "message": "a replay (since) is still running on this socket",
                    "hint": "wait for its events, or unsubscribe first",
                }
            )
            return
        await self._recheck()
        assert self.principal is not None
        try:
            request = Subscribe.model_validate(message)
        except ValidationError as exc:
            await self.send(
                {
                    "type": "error",
                    "code": "invalid_input",
                    "message": "; ".join(e["msg"] for e in exc.errors()),
                }
            )
            return
        subjects = request.subjects if request.subjects is not None else self.default_subjects
        if subjects is None and not self.principal.is_admin:
            subjects = [f"user:{self.principal.user_id}"]
        if subjects is not None:
            subjects = list(dict.fromkeys(subjects))
        for subject in subjects or []:
            reason = await _may_see(self.ws, self.principal, subject)
            if reason is not None:
                await self.send({"type": "error", "code": "not_found", "message": reason})
                return
        await self._stop_stream()
        bus = await self.state.event_bus()
        try:
            self.stream = bus.stream(
                request.patterns,
                subjects=subjects,
                since_cursor=request.since,
                maxsize=self.settings.ws_queue_size,
            )
        except GatheringError as exc:
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
            return
        self.subjects = subjects
        self.allowed_as_admin = self.principal.is_admin
        self.circles = await _circle_ids(self.ws, subjects)
        cursor = bus.cursor
        if request.since is not None and cursor is not None and request.since < cursor:
            self.replay_until = cursor
        await self.send(
            {
                "type": "subscribed",
                "patterns": request.patterns,
                "subjects": subjects,
                "cursor": cursor,
            }
        )
        self.forwarder = asyncio.create_task(self._forward(self.stream))

    async def _forward(self, stream: EventStream) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.ws_heartbeat):
                        event: Event = await stream.get()
                except TimeoutError:
                    self.replay_until = None  # nothing more came: caught up
                    await self._recheck()
                    await self.send({"type": "heartbeat", "cursor": stream.last_cursor})
                    continue
                if stream.dropped:
                    raise _Closed(CLOSE_TOO_SLOW, "client too slow to keep up with its events")
                await self._recheck(at_most_every=RECHECK_SECONDS)
                end = self.replay_until
                if end is not None and (event.cursor is None or event.cursor >= end):
                    self.replay_until = None  # this event is the last of the replay, or live
                if not self._of_bound_circle(event):
                    continue
                await self.send({"type": "event", "event": event.to_dict()})
        except EventStreamClosedError:
            return
        except _Closed as closed:
            await self._close(closed.code, closed.reason)
        except GatheringError as exc:  # e.g. the database failed during a replay
            log.warning("event stream failed", error=exc.code, message=exc.message)
            with contextlib.suppress(Exception):
                await self.send({"type": "error", **public_error(exc)})
            await self._close(CLOSE_INTERNAL_ERROR, "event stream failed; reconnect with since")
        except (WebSocketDisconnect, WebSocketDisconnected, RuntimeError):
            return
        except Exception:  # a fault of ours: log it and close, rather than go silent
            log.exception("websocket event forwarding failed")
            await self._close(CLOSE_INTERNAL_ERROR, "internal error; reconnect with since")

    async def _stop_stream(self) -> None:
        self.replay_until = None
        self.subjects, self.allowed_as_admin, self.circles = None, False, {}
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.forwarder is not None:
            self.forwarder.cancel()
            await asyncio.gather(self.forwarder, return_exceptions=True)
            self.forwarder = None


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    """Subscribe to events (see the module documentation for the protocol)."""
    await SocketSession(websocket, default_subjects=None).run()


@router.websocket("/ws/circles/{name}")
async def circle_socket(websocket: WebSocket, name: str) -> None:
    """The events of one circle (subject `circle:<name>`)."""
    await SocketSession(websocket, default_subjects=[f"circle:{name}"]).run()
