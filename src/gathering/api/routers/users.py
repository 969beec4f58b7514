"""`/users`: user administration for administrators, and a user's own password.

Multi-user mode only (single-user mode has no accounts: 409). Every change is audited in the
transaction that makes it. The built-in local owner is not an account here: it is never listed
and every route answers 404 for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import AccountsDep, AdminPrincipal, CurrentPrincipal
from gathering.api.fields import NO_NUL_PATTERN, WholeNumber
from gathering.api.routers.api_keys import KEYS_READ, KEYS_WRITE, ApiKeyResponse, actor_of
from gathering.api.security.dependencies import (
    audit_denial,
    not_found,
    rate_limit,
    require_scope,
    security_state,
    viewer_allowed,
)
from gathering.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from gathering.auth.sessions import user_sessions
from gathering.auth.users import EMAIL_PATTERN, MAX_EMAIL_LENGTH, Role
from gathering.errors import PermissionDeniedError

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[WholeNumber, PathParam(ge=1, le=2**63 - 1)]
SessionId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
NewPassword = Annotated[
    str,
    Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH, pattern=NO_NUL_PATTERN),
]


class UserCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(
        min_length=3,
        max_length=MAX_EMAIL_LENGTH,
        pattern=EMAIL_PATTERN,
        examples=["ada@example.com"],
    )
    password: NewPassword
    role: Role = "member"


class RoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="`admin`, `member`, or `viewer` (read-only)")


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: NewPassword


class PasswordChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    new_password: NewPassword


class UserResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UserChangeResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user: UserResponse
    sessions_revoked: int = Field(description="Login sessions this change ended")
    api_keys_revoked: int = Field(description="API keys this change revoked")


class PasswordChangedResponse(BaseModel):
    sessions_revoked: int = Field(description="Your other login sessions, now ended")


class SessionResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    expires_at: datetime
    last_refreshed_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str | None


# --- the caller's own account (declared before /{user_id}, which would take "me") -------------


@router.post(
    "/me/password",
    summary="Change your own password; your other sessions end (this one goes on)",
    dependencies=[rate_limit("strict"), Depends(viewer_allowed)],
    responses={
        403: {"description": "The current password is wrong, or the caller is no token login"}
    },
)
async def change_own_password(
    body: PasswordChangeRequest,
    request: Request,
    principal: CurrentPrincipal,
    auth: AccountsDep,
) -> PasswordChangedResponse:
    if principal.method != "token" or principal.family_id is None:
        await audit_denial(request, principal, "password change without a token login")
        raise PermissionDeniedError(
            "changing a password needs a token login", hint="log in with POST /auth/login"
        )
    # The current password is a guess like a login's: counted at the login rate, for this user
    # alone, failing closed when it cannot be counted.
    security, actor = security_state(request), actor_of(request, principal)
    limiter = security.limiter()
    await security.login_throttle.password_check(limiter, principal.user_id)
    change = await auth.accounts.change_own_password(
        actor, body.current_password, body.new_password, keep_family=principal.family_id
    )
    await security.login_throttle.password_check_succeeded(limiter, principal.user_id)
    return PasswordChangedResponse(sessions_revoked=change.sessions_revoked)


# --- administration -------------------------------------------------------------------------


@router.get("", summary="Every account (administrators only)")
async def list_users(
    _admin: AdminPrincipal,
    auth: AccountsDep,
) -> list[UserResponse]:
    return [UserResponse.model_validate(user) for user in await auth.users.list_users()]


@router.post(
    "",
    summary="Create an account (administrators only)",
    status_code=status.HTTP_201_CREATED,
    dependencies=[rate_limit("strict")],
)
async def create_user(
    body: UserCreateRequest,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserResponse:
    user = await auth.accounts.create_user(
        actor_of(request, admin), body.email, body.password, body.role
    )
    return UserResponse.model_validate(user)


@router.get("/{user_id:id}", summary="One account (administrators only)")
async def get_user(
    user_id: UserId,
    _admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserResponse:
    return UserResponse.model_validate(await auth.accounts.get_user(user_id))


@router.post(
    "/{user_id:id}/disable",
    summary="Disable an account: its sessions end and its API keys are revoked",
    responses={409: {"description": "The last active administrator"}},
)
async def disable_user(
    user_id: UserId,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserChangeResponse:
    change = await auth.accounts.set_active(actor_of(request, admin), user_id, active=False)
    return UserChangeResponse.model_validate(change)


@router.post("/{user_id:id}/enable", summary="Enable a disabled account (administrators only)")
async def enable_user(
    user_id: UserId,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserChangeResponse:
    change = await auth.accounts.set_active(actor_of(request, admin), user_id, active=True)
    return UserChangeResponse.model_validate(change)


@router.put(
    "/{user_id:id}/role",
    summary="Set an account's role; it applies to the account's next request",
    responses={409: {"description": "The last active administrator"}},
)
async def set_role(
    user_id: UserId,
    body: RoleRequest,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserChangeResponse:
    change = await auth.accounts.set_role(actor_of(request, admin), user_id, body.role)
    return UserChangeResponse.model_validate(change)


@router.post(
    "/{user_id:id}/password",
    summary="Reset an account's password: its sessions end and its API keys are revoked",
    dependencies=[rate_limit("strict")],
)
async def reset_password(
    user_id: UserId,
    body: PasswordResetRequest,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> UserChangeResponse:
    change = await auth.accounts.reset_password(actor_of(request, admin), user_id, body.password)
    return UserChangeResponse.model_validate(change)


@router.get("/{user_id:id}/sessions", summary="An account's login sessions (administrators only)")
async def list_sessions(
    user_id: UserId,
    _admin: AdminPrincipal,
    auth: AccountsDep,
    ended: Annotated[bool, Query(description="Include revoked and expired sessions")] = False,
) -> list[SessionResponse]:
    user = await auth.accounts.get_user(user_id)
    sessions = await user_sessions(auth.db, user.id, ended=ended)
    return [SessionResponse.model_validate(session) for session in sessions]


@router.delete(
    "/{user_id:id}/sessions/{session_id}",
    summary="End one login session of an account (administrators only)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def revoke_session(
    user_id: UserId,
    session_id: SessionId,
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> Response:
    await auth.accounts.revoke_session(actor_of(request, admin), user_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id:id}/api-keys",
    summary="An account's API keys (administrators only)",
    # An admin's API key also needs the key scopes, as on /auth/api-keys.
    dependencies=[Depends(require_scope(KEYS_READ))],
)
async def list_user_api_keys(
    user_id: UserId,
    _admin: AdminPrincipal,
    auth: AccountsDep,
) -> list[ApiKeyResponse]:
    user = await auth.accounts.get_user(user_id)
    keys = await auth.api_keys.list_keys(user.id)
    return [ApiKeyResponse.model_validate(key) for key in keys]


@router.delete(
    "/{user_id:id}/api-keys/{key_id}",
    summary="Revoke an API key of an account (administrators only)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(require_scope(KEYS_WRITE))],
)
async def revoke_user_api_key(
    user_id: UserId,
    key_id: Annotated[WholeNumber, PathParam(ge=1, le=2**63 - 1)],
    request: Request,
    admin: AdminPrincipal,
    auth: AccountsDep,
) -> Response:
    accounts_admin = auth.accounts
    user = await accounts_admin.get_user(user_id)
    key = await auth.api_keys.get(key_id)
    if key is None or key.user_id != user.id:
        raise not_found("API key", key_id)
    await accounts_admin.revoke_api_key(actor_of(request, admin), key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
