"""Where requests may come from: loopback binding, the Host allow-list and the Origin check.

These stop DNS rebinding (a foreign name resolving to 127.0.0.1 arrives with a foreign Host)
and cross-site requests from a browser (a foreign Origin, or `Sec-Fetch-Site: cross-site`).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from gathering.api.errors import problem
from gathering.config import Settings, is_loopback

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _bracketed(host: str) -> str:
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names accepted (None when the check is off with `*`)."""
    if "*" in settings.allowed_hosts:
        return None
    hosts = {*LOOPBACK_HOSTS, _bracketed(settings.host), *map(_bracketed, settings.allowed_hosts)}
    return frozenset(hosts)


def host_name(host_header: str) -> str:
    """The name part of a Host header: `[::1]:8000` -> `[::1]`, `Host.com:80` -> `host.com`."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    name, _, _port = value.partition(":")
    return name


class HostOriginGuard:
    """ASGI middleware: refuses foreign Host headers, foreign Origins and NULs in the URL."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = allowed_hosts(settings)
        self.origins = frozenset(settings.cors_origins)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        server = scope.get("server")
        if not self.settings.auth_required and server and _is_non_loopback_ip(str(server[0])):
            return 403, "loopback_only", "single-user mode only answers on this machine"
        host = headers.get("host", "")
        client = scope.get("client")
        if self.hosts is not None and not self._host_allowed(host_name(host), server, client):
            return 400, "host_not_allowed", _host_refusal(host, self.settings)
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            return 400, "invalid_input", "NUL characters are not allowed in a URL"
        origin = headers.get("origin")
        if origin is not None:
            if not self._origin_allowed(origin, host):
                return 403, "origin_not_allowed", "cross-origin requests from there are refused"
        elif headers.get("sec-fetch-site") == "cross-site" and not _is_navigation(scope, headers):
            return 403, "origin_not_allowed", "cross-site requests are refused"
        return None

    def _host_allowed(self, name: str, server: Any, client: Any) -> bool:
        """Allowed names, and an in-process call's own server name.

        A request from the network has the socket's address as `server` (an IP), or over a unix
        socket the socket's path (and no client address). TestClient and httpx's ASGITransport
        put the URL's name there instead, with a made-up client; no browser can make such a
        call, so that name is accepted for it.
        """
        assert self.hosts is not None
        if name in self.hosts:
            return True
        if server is None or client is None:
            return False  # a unix socket, whose relative path may look like a name
        in_process = not _is_ip(str(server[0])) and "/" not in str(server[0])
        return in_process and name == str(server[0]).lower()

    def _origin_allowed(self, origin: str, host: str) -> bool:
        normalized = origin.strip().lower()
        if normalized in self.origins:
            return True
        parts = urlsplit(normalized)
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, Headers(scope=scope))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, detail = refusal
        if scope["type"] == "websocket":
            await WebSocketClose(code=1008, reason=detail)(scope, receive, send)
            return
        await problem(status, code, detail)(scope, receive, send)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_non_loopback_ip(host: str) -> bool:
    # a name is an in-process call (e.g. a test client's "testserver"), or a unix socket
    return _is_ip(host) and not is_loopback(host)


def _host_refusal(host: str, settings: Settings) -> str:
    """What was refused and how to allow it (the Host is shown escaped and cut short)."""
    shown = ascii(host[:100])
    if settings.auth_required:
        how = (
            "add it to GATHERING_ALLOWED_HOSTS (comma-separated) if this server should answer to it"
        )
    else:
        how = (
            "single-user mode answers to loopback names only (localhost, 127.0.0.1, [::1]); "
            "to serve other names, set GATHERING_AUTH=required and list them in "
            "GATHERING_ALLOWED_HOSTS"
        )
    return f"this server does not answer to the Host {shown}: {how}"


def _is_navigation(scope: Scope, headers: Headers) -> bool:
    """A top-level page load (a link from another site), which browsers mark cross-site too."""
    return scope.get("method") == "GET" and headers.get("sec-fetch-mode") == "navigate"
