"""Registering an existing directory as a project (`POST /projects` with `directory`) in
multi-user mode: a member is refused (403, problem+json) whatever the directory, and nothing is
registered, so the directory stays free and untouched; an admin registering the same directory
succeeds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from task_api import client_for, login

KEY = "k" * 64


def _existing_directory(root: Path) -> Path:
    directory = root / "code" / "existing"
    (directory / "sub").mkdir(parents=True)
    (directory / "keep.txt").write_text("mine\n")
    return directory


def _listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


async def _project_rows(app: FastAPI) -> list[dict[str, object]]:
    db = await app.state.gathering.database()
    rows = await db.fetch_all("SELECT name, directory, origin FROM project.projects ORDER BY id")
    return [dict(row) for row in rows]


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    """An existing directory with files, below the allowed root tmp_path/code."""
    return _existing_directory(tmp_path)


@pytest.fixture
def app(app_for: Callable[..., FastAPI], existing: Path, tmp_path: Path) -> FastAPI:
    """Multi-user mode; directories may be registered below tmp_path/code."""
    return app_for(
        auth="required",
        secret_key=KEY,
        project_register_roots=[str(existing.parent)],
        projects_root=tmp_path / "projects",
    )


async def test_a_member_may_not_register_a_directory_and_an_admin_may(
    app: FastAPI, existing: Path, tmp_path: Path
) -> None:
    allowed = existing.parent
    before = await asyncio.to_thread(_listing, existing)
    async with client_for(app) as client:
        member = await login(app, client, "member")
        admin = await login(app, client, "admin")

        # Refused before the path is looked at: a member learns nothing of the server's disk
        # (a missing or outside directory gets the same answer as an existing one).
        for directory in (existing, existing / "sub", allowed / "missing", tmp_path):
            refused = await client.post(
                "/projects",
                json={"name": "mine", "directory": str(directory)},
                headers=member,
            )
            assert refused.status_code == 403, (directory, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["status"] == 403 and problem["code"] == "permission_denied"
            assert "admin" in problem["detail"] and problem.get("hint"), problem

        assert await _project_rows(app) == []
        assert (await client.get("/projects", headers=member)).json() == []
        assert (await client.get("/projects", headers=admin)).json() == []
        assert await asyncio.to_thread(_listing, existing) == before
        # The member may still make a project of that name the ordinary way.
        plain = await client.post("/projects", json={"name": "mine"}, headers=member)
        assert plain.status_code == 201, plain.text
        assert plain.json()["origin"] == "created"

        # The same directory is free for an admin (it would be 409 had it been taken).
        registered = await client.post(
            "/projects", json={"name": "existing", "directory": str(existing)}, headers=admin
        )
        assert registered.status_code == 201, registered.text
        project = registered.json()
        admin_id = (await client.get("/auth/me", headers=admin)).json()["id"]
        assert project["origin"] == "registered" and project["owner_id"] == admin_id
        assert project["directory"] == await asyncio.to_thread(os.path.realpath, existing)

    rows = await _project_rows(app)
    assert [(row["name"], row["origin"]) for row in rows] == [
        ("mine", "created"),
        ("existing", "registered"),
    ]
    assert await asyncio.to_thread(_listing, existing) == before
