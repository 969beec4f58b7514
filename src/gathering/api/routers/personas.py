"""`/personas`: the personas library. Everyone reads it (the built-ins and every stored
persona); any user stores their own; its owner or an admin changes or deletes a stored one;
the built-ins are read-only (409: copy one under a new name). `POST /agents` with
`persona_name` makes an agent with a copy of a library persona."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from gathering.api.deps import DbDep
from gathering.api.fields import NO_NUL_PATTERN
from gathering.api.security import rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.catalog.personas import (
    MAX_DESCRIPTION_CHARS,
    PERSONA_NAME_PATTERN,
    Editor,
    LibraryPersona,
    Persona,
    create_persona,
    delete_persona,
    get_persona,
    list_personas,
    update_persona,
)

router = APIRouter(prefix="/personas", tags=["personas"])
PersonasReader = Annotated[Principal, Depends(require_scope("personas:read"))]
PersonasWriter = Annotated[Principal, Depends(require_scope("personas:write"))]

NameField = Field(
    min_length=1,
    max_length=63,
    pattern=PERSONA_NAME_PATTERN,
    description="Lower-case letters, digits, - and _, starting with a letter",
)
PersonaName = Annotated[
    str,
    Path(min_length=1, max_length=63, pattern=PERSONA_NAME_PATTERN, description="Its name"),
]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS, pattern=NO_NUL_PATTERN)]


class PersonaCreate(BaseModel):
    """A new persona of the library, owned by the caller."""

    model_config = ConfigDict(extra="forbid")

    name: str = NameField
    description: Description = ""
    persona: Persona = Field(default_factory=Persona)


class PersonaUpdate(BaseModel):
    """What to change in a stored persona; what is left out stays, and so does its name (to
    rename one, store a copy under the new name and delete the old one)."""

    model_config = ConfigDict(extra="forbid")

    description: Description | None = None
    persona: Persona | None = None


class PersonaOut(BaseModel):
    """A persona of the library. A built-in one has no id and no owner and is read-only."""

    model_config = ConfigDict(from_attributes=True)

    id: int | None
    name: str
    description: str
    persona: Persona
    builtin: bool
    owner_id: int | None
    created_at: datetime | None
    updated_at: datetime | None


def _out(found: LibraryPersona) -> PersonaOut:
    return PersonaOut.model_validate(found)


def _editor(principal: Principal) -> Editor:
    return Editor(principal.user_id, is_admin=principal.is_admin)


_CONFLICT: dict[int | str, dict[str, str]] = {
    409: {"description": "The name is taken, or the persona is built in (read-only)"}
}


@router.get("", summary="List the personas library", dependencies=[rate_limit("relaxed")])
async def personas(_principal: PersonasReader, db: DbDep) -> list[PersonaOut]:
    return [_out(found) for found in await list_personas(db)]


@router.get("/{name}", summary="One persona", dependencies=[rate_limit("relaxed")])
async def persona(name: PersonaName, _principal: PersonasReader, db: DbDep) -> PersonaOut:
    return _out(await get_persona(db, name))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Store a persona",
    responses=_CONFLICT,
)
async def store_persona(body: PersonaCreate, principal: PersonasWriter, db: DbDep) -> PersonaOut:
    return _out(
        await create_persona(db, principal.user_id, body.name, body.persona, body.description)
    )


@router.patch("/{name}", summary="Change a stored persona", responses=_CONFLICT)
async def change_persona(
    name: PersonaName, body: PersonaUpdate, principal: PersonasWriter, db: DbDep
) -> PersonaOut:
    changed = await update_persona(
        db,
        name,
        _editor(principal),
        description=body.description,
        persona=body.persona,
    )
    return _out(changed)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a stored persona (agents made from it keep their copy)",
    responses=_CONFLICT,
)
async def remove_persona(name: PersonaName, principal: PersonasWriter, db: DbDep) -> Response:
    await delete_persona(db, name, _editor(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
