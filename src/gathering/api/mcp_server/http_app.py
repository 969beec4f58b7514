"""The streamable HTTP transport: the SDK's app behind the API's own request defences.

From the outside in: the Host/Origin guard of the API (loopback names only in single-user
mode, GATHERING_ALLOWED_HOSTS and GATHERING_CORS_ORIGINS otherwise), the body limit
(GATHERING_MAX_BODY_BYTES, a 413 before anything is read), then `CallerGate`, which
authenticates every request before the SDK sees it. The SDK's own DNS-rebinding check is off:
the guard in front of it is the same one the API uses, and follows our settings.
"""

from __future__ import annotations

from typing import Any

import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gathering.api.body_limit import BodyLimitMiddleware
from gathering.api.errors import problem, public_error
from gathering.api.mcp_server.runtime import McpRuntime
from gathering.api.security.hosts import HostOriginGuard
from gathering.api.security.ratelimit import Tier, rate_limited
from gathering.auth.principal import Principal
from gathering.errors import AuthenticationError, GatheringError

log = structlog.get_logger(__name__)

MCP_PATH = "/mcp"
PRINCIPAL_KEY = "gathering.principal"  # where `CallerGate` leaves the caller in the scope state
CREDENTIAL_HINT = (
    "send `Authorization: Bearer <credential>` with an API key (POST /auth/api-keys) or an "
    "access token (POST /auth/login)"
)


def _credential(headers: Headers) -> str | None:
    """The bearer credential of a request (an `X-API-Key` header is accepted too)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


class CallerGate:
    """ASGI middleware: authenticates each HTTP request (the local owner in single-user mode),
    counts it against the API's rate tiers, and leaves the `Principal` in the request's state
    for the tools. A refusal is a problem+json 401 (or 429) and the SDK never sees it."""

    def __init__(self, app: ASGIApp, runtime: McpRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def _count(self, tier: Tier, subject: str) -> None:
        """One request against `tier` for `subject`; `RateLimitedError` when exhausted."""
        security = self.runtime.security
        if not security.settings.rate_limit_enabled:
            return
        status = await security.limiter().hit(security.tiers[tier], "tier", tier, "MCP", subject)
        if status is not None and not status.allowed:
            raise rate_limited(status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        try:
            try:
                principal = await self.runtime.principal_for(_credential(Headers(scope=scope)))
            except AuthenticationError:
                # Failed attempts count against the address: guessing is throttled too.
                await self._count("strict", f"ip:{client[0] if client else 'unknown'}")
                raise
            await self._count("standard", f"user:{principal.user_id}")
        except GatheringError as exc:
            public = public_error(exc)
            response = problem(
                exc.http_status,
                exc.code,
                public["message"],
                hint=public.get("hint") or (CREDENTIAL_HINT if exc.http_status == 401 else None),
                retry_after=exc.details.get("retry_after"),
            )
            if exc.http_status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="gathering"'
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


async def http_caller(ctx: Context) -> Principal:
    """The caller of a tool over HTTP: the one `CallerGate` verified for this request."""
    request: Any = ctx.request_context.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    principal = state.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a request that bypassed the gate: refuse
        raise AuthenticationError("this request carries no verified caller", hint=CREDENTIAL_HINT)
    return principal


def http_app(server: MCPServer[Any], runtime: McpRuntime) -> ASGIApp:
    """The ASGI app of `server` at `/mcp`, behind the guard, the body limit and the gate."""
    settings = runtime.settings
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=settings.max_body_bytes,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=settings.host,
    )
    app = CallerGate(app, runtime)
    app = BodyLimitMiddleware(
        app,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_body_bytes,
        upload_path_prefixes=(),
    )
    return HostOriginGuard(app, settings)
