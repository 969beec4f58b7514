"""`WS /ws/projects/{id}/terminal`: a shell in the project's directory, inside the sandbox.

Protocol (JSON text frames; see docs/projects.md):
  client {"type": "ping"}                          -> {"type": "pong"}   (even before auth)
  client {"type": "auth", "token": ".."} or {"type": "auth", "ticket": ".."}
                                                   -> {"type": "authenticated", "user_id": ..}
                                                   (again later, with a refreshed token of the
                                                   same user: the terminal outlives the first)
  server {"type": "ready", "cols": 80, "rows": 24, "network": false,
          "idle_seconds": .., "max_seconds": ..}   once the shell runs
  client {"type": "input", "data": "ls\\n"}        typed into the terminal (keys, pastes)
  client {"type": "resize", "cols": 120, "rows": 40}
  server {"type": "output", "data": ".."}          the terminal's output, UTF-8 decoded
  server {"type": "exit", "code": N}               the shell exited (then close 1000)
  server {"type": "error", "code": .., "message": .., "hint": ..}

Authentication is that of every WebSocket (routers/ws.py): a one-time ticket or an access
token on the handshake, or an `auth` frame, within GATHERING_WS_AUTH_GRACE seconds (4401);
in single-user mode the local owner at once. Then the caller needs the project's `terminal`
permission (its owner and admins have it; a viewer never does) and, for an API key's ticket,
the scope `projects:write`: else an error and 4404 (no project it may see) or 4403.

Limits: the socket caps of every WebSocket (per address, per user), MAX_PER_USER terminals
per user and MAX_PER_PROJECT per project on this instance (4430), INPUT_RATE frames a second
after a burst of INPUT_BURST (4429), 64 KiB a frame (1009). A client that does not read its
output for SEND_TIMEOUT seconds is closed (4429); until then the shell is held back, not
buffered. No input for GATHERING_TERMINAL_IDLE_SECONDS, or GATHERING_TERMINAL_MAX_SECONDS in
all: an error (`terminal_idle`, `terminal_time_limit`) and 4408. Credentials and the
permission are checked again at least every GATHERING_WS_HEARTBEAT seconds and before input
(at most every RECHECK_SECONDS): 4401 or 4403 once they no longer hold. The sandbox, the shell
and every process in it are killed whenever the socket ends, and when the server drains (1001).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final, NoReturn

import structlog
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from gathering.api.deps import MAX_ID
from gathering.api.errors import public_error
from gathering.api.routers.projects import project_access
from gathering.api.routers.ws import (
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHENTICATED,
    RECHECK_SECONDS,
    SocketSession,
    _Closed,
)
from gathering.api.security import not_found, public_route
from gathering.api.security.dependencies import authenticate_socket
from gathering.api.security.ws_limits import SocketLease, SocketSlots, TokenBucket
from gathering.errors import (
    AuthenticationError,
    GatheringError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from gathering.projects import Actor, ProjectRecord, record_activity
from gathering.projects.terminal import (
    DEFAULT_COLS,
    DEFAULT_ROWS,
    Terminal,
    open_project_terminal,
)

log = structlog.get_logger(__name__)

router = APIRouter(tags=["projects"], dependencies=[Depends(public_route)])

CLOSE_NORMAL: Final = 1000
CLOSE_NOT_FOUND: Final = 4404
CLOSE_TIME_LIMIT: Final = 4408  # idle for too long, or open for too long
INPUT_WAIT_SECONDS: Final = 5.0  # input the shell does not take for this long: close 4429
MAX_PER_USER: Final = 4
MAX_PER_PROJECT: Final = 8
# Keystrokes come one frame each (a held key repeats some 30 a second); a paste is one frame.
INPUT_RATE: Final = 50.0
INPUT_BURST: Final = 200
SCOPE: Final = "projects:write"  # a terminal changes files


class TerminalSlots:
    """The terminals open on one app: counted per user and per project, and the open ones
    (`app.state.terminals`)."""

    def __init__(self, per_user: int = MAX_PER_USER, per_project: int = MAX_PER_PROJECT) -> None:
        self.by_user = SocketSlots(per_user)
        self.by_project = SocketSlots(per_project)
        self.open: set[Terminal] = set()


def terminal_slots(websocket: WebSocket) -> TerminalSlots:
    slots = getattr(websocket.app.state, "terminals", None)
    if not isinstance(slots, TerminalSlots):
        slots = websocket.app.state.terminals = TerminalSlots()
    return slots


class TerminalSession(SocketSession):
    """One terminal socket: the authentication and limits of every socket (SocketSession),
    then a shell in the sandbox, its output pumped to the client, and a watchdog for the
    caps."""

    def __init__(self, websocket: WebSocket, project_id: int) -> None:
        super().__init__(websocket, default_subjects=None)
        self.project_id = project_id
        self.bucket = TokenBucket(INPUT_RATE, INPUT_BURST)
        self.slots = terminal_slots(websocket)
        self.user_terminal = SocketLease(self.slots.by_user)
        self.project_terminal = SocketLease(self.slots.by_project)
        self.project: ProjectRecord | None = None
        self.terminal: Terminal | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.opened_at = 0.0
        self.last_input = 0.0
        self.access_checked_at = 0.0
        self.ended = False

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self._stop_terminal()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _on_drain(self) -> None:
        if self.terminal is not None:
            self.terminal.kill()
        self.closing = asyncio.get_running_loop().create_task(
            self._end(CLOSE_GOING_AWAY, "server shutting down")
        )

    async def _authenticate(
        self, token: str | None, ticket: str | None, *, answer: bool = False
    ) -> None:
        if self.principal is not None:  # the terminal belongs to whom it was opened for
            await self._renew(token, ticket)
            return
        await super()._authenticate(token, ticket, answer=answer)
        await self._open()

    async def _renew(self, token: str | None, ticket: str | None) -> None:
        """Fresh credentials of the same user (a refreshed access token) keep the terminal
        open past the first one's expiry. Anyone else's, or credentials that do not hold, are
        refused with an error: the terminal stays on the ones it has (until they expire)."""
        assert self.principal is not None
        refused = {
            "type": "error",
            "code": "invalid_message",
            "message": "this socket is already authenticated",
            "hint": "renew it with a fresh token of the same user, or open another socket",
        }
        if not self.settings.auth_required:
            await self.send(refused)  # single-user mode: the local owner's, nothing to renew
            return
        try:
            renewed = await authenticate_socket(self.ws, token, ticket=ticket)
        except AuthenticationError as exc:
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
            return
        if renewed.user_id != self.principal.user_id:
            await self.send(refused | {"message": "this socket is authenticated as another user"})
            return
        self.principal = renewed
        await self.send({"type": "authenticated", "user_id": renewed.user_id})

    async def _refuse(self, exc: GatheringError, code: int, reason: str) -> NoReturn:
        await self.send({"type": "error", **public_error(exc)})
        raise _Closed(code, reason)

    async def _open(self) -> None:
        """Check the caller's access, take the caps' slots, start the shell."""
        assert self.principal is not None
        principal = self.principal
        if not principal.has_scope(SCOPE):
            await self._refuse(
                PermissionDeniedError(f"this API key lacks the scope {SCOPE!r}"),
                CLOSE_FORBIDDEN,
                "scope missing",
            )
        try:
            project = await self._project()
        except NotFoundError as exc:
            await self._refuse(exc, CLOSE_NOT_FOUND, "no such project")
        except PermissionDeniedError as exc:
            await self._refuse(exc, CLOSE_FORBIDDEN, "terminal not allowed")
        except GatheringError as exc:  # e.g. the database is unreachable
            await self._refuse(exc, CLOSE_INTERNAL_ERROR, "terminal unavailable")
        if not self.user_terminal.take(str(principal.user_id)):
            await self._too_many(f"at most {self.slots.by_user.limit} terminals per person")
        if not self.project_terminal.take(str(project.id)):
            await self._too_many(f"at most {self.slots.by_project.limit} terminals per project")
        try:
            terminal = await open_project_terminal(project, self.settings)
        except PermissionDeniedError as exc:
            await self._refuse(exc, CLOSE_FORBIDDEN, "terminal not allowed")
        except GatheringError as exc:  # no sandbox here (FeatureUnavailableError), ...
            log.warning("project terminal failed to start", error=exc.code, message=exc.message)
            await self._refuse(exc, CLOSE_INTERNAL_ERROR, "terminal unavailable")
        self.project, self.terminal = project, terminal
        self.slots.open.add(terminal)
        if self.ended:  # the socket began to close (a drain) while the shell started
            await self._stop_terminal()
            raise _Closed(CLOSE_GOING_AWAY, "server shutting down")
        now = asyncio.get_running_loop().time()
        self.opened_at = self.last_input = self.access_checked_at = now
        await self._record("terminal.open", {})
        await self.send(
            {
                "type": "ready",
                "cols": DEFAULT_COLS,
                "rows": DEFAULT_ROWS,
                "network": project.settings.allow_network,
                "idle_seconds": self.settings.terminal_idle_seconds,
                "max_seconds": self.settings.terminal_max_seconds,
            }
        )
        self.tasks = [
            asyncio.create_task(self._pump(terminal)),
            asyncio.create_task(self._watch()),
        ]

    async def _project(self) -> ProjectRecord:
        """The project, while the caller may open a terminal in it (404 / 403 errors)."""
        assert self.principal is not None
        if self.project_id > MAX_ID:
            raise not_found("project", self.project_id)
        db = await self.state.database()
        return await project_access(self.ws, self.principal, db, self.project_id, "terminal")

    async def _too_many(self, message: str) -> NoReturn:
        await self.send(
            {
                "type": "error",
                "code": "too_many_terminals",
                "message": message,
                "hint": "close a terminal you have open",
            }
        )
        raise _Closed(CLOSE_TOO_MANY_SOCKETS, "too many terminals")

    async def _record(self, action: str, detail: dict[str, Any]) -> None:
        """Keep the opening and the end of the terminal in the project's activity."""
        if self.project is None or self.principal is None:
            return
        try:
            db = await self.state.database()
            actor = Actor(user_id=self.principal.user_id)
            await record_activity(db, self.project, actor, action, detail=detail)
        except GatheringError as exc:
            log.warning("terminal activity not recorded", error=exc.code, action=action)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.ended:  # closing: frames still in flight are dropped
            return
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "auth":
            token, ticket = message.get("token"), message.get("ticket")
            await self._authenticate(
                token if isinstance(token, str) else None,
                ticket if isinstance(ticket, str) else None,
                answer=True,
            )
        elif self.principal is None or self.terminal is None:
            await self.send(
                {
                    "type": "error",
                    "code": "unauthenticated",
                    "message": 'authenticate first: {"type": "auth", ...}',
                }
            )
            raise _Closed(CLOSE_UNAUTHENTICATED, "authentication required")
        elif kind == "input":
            data = message.get("data")
            if not isinstance(data, str):
                raise InvalidInputError("an input frame needs `data`, the text typed")
            terminal = self.terminal
            await self._check_access(at_most_every=RECHECK_SECONDS)
            if self.terminal is not terminal or self.ended:
                return  # it ended while access was checked
            self.last_input = asyncio.get_running_loop().time()
            try:  # a shell that stops reading its input must not stop us reading the socket
                async with asyncio.timeout(INPUT_WAIT_SECONDS):
                    await terminal.write(data)
            except TimeoutError:
                raise _Closed(CLOSE_TOO_SLOW, "the shell does not take its input") from None
        elif kind == "resize":
            cols, rows = message.get("cols"), message.get("rows")
            if not isinstance(cols, int) or not isinstance(rows, int):
                raise InvalidInputError("a resize frame needs whole numbers `cols` and `rows`")
            self.terminal.resize(cols=cols, rows=rows)
            self.last_input = asyncio.get_running_loop().time()
        else:
            await self.send(
                {
                    "type": "error",
                    "code": "invalid_message",
                    "message": f"unknown message type {kind!r}",
                    "hint": "send ping, auth, input or resize",
                }
            )

    async def _check_access(self, *, at_most_every: float = 0.0) -> None:
        """Close with 4401 once the credentials no longer hold, and with 4403 once the caller
        may no longer open a terminal in the project (or it is gone)."""
        now = asyncio.get_running_loop().time()
        if now - self.access_checked_at < at_most_every:
            return
        self.access_checked_at = now
        await self._recheck()
        try:
            await self._project()
        except (NotFoundError, PermissionDeniedError):
            raise _Closed(CLOSE_FORBIDDEN, "terminal no longer allowed") from None

    async def _pump(self, terminal: Terminal) -> None:
        """The terminal's output to the client, then its exit."""
        try:
            while (text := await terminal.read()) is not None:
                await self.send({"type": "output", "data": text})
            code = await terminal.wait()
            await self.send({"type": "exit", "code": code})
            await self._end(CLOSE_NORMAL, "the shell exited", {"exit_code": code})
        except _Closed as closed:
            await self._end(closed.code, closed.reason)
        except (WebSocketDisconnect, WebSocketDisconnected, RuntimeError):
            await self._stop_terminal()  # the socket is gone: so is the shell
        except Exception:  # a fault of ours: log it, and end the terminal rather than hang
            log.exception("project terminal output failed")
            await self._end(CLOSE_INTERNAL_ERROR, "internal error")

    async def _watch(self) -> None:
        """End the terminal at its idle and total caps; check access now and then."""
        loop = asyncio.get_running_loop()
        idle = self.settings.terminal_idle_seconds
        ends_at = self.opened_at + self.settings.terminal_max_seconds
        try:
            while True:
                now = loop.time()
                wake = min(self.last_input + idle, ends_at, now + self.settings.ws_heartbeat)
                await asyncio.sleep(max(wake - now, 0.0))
                now = loop.time()
                if now >= ends_at:
                    await self._end_at_cap(
                        "terminal_time_limit",
                        f"the terminal was open for {self.settings.terminal_max_seconds:g} "
                        "seconds, its limit",
                    )
                    return
                if now >= self.last_input + idle:
                    await self._end_at_cap(
                        "terminal_idle", f"no input for {idle:g} seconds: the terminal closed"
                    )
                    return
                await self._check_access()
        except _Closed as closed:
            await self._end(closed.code, closed.reason)
        except (WebSocketDisconnect, WebSocketDisconnected, RuntimeError):
            await self._stop_terminal()
        except Exception:
            log.exception("project terminal watchdog failed")
            await self._end(CLOSE_INTERNAL_ERROR, "internal error")

    async def _end_at_cap(self, code: str, message: str) -> None:
        await self._stop_terminal({"reason": code})
        with contextlib.suppress(Exception):  # a client too slow to take it
            await self.send(
                {"type": "error", "code": code, "message": message, "hint": "open a new one"}
            )
        await self._close(CLOSE_TIME_LIMIT, code.replace("_", " "))

    async def _end(self, code: int, reason: str, detail: dict[str, Any] | None = None) -> None:
        await self._stop_terminal(detail or {"reason": reason})
        await self._close(code, reason)

    async def _stop_terminal(self, detail: dict[str, Any] | None = None) -> None:
        """Kill the shell and everything in its sandbox, give the slots back; idempotent."""
        self.ended = True
        current = asyncio.current_task()
        others = [task for task in self.tasks if task is not current and not task.done()]
        for task in others:
            task.cancel()
        terminal, self.terminal = self.terminal, None
        try:
            if terminal is not None:
                try:
                    await terminal.close()
                finally:
                    self.slots.open.discard(terminal)
            await asyncio.gather(*others, return_exceptions=True)
        finally:
            self.user_terminal.release()
            self.project_terminal.release()
        if terminal is not None:
            seconds = asyncio.get_running_loop().time() - self.opened_at
            await self._record(
                "terminal.close",
                {"seconds": round(seconds, 1), **(detail or {"reason": "socket closed"})},
            )


@router.websocket("/ws/projects/{project_id:id}/terminal")
async def project_terminal(websocket: WebSocket, project_id: int) -> None:
    """A shell in the project's directory (see the module documentation for the protocol)."""
    await TerminalSession(websocket, project_id).run()
