"""FastAPI dependencies: the principal of a request, admin and scope checks, ownership, tiers.

Every route of the app sits behind `security_gate` (installed as an app-wide dependency by
`install_security`): it authenticates the caller unless the route is public, and applies the
default rate-limit tier unless the route declares its own with `rate_limit(...)`.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, WebSocketException, status
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

from gathering.api.middleware import OPERATIONAL_PATH_PREFIXES
from gathering.api.security.origin import client_ip, request_origin
from gathering.api.security.ratelimit import DEFAULT_TIER, TIERS, Tier, rate_limited
from gathering.api.security.state import AuthServices, SecurityState
from gathering.auth.audit import AuditEvent
from gathering.auth.principal import Principal, effective_role
from gathering.auth.tokens import TokenClaims, invalid_credentials
from gathering.auth.ws_tickets import TicketGrant
from gathering.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)

WEBSOCKET_TOKEN_PARAM = "access_token"  # noqa: S105 - a parameter name


def security_state(conn: HTTPConnection) -> SecurityState:
    """The `SecurityState` of the app serving `conn`."""
    state: SecurityState = conn.app.state.security
    return state


async def account_services(conn: HTTPConnection) -> AuthServices:
    """Dependency: the account stores; a 409 in single-user mode, which has no accounts."""
    security = security_state(conn)
    if not security.settings.auth_required:
        raise ConflictError(
            "single-user mode has no accounts or tokens: every request already acts as you",
            hint="set GATHERING_AUTH=required to use logins and API keys",
        )
    return await security.services()


# --- authentication ---------------------------------------------------------------------------


def _bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
        if conn.headers.get("x-api-key") is not None:
            return None  # e.g. a proxy's `Basic` credentials: the API key authenticates
        return ""
    if conn.scope["type"] == "websocket":
        # Browsers cannot set headers on a WebSocket handshake.
        return conn.query_params.get(WEBSOCKET_TOKEN_PARAM)
    return None


async def principal_from_token(security: SecurityState, token: str) -> Principal:
    """The caller of an access token; `AuthenticationError` when it is forged, expired,
    revoked, or its user is disabled (the API's check, also used by `gathering mcp serve`)."""
    auth = await security.services()
    claims = (await security.tokens()).decode(token, "access")
    if await auth.revocations.is_revoked(claims):
        raise invalid_credentials()
    user = await auth.users.get(claims.user_id)
    if user is None or not user.is_active or user.is_local_owner:
        raise invalid_credentials()
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=user.is_admin,
        method="token",
        role=user.role,
        token_id=claims.jti,
        family_id=claims.family_id,
        token_expires_at=claims.expires_at,
    )


async def principal_from_api_key(security: SecurityState, presented: str) -> Principal:
    """The caller of an API key; `AuthenticationError` when it is unknown, expired or
    revoked, or its user is disabled."""
    auth = await security.services()
    key = await auth.api_keys.authenticate(presented)
    if key is None:
        raise invalid_credentials()
    user = await auth.users.get(key.user_id)
    if user is None or not user.is_active or user.is_local_owner:
        raise invalid_credentials()
    scopes = frozenset(key.scopes)
    role = effective_role(user.role, scopes)
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=role == "admin",
        method="api_key",
        role=role,
        scopes=scopes,
        api_key_id=key.id,
    )


async def authenticate_socket(
    conn: HTTPConnection, token: str | None, *, ticket: str | None = None
) -> Principal:
    """The caller of a WebSocket: the local owner in single-user mode, else the user of a
    one-time `ticket` (`POST /auth/ws-ticket`; spent here, even when refused) or of an access
    `token` (from the query string or an `auth` message). Raises `AuthenticationError` when
    neither is valid."""
    security = security_state(conn)
    if not security.settings.auth_required:
        return await security.local_owner()
    if ticket:
        grant = await (await security.services()).ws_tickets.consume(ticket)
        if grant is None:
            raise invalid_credentials()
        return await _from_grant(security, grant)
    if not token:
        raise invalid_credentials()
    return await principal_from_token(security, token)


async def recheck_socket(conn: HTTPConnection, principal: Principal) -> Principal:
    """`principal` with its account as it is now, while the access token or API key behind it
    still holds (not expired, not revoked, its user active); else `AuthenticationError`."""
    security = security_state(conn)
    if principal.method == "local":
        return await security.local_owner()
    try:
        grant = TicketGrant.of(principal)
    except InvalidInputError:
        raise invalid_credentials() from None
    return await _from_grant(security, grant)


async def _from_grant(security: SecurityState, grant: TicketGrant) -> Principal:
    """The principal of an access token or API key verified before, if it still holds."""
    auth = await security.services()
    if grant.method == "token":
        assert grant.token_id is not None and grant.family_id is not None
        expires_at = grant.token_expires_at or 0
        if expires_at <= time.time():
            raise invalid_credentials()
        claims = TokenClaims(
            jti=grant.token_id,
            user_id=grant.user_id,
            token_type="access",  # noqa: S106 - a token kind
            family_id=grant.family_id,
            issued_at=0,
            expires_at=expires_at,
        )
        if await auth.revocations.is_revoked(claims):
            raise invalid_credentials()
    else:
        assert grant.api_key_id is not None
        key = await auth.api_keys.get(grant.api_key_id)
        if key is None or key.revoked_at is not None or key.user_id != grant.user_id:
            raise invalid_credentials()
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise invalid_credentials()
    user = await auth.users.get(grant.user_id)
    if user is None or not user.is_active or user.is_local_owner:
        raise invalid_credentials()
    role = effective_role(user.role, grant.scopes)
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=role == "admin",
        role=role,
        method=grant.method,
        scopes=grant.scopes,
        token_id=grant.token_id,
        family_id=grant.family_id,
        token_expires_at=grant.token_expires_at,
        api_key_id=grant.api_key_id,
    )


async def _authenticate(conn: HTTPConnection) -> Principal:
    security = security_state(conn)
    if not security.settings.auth_required:
        return await security.local_owner()
    token = _bearer_token(conn)
    if token is not None:
        return await principal_from_token(security, token)
    api_key = conn.headers.get("x-api-key")
    if api_key is not None:
        return await principal_from_api_key(security, api_key)
    raise AuthenticationError(
        "authentication required",
        hint="send `Authorization: Bearer <access token>` (POST /auth/login) or `X-API-Key`",
    )


async def resolve_principal(conn: HTTPConnection) -> Principal:
    """The caller of `conn`, resolved once per request; raises `AuthenticationError`."""
    cached = getattr(conn.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    failure = getattr(conn.state, "auth_error", None)
    if isinstance(failure, AuthenticationError):
        raise failure
    try:
        principal = await _authenticate(conn)
    except AuthenticationError as exc:
        conn.state.auth_error = exc
        raise
    conn.state.principal = principal
    return principal


async def current_principal(conn: HTTPConnection) -> Principal:
    """Dependency: the authenticated caller (401 without valid credentials)."""
    try:
        return await resolve_principal(conn)
    except AuthenticationError as exc:
        if conn.scope["type"] == "websocket":
            raise WebSocketException(status.WS_1008_POLICY_VIOLATION, exc.message) from None
        raise


async def optional_principal(conn: HTTPConnection) -> Principal | None:
    """Dependency: the caller when valid credentials came with the request, else None."""
    try:
        return await resolve_principal(conn)
    except AuthenticationError:
        return None


# --- authorization ----------------------------------------------------------------------------


async def audit_denial(
    conn: HTTPConnection, principal: Principal | None, reason: str, **details: Any
) -> None:
    """Record a permission denial in the audit log."""
    audit = (await security_state(conn).services()).audit
    await audit.record(
        AuditEvent.PERMISSION_DENIED,
        "denied",
        origin=request_origin(conn),
        actor_id=principal.user_id if principal else None,
        subject=principal.email if principal else None,
        details={"reason": reason, "path": conn.url.path, **details},
    )


async def require_admin(
    conn: HTTPConnection, principal: Principal = Depends(current_principal)
) -> Principal:
    """Dependency: the caller, who must be an admin (403 otherwise, audited)."""
    if not principal.is_admin:
        await audit_denial(conn, principal, "admin required")
        raise PermissionDeniedError("this needs an administrator")
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller, whose credentials must grant `scope` (403, audited)."""

    async def dependency(
        conn: HTTPConnection, principal: Principal = Depends(current_principal)
    ) -> Principal:
        if not principal.has_scope(scope):
            await audit_denial(conn, principal, "scope missing", scope=scope)
            raise PermissionDeniedError(f"this API key lacks the scope {scope!r}")
        return principal

    return dependency


def not_found(resource: str, resource_id: object) -> NotFoundError:
    """The one error for a resource that is missing *or* belongs to someone else."""
    return NotFoundError(f"{resource} {resource_id} not found")


async def ensure_owner(
    conn: HTTPConnection,
    principal: Principal,
    owner_id: int | None,
    *,
    resource: str,
    resource_id: object,
) -> None:
    """Raise `not_found(...)` (audited) when `principal` may not see a resource of `owner_id`.

    The audit row is written after the answer: waiting for it would make "someone else's" slower
    than "missing", and so tell the caller which ids exist.
    """
    if not principal.owns(owner_id):
        denial = audit_denial(
            conn, principal, "not the owner", resource=resource, resource_id=str(resource_id)
        )
        conn.app.state.gathering.run_in_background(denial, name="audit-denial")
        raise not_found(resource, resource_id)


# --- rate limits and the gate -----------------------------------------------------------------


def _subject(conn: HTTPConnection) -> str:
    principal = getattr(conn.state, "principal", None)
    if isinstance(principal, Principal):
        return f"user:{principal.user_id}"
    return f"ip:{client_ip(conn)}"


def _endpoint(conn: HTTPConnection) -> str:
    route = conn.scope.get("route")
    path = getattr(route, "path", None) or conn.url.path
    return f"{conn.scope.get('method', 'WS')} {path}"


async def apply_tier(conn: HTTPConnection, tier: Tier) -> None:
    """Count this request against `tier` for its endpoint and caller; 429 when exhausted."""
    security = security_state(conn)
    if not security.settings.rate_limit_enabled or conn.scope["type"] != "http":
        return
    status_ = await security.limiter().hit(
        security.tiers[tier], "tier", tier, _endpoint(conn), _subject(conn)
    )
    if status_ is None:
        return
    conn.state.rate_limit = status_
    if not status_.allowed:
        raise rate_limited(status_)


class RateLimit:
    """The dependency `rate_limit(tier)` returns; the gate recognises it on a route."""

    def __init__(self, tier: Tier) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown rate-limit tier {tier!r}; one of {', '.join(TIERS)}")
        self.tier = tier

    async def __call__(self, conn: HTTPConnection) -> None:
        await apply_tier(conn, self.tier)


def rate_limit(tier: Tier) -> Any:
    """Declare a route's tier: `dependencies=[rate_limit("strict")]` (default: standard)."""
    return Depends(RateLimit(tier))


async def public_route() -> None:
    """Marker: `dependencies=[Depends(public_route)]` makes a route answer without credentials."""


async def viewer_allowed() -> None:
    """Marker: `dependencies=[Depends(viewer_allowed)]` lets a viewer (read-only) call this
    route despite its unsafe method, because it only reads (a search sent as a POST) or acts on
    the caller alone (its logout, its own password, a WebSocket ticket)."""


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RoutePolicy:
    public: bool
    declares_tier: bool
    viewer_allowed: bool = False


_policies: weakref.WeakKeyDictionary[object, RoutePolicy] = weakref.WeakKeyDictionary()


def dependency_calls(dependant: Dependant) -> list[Any]:
    """Every dependency `dependant` calls, its sub-dependencies included."""
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(dependency_calls(sub))
    return found


def route_policy(route: object) -> RoutePolicy:
    """Whether `route` is public and whether it declares its own rate-limit tier."""
    try:
        return _policies[route]
    except (KeyError, TypeError):
        pass
    dependant = getattr(route, "dependant", None)
    calls = dependency_calls(dependant) if isinstance(dependant, Dependant) else []
    path = str(getattr(route, "path", ""))
    policy = RoutePolicy(
        public=public_route in calls or path.startswith(OPERATIONAL_PATH_PREFIXES),
        declares_tier=any(isinstance(call, RateLimit) for call in calls),
        viewer_allowed=viewer_allowed in calls,
    )
    try:
        _policies[route] = policy
    except TypeError:  # pragma: no cover - a route type without weak references
        pass
    return policy


async def security_gate(conn: HTTPConnection) -> None:
    """App-wide dependency: authenticate unless public; default tier unless one is declared;
    a viewer's unsafe request is refused (see `enforce_role`)."""
    policy = route_policy(conn.scope.get("route"))
    tier: Tier | None = None if policy.declares_tier else DEFAULT_TIER
    principal = None
    if not policy.public:
        try:
            principal = await current_principal(conn)
        except (AuthenticationError, WebSocketException):
            # Failed attempts count against the caller's address: guessing is throttled too.
            await apply_tier(conn, tier or "strict")
            raise
    if tier is not None:
        await apply_tier(conn, tier)
    if principal is not None:
        await enforce_role(conn, principal, policy)


async def enforce_role(conn: HTTPConnection, principal: Principal, policy: RoutePolicy) -> None:
    """A viewer reads only: an unsafe HTTP method is a 403 (audited) unless the route is
    marked `viewer_allowed`. The one place roles are enforced for every route, present and
    future."""
    if not principal.read_only or conn.scope["type"] != "http" or policy.viewer_allowed:
        return
    if conn.scope["method"] in SAFE_METHODS:
        return
    if policy.declares_tier:  # its own tier counts after the gate; count the refusal here
        await apply_tier(conn, "strict")
    await audit_denial(conn, principal, "read-only role", method=conn.scope["method"])
    raise PermissionDeniedError(
        "a viewer has read-only access",
        hint="ask an administrator for the member role (PUT /users/{id}/role)",
    )
