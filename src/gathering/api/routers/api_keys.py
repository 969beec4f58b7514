"""`/auth/api-keys`: service API keys (create, list, revoke).

A token login manages keys; an API key needs the scope `keys:read` to list them and
`keys:write` to revoke them, and never creates keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from gathering.api.deps import AccountsDep
from gathering.api.fields import Integer, WholeNumber, line
from gathering.api.security.dependencies import (
    audit_denial,
    ensure_owner,
    not_found,
    require_scope,
)
from gathering.api.security.origin import request_origin
from gathering.auth.accounts import Actor
from gathering.auth.api_keys import SCOPE_PATTERN
from gathering.auth.principal import Principal
from gathering.errors import PermissionDeniedError

# Key management needs a token login, or an API key with these scopes (`*` covers them).
KEYS_READ = "keys:read"
KEYS_WRITE = "keys:write"
KeysReader = Annotated[Principal, Depends(require_scope(KEYS_READ))]
KeysWriter = Annotated[Principal, Depends(require_scope(KEYS_WRITE))]

router = APIRouter(prefix="/auth", tags=["auth"])


class ApiKeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = line(100, examples=["nightly import"])
    scopes: list[Annotated[str, Field(max_length=81, pattern=SCOPE_PATTERN)]] = Field(
        min_length=1,
        max_length=32,
        examples=[["agents:read", "circles:*"]],
        description="`*`, `admin`, `resource:action`, `resource:*` or `*:action`",
    )
    expires_in_days: Integer | None = Field(default=None, ge=1, le=3650)


class ApiKeyResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedResponse(ApiKeyResponse):
    key: str = Field(description="The full key; shown only in this response")


@router.post(
    "/api-keys",
    summary="Create a service API key (the full key is shown once)",
    status_code=status.HTTP_201_CREATED,
)
async def create_api_key(
    body: ApiKeyCreateRequest,
    request: Request,
    principal: KeysWriter,
    auth: AccountsDep,
) -> ApiKeyCreatedResponse:
    if principal.method == "api_key":
        await audit_denial(request, principal, "API keys cannot create API keys")
        raise PermissionDeniedError("an API key cannot create API keys; log in as the user")
    if "admin" in body.scopes and not principal.is_admin:
        await audit_denial(request, principal, "admin scope requested")
        raise PermissionDeniedError("only administrators can grant the `admin` scope")
    created = await auth.accounts.create_api_key(
        actor_of(request, principal),
        principal.user_id,
        body.name,
        body.scopes,
        expires_in_days=body.expires_in_days,
    )
    return ApiKeyCreatedResponse(
        **ApiKeyResponse.model_validate(created.key).model_dump(), key=created.secret
    )


def actor_of(request: Request, principal: Principal) -> Actor:
    """The actor of a request (with its login session, which must still be open when the
    change commits)."""
    return Actor(
        principal.user_id, principal.email, request_origin(request), session=principal.family_id
    )


@router.get("/api-keys", summary="API keys (yours; an administrator sees every user's)")
async def list_api_keys(
    principal: KeysReader,
    auth: AccountsDep,
) -> list[ApiKeyResponse]:
    keys = await auth.api_keys.list_keys(principal.owner_filter)
    return [ApiKeyResponse.model_validate(key) for key in keys]


@router.delete(
    "/api-keys/{key_id}",
    summary="Revoke an API key",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def revoke_api_key(
    key_id: Annotated[WholeNumber, PathParam(ge=1, le=2**63 - 1)],
    request: Request,
    principal: KeysWriter,
    auth: AccountsDep,
) -> Response:
    key = await auth.api_keys.get(key_id)
    if key is None:
        raise not_found("API key", key_id)
    await ensure_owner(request, principal, key.user_id, resource="API key", resource_id=key_id)
    await auth.accounts.revoke_api_key(actor_of(request, principal), key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
