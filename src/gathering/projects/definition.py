"""What people say about projects: a new project (made, cloned or registered), a change of one,
its settings, and its members' permissions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gathering.db.fields import MAX_ID, Flag, Whole

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NO_NUL = r"^[^\x00]*$"  # PostgreSQL's text holds no NUL
LINE = r"^[^\x00-\x1f\x7f]*$"  # one line: no control characters
ABSOLUTE_LINE = r"^/[^\x00-\x1f\x7f]*$"  # an absolute path, on one line
MAX_TEXT = 20_000
MAX_COMMAND = 1_000
MAX_SOURCE = 2_000
PERMISSIONS = ("read", "write", "terminal")

Permission = Literal["read", "write", "terminal"]
Command = Annotated[str, Field(min_length=1, max_length=MAX_COMMAND, pattern=LINE)]


def read_only() -> list[Permission]:
    """The permissions a member gets when none are named."""
    return ["read"]


class ProjectCommands(BaseModel):
    """The project's own commands, as a person would type them in its directory."""

    model_config = ConfigDict(extra="forbid")

    test: Command | None = None
    lint: Command | None = None
    run: Command | None = None


class ProjectSettings(BaseModel):
    """How a project is worked on. Every field has a default; a change replaces the whole."""

    model_config = ConfigDict(extra="forbid")

    commands: ProjectCommands = Field(default_factory=ProjectCommands)
    conventions: str = Field(
        default="", max_length=MAX_TEXT, pattern=NO_NUL, description="How code is written here"
    )
    notes: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    allow_network: Flag = Field(
        default=False, description="Whether the project's terminal may reach the network"
    )
    context_budget: Whole = Field(
        default=6_000,
        ge=500,
        le=50_000,
        description="Characters of context text (README summary, conventions, file tree) that "
        "linked agents get in their prompt",
    )


class ProjectIn(BaseModel):
    """A new project: an empty directory (the default), a clone of `clone_from` (a git URL on
    the allow-list), or (admins only) an existing `directory` under an allowed root."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"not": {"required": ["clone_from", "directory"]}},  # one origin
    )

    name: str = Field(pattern=NAME_PATTERN, description="Lower-case letters, digits, - and _")
    description: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    settings: ProjectSettings = Field(default_factory=ProjectSettings)
    clone_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SOURCE,
        pattern=LINE,
        description="A git URL on the server's allow-list (GATHERING_PROJECT_CLONE_ALLOWED)",
    )
    directory: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SOURCE,
        pattern=ABSOLUTE_LINE,
        description="Admins: an existing directory under an allowed root "
        "(GATHERING_PROJECT_REGISTER_ROOTS), registered as it is",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> ProjectIn:
        if self.clone_from is not None and self.directory is not None:
            raise ValueError("give clone_from or directory, not both")
        return self


class ProjectChange(BaseModel):
    """A change of a project: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=MAX_TEXT, pattern=NO_NUL)
    settings: ProjectSettings | None = None


class ProjectMemberIn(BaseModel):
    """A person who may work on the project, and how: `read` is always part of it."""

    model_config = ConfigDict(extra="forbid")

    user_id: Whole = Field(ge=1, le=MAX_ID)
    permissions: list[Permission] = Field(default_factory=read_only, min_length=1, max_length=3)

    @model_validator(mode="after")
    def _with_read(self) -> ProjectMemberIn:
        self.permissions = [p for p in PERMISSIONS if p in {"read", *self.permissions}]
        return self
