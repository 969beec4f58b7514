"""Per-request context: request id, draining gate, in-flight count and HTTP metrics.

One small ASGI middleware rather than three, because all three wrap the same span of a request.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gathering.api.draining import DrainState
from gathering.api.errors import problem
from gathering.observability import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and metrics: reachable without credentials and while draining, never counted as
# work in flight.
OPERATIONAL_PATH_PREFIXES = ("/health", "/metrics")
# Metric labels come from this closed set, never from the request line: any other method is
# "OTHER" and every path no route matched is one "unmatched" route (bounded cardinality).
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "unmatched"


def metric_labels(scope: Scope) -> tuple[str, str]:
    """The (method, route) labels of a request: standard methods and route templates only."""
    method = scope.get("method", "GET")
    route = getattr(scope.get("route"), "path", None)
    return (
        method if method in STANDARD_METHODS else OTHER_METHOD,
        route if isinstance(route, str) and route else UNMATCHED_ROUTE,
    )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate = bytes(value).decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Tags every request with an id, refuses new work while draining, measures requests."""

    def __init__(self, app: ASGIApp, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        path: str = scope["path"]
        operational = path.startswith(OPERATIONAL_PATH_PREFIXES)
        if self.drain.draining and not operational:
            response = problem(
                503,
                "shutting_down",
                "the server is shutting down; retry on another instance",
                retry_after=1,
            )
            response.headers[REQUEST_ID_HEADER] = request_id
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return

        status = 500
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        started = time.perf_counter()
        if not operational:
            self.drain.request_started()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not operational:
                self.drain.request_finished()
            method, template = metric_labels(scope)
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(method, template).observe(time.perf_counter() - started)
