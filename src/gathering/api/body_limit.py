"""Request body limits: a 413 before anything reads, buffers or parses an oversized body.

FastAPI reads and parses a request body before the route's dependencies run, so without a
limit an anonymous client could make the server buffer and parse any amount of JSON before
it answers 401. `BodyLimitMiddleware` runs before routing:

- a `Content-Length` over the limit is answered 413 at once, without reading the body;
- a body without `Content-Length` (chunked) or with a false one is counted as it arrives,
  and the request fails with 413 as soon as the count passes the limit: the app never
  receives more than the limit;
- a malformed `Content-Length` (not one non-negative integer) is a 400.

The 413 does not close the connection: the server (uvicorn) discards the rest of the body as
it arrives, buffering nothing, so a client that sends its whole body before it reads sees
the 413. Closing at once would make the kernel reset the connection and drop the answer.

Starlette and FastAPI have a `max_body_size` of their own, but it answers text/plain from
outside our middleware (no request id, no security headers, not problem+json), looks at
`Content-Length` only once the app reads or answers (a handler that does not read the body
still runs) and lets a malformed `Content-Length` through; hence this one.
"""

from __future__ import annotations

import re
import sys

import structlog
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gathering.api.errors import problem
from gathering.errors import InvalidInputError

log = structlog.get_logger(__name__)

KIB = 1024
MIB = 1024 * KIB

# Paths (each with everything under it) whose bodies may reach GATHERING_MAX_UPLOAD_BYTES
# instead of GATHERING_MAX_BODY_BYTES: the knowledge base, `/knowledge` (files uploaded as
# multipart to `/knowledge/upload`; a JSON document of up to 2,000,000 characters is up to 8 MB
# of UTF-8, more once JSON-escaped; its neighbours share the prefix) and its deprecated paths
# `/memories/knowledge`. Pipeline definitions are documents too: up to 1,000 nodes and 5,000
# edges, each with texts of up to 20,000 characters, exceed 1 MiB long before the definition's
# own limits. A project's file is written with its whole text (up to 1 MiB characters).
UPLOAD_PATH_PREFIXES: tuple[str, ...] = (
    "/knowledge",
    "/memories/knowledge",
    "/pipelines",
    "/projects",  # a file's whole text
)

_DIGITS = re.compile(rb"[0-9]+")
# A Content-Length of more digits than this is larger than any limit we accept.
_MAX_LENGTH_DIGITS = 18


class _BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passes the limit (control flow only)."""


def _size(count: int) -> str:
    """`1048576` -> `1 MiB`, `1536` -> `1.5 KiB`, `100` -> `100 bytes`."""
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


def content_length(scope: Scope) -> int | None:
    """The declared body length: None without Content-Length, InvalidInputError if malformed."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    values = [bytes(value) for name, value in headers if name.lower() == b"content-length"]
    if not values:
        return None
    items = {item.strip() for value in values for item in value.split(b",")}
    if len(items) != 1 or not _DIGITS.fullmatch(next(iter(items))):
        raise InvalidInputError(
            "the Content-Length header is not one non-negative integer",
            hint="send the body's exact length in bytes once, or leave the header out and "
            "send the body chunked",
        )
    digits = items.pop().lstrip(b"0") or b"0"
    if len(digits) > _MAX_LENGTH_DIGITS:
        return sys.maxsize
    return int(digits)


class BodyLimitMiddleware:
    """ASGI middleware refusing request bodies over the limit of their path with 413."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_path_prefixes: tuple[str, ...] = UPLOAD_PATH_PREFIXES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_path_prefixes = upload_path_prefixes

    def is_upload_path(self, path: str) -> bool:
        """True when `path` is one of the upload prefixes or lies under one."""
        return any(
            path == prefix or path.startswith(prefix.rstrip("/") + "/")
            for prefix in self.upload_path_prefixes
        )

    def limit_for(self, path: str) -> int:
        """The largest body accepted on `path`, in bytes."""
        return self.max_upload_bytes if self.is_upload_path(path) else self.max_body_bytes

    def too_large(self, path: str) -> JSONResponse:
        """The 413 for `path`: it names the limit and what to do about it."""
        limit = self.limit_for(path)
        upload = self.is_upload_path(path)
        setting = "GATHERING_MAX_UPLOAD_BYTES" if upload else "GATHERING_MAX_BODY_BYTES"
        return problem(
            413,
            "request_too_large",
            f"the request body is larger than {_size(limit)} ({limit} bytes), the limit for "
            "this path; it was not processed",
            hint="send a smaller body (split large content over several requests), or ask "
            f"the operator to raise {setting}",
            max_bytes=limit,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # WebSocket and lifespan scopes pass through untouched
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = self.limit_for(path)
        try:
            declared = content_length(scope)
        except InvalidInputError as exc:
            response = problem(400, exc.code, exc.message, hint=exc.hint)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        if declared is not None and declared > limit:
            log.info("request body too large", path=path, content_length=declared, limit=limit)
            await self.too_large(path)(scope, receive, send)
            return

        received = 0
        exceeded = False
        app_response_started = False
        answered = False  # our 413 went out in place of the app's response

        async def receive_within_limit() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    log.info("request body too large", path=path, received=received, limit=limit)
                    raise _BodyTooLarge  # the chunk that passed the limit is not handed over
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal app_response_started, answered
            if answered:
                return  # the app's own answer to a body it could not finish reading
            if message["type"] == "http.response.start":
                if exceeded and not app_response_started:
                    answered = True
                    await self.too_large(path)(scope, receive, send)
                    return
                app_response_started = True
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_unless_refused)
        except Exception:
            # The app may let `_BodyTooLarge` out as is, wrapped in an exception group, or
            # as another error; once the limit was passed, the answer is the 413 regardless.
            if not exceeded or (app_response_started and not answered):
                raise
        if exceeded and not answered and not app_response_started:
            await self.too_large(path)(scope, receive, send)
