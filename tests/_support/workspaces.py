"""The workspace folder of an agent the test made over HTTP."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from gathering.tools.agent_tools import agent_workspace


async def workspace_of(api: httpx.AsyncClient, agent_id: int, **request: object) -> Path:
    """The agent's workspace folder, named by its id and creation time (from GET /agents)."""
    created = (await api.get(f"/agents/{agent_id}", **request)).json()["created_at"]  # type: ignore[arg-type]
    return agent_workspace(agent_id, datetime.fromisoformat(created))
