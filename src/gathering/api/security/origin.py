"""Where an HTTP request or WebSocket came from, for the audit log and the rate-limit subject."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gathering.auth.audit import MAX_USER_AGENT, RequestOrigin


def client_ip(conn: HTTPConnection) -> str:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers to get the client's)."""
    return conn.client.host if conn.client else "unknown"


def request_origin(conn: HTTPConnection) -> RequestOrigin:
    """The address, user agent and request id of `conn`."""
    agent = conn.headers.get("user-agent")
    return RequestOrigin(
        ip=client_ip(conn),
        user_agent=agent[:MAX_USER_AGENT] if agent else None,
        request_id=getattr(conn.state, "request_id", None),
    )
