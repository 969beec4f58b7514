"""Personas: who an agent is, rendered as the first section of its system prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# PostgreSQL cannot store a NUL character in text or JSON.
NO_NUL = r"^[^\x00]*$"
Item = Annotated[str, Field(pattern=NO_NUL)]


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
