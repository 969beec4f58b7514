"""`/auth`: login, refresh rotation, logout and the caller (API keys: `api_keys.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import AfterValidator, BaseModel, Field

from gathering.api.security.dependencies import (
    current_principal,
    public_route,
    rate_limit,
    security_state,
)
from gathering.api.security.origin import request_origin
from gathering.api.security.state import SecurityState
from gathering.auth.audit import AuditEvent
from gathering.auth.passwords import needs_rehash, verify_password
from gathering.auth.principal import Principal
from gathering.auth.sessions import RefreshTokenReused, TokenPair
from gathering.auth.tokens import TokenClaims, invalid_credentials
from gathering.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    RateLimitedError,
)

router = APIRouter(prefix="/auth", tags=["auth"])

LOGIN_FAILED = "invalid email or password"


def _printable(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("control characters are not allowed")
    return value


PlainText = Annotated[str, AfterValidator(_printable)]


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


class MeResponse(BaseModel):
    id: int
    email: str
    is_admin: bool
    auth_method: str
    scopes: list[str]


def accounts(request: Request) -> SecurityState:
    """The security state, or a 409 in single-user mode (it has no accounts)."""
    security = security_state(request)
    if not security.settings.auth_required:
        raise ConflictError(
            "single-user mode has no accounts or tokens: every request already acts as you",
            hint="set GATHERING_AUTH=required to use logins and API keys",
        )
    return security


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
async def login(body: LoginRequest, request: Request) -> TokenResponse:
    security = accounts(request)
    origin = request_origin(request)
    email = body.email.strip().lower()
    ip = origin.ip or "unknown"
    limiter, audit = security.limiter(), await security.audit()
    try:
        await security.login_throttle.attempt(limiter, email, ip)
    except RateLimitedError:
        await audit.record(AuditEvent.LOGIN_THROTTLED, "denied", origin=origin, subject=email)
        raise
    users = await security.users()
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
    if user.password_hash and needs_rehash(user.password_hash):
        await users.set_password(user.id, body.password)
    await users.record_login(user.id)
    pair = await (await security.sessions()).start(user.id)
    await audit.record(
        AuditEvent.LOGIN,
        "success",
        origin=origin,
        actor_id=user.id,
        subject=user.email,
        details={"family": pair.refresh.claims.family_id},
    )
    return _token_response(security, pair)


@router.post(
    "/refresh",
    summary="Spend a refresh token for a new pair (a refresh token works once)",
    dependencies=[Depends(public_route), rate_limit("strict")],
    responses={401: {"description": "Invalid, expired, revoked or already used"}},
)
async def refresh(body: RefreshRequest, request: Request) -> TokenResponse:
    security = accounts(request)
    origin, audit = request_origin(request), await security.audit()
    sessions = await security.sessions()
    try:
        claims, pair = await sessions.rotate(body.refresh_token)
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
    user = await (await security.users()).get(claims.user_id)
    if user is None or not user.is_active:
        await sessions.revocations.revoke_family(claims.family_id, "user disabled")
        await audit.record(AuditEvent.REFRESH, "failure", origin=origin, actor_id=claims.user_id)
        raise invalid_credentials()
    await audit.record(
        AuditEvent.REFRESH,
        "success",
        origin=origin,
        actor_id=user.id,
        subject=user.email,
        target_type="session",
        target_id=claims.family_id,
    )
    return _token_response(security, pair)


@router.post(
    "/logout",
    summary="End this session: the access token and its refresh tokens stop working",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def logout(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    security = accounts(request)
    if (
        principal.method != "token"
        or principal.token_id is None
        or principal.family_id is None
        or principal.token_expires_at is None
    ):
        raise InvalidInputError(
            "logout ends a token session", hint="revoke an API key with DELETE /auth/api-keys/{id}"
        )
    claims = TokenClaims(
        jti=principal.token_id,
        user_id=principal.user_id,
        token_type="access",  # noqa: S106 - a token kind
        family_id=principal.family_id,
        issued_at=0,
        expires_at=principal.token_expires_at,
    )
    await (await security.sessions()).end(claims, "logout")
    await (await security.audit()).record(
        AuditEvent.LOGOUT,
        "success",
        origin=request_origin(request),
        actor_id=principal.user_id,
        subject=principal.email,
        target_type="session",
        target_id=principal.family_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", summary="Who this request acts as", dependencies=[rate_limit("relaxed")])
async def me(principal: Principal = Depends(current_principal)) -> MeResponse:
    return MeResponse(
        id=principal.user_id,
        email=principal.email,
        is_admin=principal.is_admin,
        auth_method=principal.method,
        scopes=sorted(principal.scopes),
    )
