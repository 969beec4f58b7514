"""`ToolContext`: what a tool is told about the call it serves (who, where, which call)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gathering.db.database import Queries
from gathering.errors import ConfigurationError, FeatureUnavailableError


@dataclass(frozen=True)
class ToolContext:
    """Given to a tool that declares a parameter of this type (the model never sees it).

    `workspace` is the directory the tool's files live in (an agent's workspace); `call_id`
    names the call, unique within its turn; `deadline` (a `time.monotonic()` value) is when the
    caller stops waiting: a plain-function tool, which cannot be stopped, should not commit a
    change after it. `db` is GatheRing's own database (the agent's store), for the tools
    that work on the agent's memory and knowledge.
    """

    agent_id: int | None = None
    owner_id: int | None = None
    workspace: Path | None = None
    call_id: str | None = None
    deadline: float | None = None
    db: Queries | None = None

    def require_workspace(self) -> Path:
        """The workspace; `ConfigurationError` when the call was made without one."""
        if self.workspace is None:
            raise ConfigurationError(
                "this tool works on files, and the call has no workspace",
                hint="call it through an agent, or give ToolContext(workspace=...)",
            )
        return self.workspace

    def require_db(self) -> Queries:
        """GatheRing's database; `FeatureUnavailableError` when the call was made without it."""
        if self.db is None:
            raise FeatureUnavailableError(
                "this tool works on the agent's memory in GatheRing's database, and the call "
                "has no database",
                hint="call it through an agent stored in PostgreSQL (not InMemoryAgentStore), "
                "POST /tools/<name>/invoke, or give ToolContext(db=...)",
            )
        return self.db
