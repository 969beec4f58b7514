"""`/settings`: the run-time settings stored in PostgreSQL, for admins only. Each shows its value
(a secret's masked), where it comes from (environment, stored or default) and whether it can
be changed here (not when an environment variable sets it: the environment wins).
`PUT /settings/{name}` stores a value, `DELETE /settings/{name}/value` drops it (the setting
itself always exists). Every change is audited; it is in force on every instance from their
next read, without a restart."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from gathering.api.deps import AdminPrincipal, DbDep, app_state
from gathering.api.security import rate_limit
from gathering.api.security.origin import request_origin
from gathering.auth.accounts import Actor
from gathering.auth.principal import Principal
from gathering.catalog.settings import (
    SETTING_NAME_PATTERN,
    SettingValue,
    Source,
    get_setting,
    list_settings,
    reset_setting,
    store_setting,
)

router = APIRouter(prefix="/settings", tags=["settings"])
SettingName = Annotated[
    str,
    Path(min_length=1, max_length=63, pattern=SETTING_NAME_PATTERN, description="Its name"),
]


class SettingOut(BaseModel):
    """A setting as it stands."""

    name: str
    kind: Literal["string", "integer", "secret"]
    description: str
    secret: bool
    value: JsonValue = Field(description="The value in force (masked for a secret; null: unset)")
    source: Source = Field(description="environment (wins), stored, or default")
    changeable: bool = Field(description="False when an environment variable sets it")
    env_var: str = Field(description="The environment variable that overrides it")
    default: JsonValue
    updated_by: int | None = Field(description="The admin who stored the value")
    updated_at: datetime | None


class SettingChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: JsonValue = Field(description="A value of the setting's kind (a JSON string, number)")


def _out(current: SettingValue) -> SettingOut:
    spec = current.spec
    return SettingOut(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        secret=spec.secret,
        value=current.shown,
        source=current.source,
        changeable=current.changeable,
        env_var=spec.env_var,
        default=spec.default,
        updated_by=current.updated_by if current.source == "stored" else None,
        updated_at=current.updated_at if current.source == "stored" else None,
    )


def _editor(request: Request, admin: Principal) -> Actor:
    return Actor(admin.user_id, admin.email, request_origin(request))


_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "No such setting"},
    409: {"description": "An environment variable sets it (the environment wins)"},
}


@router.get("", summary="Every run-time setting", dependencies=[rate_limit("relaxed")])
async def settings(request: Request, _admin: AdminPrincipal, db: DbDep) -> list[SettingOut]:
    return [_out(s) for s in await list_settings(db, app_state(request).settings)]


@router.get(
    "/{name}", summary="One setting", responses=_ERRORS, dependencies=[rate_limit("relaxed")]
)
async def setting(
    request: Request, name: SettingName, _admin: AdminPrincipal, db: DbDep
) -> SettingOut:
    return _out(await get_setting(db, name, app_state(request).settings))


@router.put("/{name}", summary="Store a setting's value (audited)", responses=_ERRORS)
async def change_setting(
    request: Request, name: SettingName, body: SettingChange, admin: AdminPrincipal, db: DbDep
) -> SettingOut:
    changed = await store_setting(
        db, name, body.value, _editor(request, admin), settings=app_state(request).settings
    )
    return _out(changed)


@router.delete(
    "/{name}/value",
    summary="Drop the stored value: back to the default (audited)",
    responses=_ERRORS,
)
async def unset_setting(
    request: Request, name: SettingName, admin: AdminPrincipal, db: DbDep
) -> SettingOut:
    reset = await reset_setting(
        db, name, _editor(request, admin), settings=app_state(request).settings
    )
    return _out(reset)
