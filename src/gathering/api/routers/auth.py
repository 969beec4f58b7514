"""`/auth`: login, refresh rotation, logout, the caller and WebSocket tickets (API keys:
`api_keys.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field

from gathering.api.deps import AccountsDep, CurrentPrincipal, EventsReader
from gathering.api.security.dependencies import (
    public_route,
    rate_limit,
    security_state,
    viewer_allowed,
)
from gathering.api.security.origin import request_origin
from gathering.api.security.state import SecurityState
from gathering.auth.audit import AuditEvent
from gathering.auth.passwords import hash_password, needs_rehash, verify_password
from gathering.auth.sessions import RefreshTokenReused, TokenPair
from gathering.auth.tokens import TokenClaims, invalid_credentials
from gathering.auth.users import Role
from gathering.auth.ws_tickets import WS_TICKET_TTL
from gathering.db import Transaction
from gathering.errors import (
    AuthenticationError,
    PermissionDeniedError,
    RateLimitedError,
)

router = APIRouter(prefix="/auth", tags=["auth"])

LOGIN_FAILED = "invalid email or password"


class LoginRequest(BaseModel):
    email: str = Field(max_length=254, examples=["ada@example.com"])
    password: str = Field(max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=4096)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_in: int = Field(description="Seconds the access token lives")
    refresh_expires_in: int = Field(description="Seconds the refresh token lives")


class WsTicketResponse(BaseModel):
    ticket: str = Field(description="Open `/ws?ticket=<ticket>` (or send it in an `auth` frame)")
    expires_in: int = Field(description="Seconds the ticket stays valid; it works once")


class MeResponse(BaseModel):
    id: int
    email: str
    is_admin: bool
    role: Role = Field(description="`admin`, `member`, or `viewer` (read-only)")
    auth_method: str
    scopes: list[str]


class _AccountChanged(Exception):
    """The password or the state of an account changed while a login was being checked."""


class _AccountGone(Exception):
    """A refresh for an account deleted or disabled since the login."""

    def __init__(self, claims: TokenClaims) -> None:
        super().__init__("account gone")
        self.claims = claims


def _token_response(security: SecurityState, pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access.token,
        refresh_token=pair.refresh.token,
        expires_in=security.settings.access_token_ttl,
        refresh_expires_in=security.settings.refresh_token_ttl,
    )


@router.post(
    "/login",
    summary="Exchange email and password for an access and a refresh token",
    dependencies=[Depends(public_route), rate_limit("strict")],
    responses={401: {"description": "Wrong email or password"}, 429: {"description": "Throttled"}},
)
async def login(body: LoginRequest, request: Request, auth: AccountsDep) -> TokenResponse:
    security = security_state(request)
    origin = request_origin(request)
    email = body.email.strip().lower()
    ip = origin.ip or "unknown"
    limiter, audit = security.limiter(), auth.audit
    try:
        await security.login_throttle.attempt(limiter, email, ip)
    except RateLimitedError:
        await audit.record(AuditEvent.LOGIN_THROTTLED, "denied", origin=origin, subject=email)
        raise
    users = auth.users
    user = await users.find_by_email(email)
    verified = await verify_password(user.password_hash if user else None, body.password)
    if user is None or not verified or not user.can_log_in:
        await audit.record(
            AuditEvent.LOGIN,
            "failure",
            origin=origin,
            actor_id=user.id if user else None,
            subject=email,
            details={"reason": "unknown user" if user is None else "rejected"},
        )
        raise AuthenticationError(LOGIN_FAILED)
    await security.login_throttle.succeeded(limiter, email)
    verified_hash = user.password_hash
    rehashed = (
        await hash_password(body.password)
        if verified_hash and needs_rehash(verified_hash)
        else None
    )

    async def audited(tx: Transaction, pair: TokenPair) -> None:
        # The account, locked until the session commits (this transaction updates the row, so
        # a share lock would let two logins deadlock): a password reset or a disable that
        # committed since the check above refuses this login; one that comes later waits, then
        # ends this session with the others.
        current = await users.lock(user.id)
        if current is None or not current.can_log_in or current.password_hash != verified_hash:
            raise _AccountChanged
        if rehashed is not None and verified_hash is not None:
            await users.upgrade_password_hash(user.id, verified_hash, rehashed)
        await users.record_login(user.id)
        await audit.record(
            AuditEvent.LOGIN,
            "success",
            origin=origin,
            actor_id=user.id,
            subject=user.email,
            details={"family": pair.refresh.claims.family_id},
            on=tx,
        )

    try:
        pair = await auth.sessions.start(user.id, audit=audited)
    except _AccountChanged:
        await audit.record(
            AuditEvent.LOGIN,
            "failure",
            origin=origin,
            actor_id=user.id,
            subject=email,
            details={"reason": "account changed during login"},
        )
        raise AuthenticationError(LOGIN_FAILED) from None
    return _token_response(security, pair)


@router.post(
    "/refresh",
    summary="Spend a refresh token for a new pair (a refresh token works once)",
    dependencies=[Depends(public_route), rate_limit("strict")],
    responses={401: {"description": "Invalid, expired, revoked or already used"}},
)
async def refresh(body: RefreshRequest, request: Request, auth: AccountsDep) -> TokenResponse:
    security = security_state(request)
    origin, audit = request_origin(request), auth.audit
    sessions, users = auth.sessions, auth.users

    async def audited(tx: Transaction, pair: TokenPair) -> None:
        claims = pair.refresh.claims
        user = await users.get(claims.user_id)
        if user is None or not user.is_active:
            raise _AccountGone(claims)  # nothing is spent: the session is revoked below
        await audit.record(
            AuditEvent.REFRESH,
            "success",
            origin=origin,
            actor_id=user.id,
            subject=user.email,
            target_type="session",
            target_id=claims.family_id,
            on=tx,
        )

    try:
        _claims, pair = await sessions.rotate(body.refresh_token, audit=audited)
    except _AccountGone as gone:
        await sessions.revocations.revoke_family(gone.claims.family_id, "user disabled")
        await audit.record(
            AuditEvent.REFRESH, "failure", origin=origin, actor_id=gone.claims.user_id
        )
        raise invalid_credentials() from None
    except RefreshTokenReused as reuse:
        await audit.record(
            AuditEvent.TOKEN_REUSE,
            "denied",
            origin=origin,
            actor_id=reuse.claims.user_id,
            target_type="session",
            target_id=reuse.claims.family_id,
            details={"revoked": "family"},
        )
        raise invalid_credentials() from None
    except AuthenticationError:
        await audit.record(AuditEvent.REFRESH, "failure", origin=origin)
        raise
    return _token_response(security, pair)


@router.post(
    "/logout",
    summary="End this session: the access token and its refresh tokens stop working",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(viewer_allowed)],  # a viewer may log out
)
async def logout(request: Request, principal: CurrentPrincipal, auth: AccountsDep) -> Response:
    if (
        principal.method != "token"
        or principal.token_id is None
        or principal.family_id is None
        or principal.token_expires_at is None
    ):
        raise PermissionDeniedError(
            "logout ends a token session, and this request is signed with an API key",
            hint="revoke an API key with DELETE /auth/api-keys/{id}",
        )
    claims = TokenClaims(
        jti=principal.token_id,
        user_id=principal.user_id,
        token_type="access",  # noqa: S106 - a token kind
        family_id=principal.family_id,
        issued_at=0,
        expires_at=principal.token_expires_at,
    )
    audit, origin = auth.audit, request_origin(request)

    async def audited(tx: Transaction) -> None:
        await audit.record(
            AuditEvent.LOGOUT,
            "success",
            origin=origin,
            actor_id=principal.user_id,
            subject=principal.email,
            target_type="session",
            target_id=principal.family_id,
            on=tx,
        )

    await auth.sessions.end(claims, "logout", audit=audited)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", summary="Who this request acts as", dependencies=[rate_limit("relaxed")])
async def me(principal: CurrentPrincipal) -> MeResponse:
    return MeResponse(
        id=principal.user_id,
        email=principal.email,
        is_admin=principal.is_admin,
        role=principal.role,
        auth_method=principal.method,
        scopes=sorted(principal.scopes),
    )


@router.post(
    "/ws-ticket",
    summary=f"A one-time ticket that opens one WebSocket within {WS_TICKET_TTL} seconds",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Single-user mode: sockets need no ticket"}},
    dependencies=[Depends(viewer_allowed)],  # a viewer may subscribe (read-only)
)
async def ws_ticket(
    principal: EventsReader,
    auth: AccountsDep,
) -> WsTicketResponse:
    """For browsers, which cannot set headers on a WebSocket handshake: the ticket goes in the
    URL instead of the access token. It acts as this request's token or API key (an API key
    needs the scope `events:read`), with no more rights, and fails once that is revoked."""
    issued = await auth.ws_tickets.issue(principal)
    return WsTicketResponse(ticket=issued.ticket, expires_in=issued.expires_in)
