"""Personas: who an agent is, rendered as the first section of its system prompt; and the
personas library (migration 0026): built-in personas shipped with the code, read-only, listed
with those people stored. An agent made from a library persona gets a copy of it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gathering.catalog.builtin_personas import BUILTIN_PERSONA_FIELDS
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)

# PostgreSQL cannot store a NUL character in text or JSON.
NO_NUL = r"^[^\x00]*$"
Item = Annotated[str, Field(pattern=NO_NUL)]
# A library persona's name: lower case, starting with a letter (so it is never taken for an id).
PERSONA_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
_PERSONA_NAME = re.compile(PERSONA_NAME_PATTERN)
MAX_DESCRIPTION_CHARS = 2000
MAX_LIBRARY_PERSONAS = 1000  # listed at most, built-ins first

SQL = queries_of("gathering.catalog")


class Persona(BaseModel):
    """An agent's identity: role, traits, style, specializations, base prompt and language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(default="", max_length=200, pattern=NO_NUL)
    traits: tuple[Item, ...] = Field(default=(), max_length=20)
    communication_style: str = Field(default="", max_length=500, pattern=NO_NUL)
    specializations: tuple[Item, ...] = Field(default=(), max_length=30)
    base_prompt: str = Field(default="", max_length=20_000, pattern=NO_NUL)
    language: str = Field(default="en", min_length=2, max_length=35, pattern=NO_NUL)

    @field_validator("traits", "specializations", mode="before")
    @classmethod
    def _strip_items(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(item.strip() for item in value if item.strip())
        return value  # anything else: pydantic refuses it as not a list of strings

    @classmethod
    def from_value(cls, value: Persona | Mapping[str, Any] | None) -> Persona:
        """A persona from a `Persona`, a dict (e.g. JSON config) or None (the empty one)."""
        if value is None:
            return cls()
        if isinstance(value, Persona):
            return value
        return cls.model_validate(dict(value))

    def render(self, agent_name: str) -> str:
        """The persona section of the system prompt."""
        lines = [f"You are {agent_name}" + (f", {self.role}." if self.role else ".")]
        if self.traits:
            lines.append(f"Traits: {', '.join(self.traits)}.")
        if self.specializations:
            lines.append(f"Specializations: {', '.join(self.specializations)}.")
        if self.communication_style:
            lines.append(f"Communication style: {self.communication_style}")
        if self.language and self.language.lower() not in ("en", "english"):
            lines.append(f"Always answer in this language: {self.language}.")
        if self.base_prompt:
            lines.append(self.base_prompt.strip())
        return "\n".join(lines)


@dataclass(frozen=True)
class LibraryPersona:
    """A persona of the library: built in (no id, no owner, read-only) or stored."""

    name: str
    description: str
    persona: Persona
    builtin: bool = False
    id: int | None = None
    owner_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LibraryPersona:
        return cls(
            name=row["name"],
            description=row["description"],
            persona=Persona.from_value(row["persona"]),
            id=row["id"],
            owner_id=row["owner_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class Editor:
    """Who changes a stored persona: its owner may, an admin may change any."""

    user_id: int
    is_admin: bool = False


BUILTIN_PERSONAS: dict[str, LibraryPersona] = {
    name: LibraryPersona(
        name=name,
        description=fields["description"],
        persona=Persona.model_validate(fields["persona"]),
        builtin=True,
    )
    for name, fields in BUILTIN_PERSONA_FIELDS.items()
}


def builtin_persona(name: str) -> LibraryPersona | None:
    """The built-in persona called `name`, or None."""
    return BUILTIN_PERSONAS.get(name.strip().lower())


def _checked_name(name: str) -> str:
    """`name` in lower case, or `InvalidInputError` when it is not a persona name."""
    name = name.strip().lower()
    if not _PERSONA_NAME.match(name):
        raise InvalidInputError(
            f"{name[:100]!r} is not a persona name",
            hint="use 1 to 63 lower-case letters, digits, - or _, starting with a letter",
        )
    return name


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"a persona named {name!r} exists already",
        hint=f"choose another name, or change that persona (PATCH /personas/{name})",
    )


def _read_only(persona: LibraryPersona) -> ConflictError:
    return ConflictError(
        f"persona {persona.name!r} is built in and cannot be changed or deleted",
        hint=f"copy it under a new name (`gathering personas create NAME --from {persona.name}`"
        f", or POST /personas with its fields) and change the copy",
    )


async def list_personas(q: Queries) -> list[LibraryPersona]:
    """Every persona of the library: the built-ins first, then the stored ones by name."""
    rows = await q.fetch_all(SQL["personas"], MAX_LIBRARY_PERSONAS)
    return [*BUILTIN_PERSONAS.values(), *(LibraryPersona.from_row(row) for row in rows)]


async def get_persona(q: Queries, name: str) -> LibraryPersona:
    """The library persona called `name` (built in or stored); `NotFoundError` if none is."""
    builtin = builtin_persona(name)
    if builtin is not None:
        return builtin
    row = await q.fetch_one(SQL["persona_by_name"], name.strip().lower())
    if row is None:
        raise NotFoundError(
            f"no persona named {name[:100]!r}",
            hint="`gathering personas list` (GET /personas) shows the library",
        )
    return LibraryPersona.from_row(row)


async def create_persona(
    q: Queries, owner_id: int, name: str, persona: Persona, description: str = ""
) -> LibraryPersona:
    """Store a new persona owned by `owner_id`; `ConflictError` when the name is taken (by a
    built-in or a stored persona)."""
    name = _checked_name(name)
    if builtin_persona(name) is not None:
        raise _name_taken(name)
    row = await q.fetch_one(
        SQL["insert_persona"], name, description, Jsonb(persona.model_dump()), owner_id
    )
    if row is None:
        raise _name_taken(name)
    return LibraryPersona.from_row(row)


async def _editable(q: Queries, name: str, editor: Editor) -> LibraryPersona:
    found = await get_persona(q, name)
    if found.builtin:
        raise _read_only(found)
    if not editor.is_admin and found.owner_id != editor.user_id:
        raise PermissionDeniedError(
            f"persona {found.name!r} belongs to another user",
            hint="only its owner or an administrator may change it; copy it under a new name",
        )
    return found


async def update_persona(
    q: Queries,
    name: str,
    editor: Editor,
    *,
    description: str | None = None,
    persona: Persona | None = None,
) -> LibraryPersona:
    """Change a stored persona's description and/or persona (its owner, or an admin); what is
    None stays, and so does the name (copy it to rename it). Agents made from it keep their
    copy. `NotFoundError` when it was deleted meanwhile."""
    found = await _editable(q, name, editor)
    row = await q.fetch_one(
        SQL["update_persona"],
        found.id,
        found.description if description is None else description,
        Jsonb((persona or found.persona).model_dump()),
    )
    if row is None:
        raise NotFoundError(f"no persona named {found.name!r}", hint="it was just deleted")
    return LibraryPersona.from_row(row)


async def delete_persona(q: Queries, name: str, editor: Editor) -> LibraryPersona:
    """Delete a stored persona (its owner, or an admin). Agents made from it keep their copy."""
    found = await _editable(q, name, editor)
    await q.execute(SQL["delete_persona"], found.id)
    return found
