"""Where requests may come from: loopback binding, the Host allow-list and the Origin check.

These stop DNS rebinding (a foreign name resolving to 127.0.0.1 arrives with a foreign Host)
and cross-site requests from a browser (a foreign Origin, or `Sec-Fetch-Site: cross-site`).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from gathering.api.errors import problem
from gathering.config import Settings
from gathering.errors import StartupError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP addresses (not for 0.0.0.0 or other names)."""
    host = host.strip().lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def ensure_bind_allowed(settings: Settings, host: str) -> None:
    """Refuse to serve single-user mode (no login) on an address other machines can reach."""
    if not settings.auth_required and not is_loopback(host):
        raise StartupError(
            f"single-user mode has no login, so it only listens on this machine, not on {host}",
            hint="use --host 127.0.0.1, or set GATHERING_AUTH=required (and SECRET_KEY) "
            "to serve other machines with accounts",
        )


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
        if self.hosts is not None and host_name(host) not in self.hosts:
            return 400, "host_not_allowed", "this server does not answer to that Host name"
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            return 400, "invalid_input", "NUL characters are not allowed in a URL"
        origin = headers.get("origin")
        if origin is not None:
            if not self._origin_allowed(origin, host):
                return 403, "origin_not_allowed", "cross-origin requests from there are refused"
        elif headers.get("sec-fetch-site") == "cross-site" and not _is_navigation(scope, headers):
            return 403, "origin_not_allowed", "cross-site requests are refused"
        return None

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


def _is_non_loopback_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name (e.g. a test client's "testserver"), or a unix socket
    return not is_loopback(host)


def _is_navigation(scope: Scope, headers: Headers) -> bool:
    """A top-level page load (a link from another site), which browsers mark cross-site too."""
    return scope.get("method") == "GET" and headers.get("sec-fetch-mode") == "navigate"
