"""A project made over HTTP, and its directory on disk."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx


async def make_project(
    client: httpx.AsyncClient, name: str | None = None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], Path]:
    """A new project (POST /projects) and its directory."""
    body = {"name": name or f"p-{secrets.token_hex(4)}"}
    made = await client.post("/projects", json=body, headers=headers)
    assert made.status_code == 201, made.text
    project: dict[str, Any] = made.json()
    return project, Path(project["directory"])
