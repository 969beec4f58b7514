"""Cloning a project's repository (`clone_repository`, used by `POST /projects` with
`clone_from`), against real repositories made with the git binary: a clone from an allowed
local repository (path or file:// URL); refusals of what is not on the allow-list, of other
transports (ssh, git://, ext::, plain http, scp-like), of `..` and prefix tricks, of a source
inside the server's data; a failed, refused or timed-out clone leaves nothing behind; nothing
of the server's environment (templates, hooks, configuration) reaches the clone; and the
project made over HTTP, end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from git_env import person_git_env

from gathering.errors import (
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    ToolTimeoutError,
)
from gathering.tools.builtins.git import clone_repository

REFUSED = (InvalidInputError, PermissionDeniedError)


def plain_git(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**person_git_env(cwd), **env}
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def make_repository(path: Path) -> Path:
    """A repository at `path` with one commit on main (README.md)."""
    path.mkdir(parents=True)
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "README.md"),
        ("commit", "-q", "-m", "first"),
    ):
        if args[0] == "add":
            (path / "README.md").write_text("hello\n")
        done = plain_git(path, *args)
        assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """The allowed folder: sources/app (a repository) and sources/empty (a plain folder)."""
    folder = tmp_path / "sources"
    make_repository(folder / "app")
    (folder / "empty").mkdir()
    return folder


def exists(path: Path) -> bool:
    return os.path.lexists(path)


async def test_a_local_repository_on_the_allow_list_is_cloned(
    tmp_path: Path, sources: Path
) -> None:
    for number, url in enumerate([str(sources / "app"), f"file://{sources / 'app'}"]):
        target = tmp_path / "clones" / f"c{number}"
        await clone_repository(url, target, allowed=[str(sources)])
        assert await asyncio.to_thread((target / "README.md").read_text) == "hello\n"
        config = await asyncio.to_thread((target / ".git" / "config").read_text)
        assert f"url = {url}" in config
        hooks = target / ".git" / "hooks"
        assert not await asyncio.to_thread(exists, hooks)  # no template: no sample hooks
    exact = tmp_path / "clones" / "exact"
    await clone_repository(str(sources / "app"), exact, allowed=[str(sources / "app")])
    assert await asyncio.to_thread(exists, exact / "README.md")


@pytest.mark.parametrize(
    "url",
    [
        "ssh://example.com/{sources}/app",
        "git@example.com:{sources}/app",
        "example.com:{sources}/app",
        "git://example.com/{sources}/app",
        "http://example.com/{sources}/app",
        "ext::sh -c touch% {marker}",
        "ext::{sources}/app",
        "fd::17",
        "file://localhost{sources}/app",
        "relative/app",
        "./app",
        "{sources}/../elsewhere",
        "{sources}/app/../../elsewhere",
        "file://{sources}/../elsewhere",
        "{sources}/%2e%2e/elsewhere",
        "{sources}-evil/app",
        "{sources}evil",
        "-u{sources}/app",
        "--upload-pack=touch {marker}",
        "{sources}/app\n--upload-pack=touch {marker}",
        "{sources}/app with space",
        "https://example.com/org/app",
        "",
    ],
)
async def test_urls_off_the_list_or_of_other_kinds_are_refused(
    tmp_path: Path, sources: Path, url: str
) -> None:
    marker = tmp_path / "pwned"
    url = url.format(sources=sources, marker=marker)
    target = tmp_path / "clone"
    with pytest.raises(REFUSED):
        await clone_repository(url, target, allowed=[str(sources), "https://example.com/ok"])
    assert not await asyncio.to_thread(exists, target)
    assert not await asyncio.to_thread(exists, marker)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/ok/../other",
        "https://example.com/ok/%2e%2e/other",
        "https://example.com/ok/%252e%252e/other",
        "https://example.com/ok/.%2E/other",
        "https://example.com/ok%2f..%2fother",
        "https://example.com/ok/./x",
        "https://example.com/ok\\..\\other",
        "https://example.com/okay",
        "https://example.com.evil.net/ok/x",
        "https://example.com@evil.net/ok/x",
        "https://evil.net/example.com/ok/x",
        "https://example.com/ok/x?upload-pack=y",
        "https://example.com/ok/x#frag",
        "https://[::1/ok/x",
        "HTTPS://example.com/ok/x",
    ],
)
async def test_https_tricks_around_the_allowed_prefix_are_refused(tmp_path: Path, url: str) -> None:
    target = tmp_path / "clone"
    with pytest.raises(REFUSED):
        await clone_repository(url, target, allowed=["https://example.com/ok"])
    assert not await asyncio.to_thread(exists, target)


async def test_nothing_is_cloned_without_an_allow_list(tmp_path: Path, sources: Path) -> None:
    for allowed in ([], (), str(sources)):
        with pytest.raises(PermissionDeniedError, match="not enabled"):
            await clone_repository(str(sources / "app"), tmp_path / "c", allowed=allowed)  # type: ignore[arg-type]
    assert not await asyncio.to_thread(exists, tmp_path / "c")


async def test_a_source_inside_the_servers_data_is_refused_even_through_a_symlink(
    tmp_path: Path, sources: Path
) -> None:
    """A broad allow-list (here /tmp...) must not let a person clone another project's
    repository, or a workspace, from the server's own data."""
    data = tmp_path / "data"
    secret = await asyncio.to_thread(make_repository, data / "projects" / "theirs-1234")
    link = sources / "innocent"
    await asyncio.to_thread(link.symlink_to, secret)
    for url in (str(secret), str(link), f"file://{link}"):
        with pytest.raises(PermissionDeniedError, match="server's own data"):
            await clone_repository(url, tmp_path / "c", allowed=[str(tmp_path)], forbidden=[data])
    assert not await asyncio.to_thread(exists, tmp_path / "c")


async def test_a_failing_clone_leaves_nothing_behind(tmp_path: Path, sources: Path) -> None:
    for url in (str(sources / "empty"), str(sources / "missing"), f"file://{sources}/missing"):
        target = tmp_path / "clones" / "c"
        with pytest.raises(InvalidInputError, match="failed"):
            await clone_repository(url, target, allowed=[str(sources)])
        assert not await asyncio.to_thread(exists, target)


async def test_an_existing_target_is_refused_and_kept(tmp_path: Path, sources: Path) -> None:
    target = tmp_path / "mine"
    await asyncio.to_thread(target.mkdir)
    await asyncio.to_thread((target / "keep.txt").write_text, "mine\n")
    with pytest.raises(ConflictError, match="exists"):
        await clone_repository(str(sources / "app"), target, allowed=[str(sources)])
    assert await asyncio.to_thread((target / "keep.txt").read_text) == "mine\n"


async def test_a_clone_that_hangs_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    """A server that accepts the connection and never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/stalled.git"
    target = tmp_path / "clone"
    try:
        with pytest.raises(ToolTimeoutError):
            await clone_repository(url, target, allowed=[url], timeout=2)
        assert connections, "git never reached the stalling server"
        assert not await asyncio.to_thread(exists, target)
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_the_servers_environment_does_not_reach_the_clone(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template with a post-checkout hook, and a configuration of the server's environment,
    would run programs in a plain clone; the clone takes neither."""
    marker = tmp_path / "pwned"
    templates = tmp_path / "templates"
    hook = templates / "hooks" / "post-checkout"
    await asyncio.to_thread(hook.parent.mkdir, parents=True)
    await asyncio.to_thread(hook.write_text, f'#!/bin/sh\ntouch "{marker}"\n')
    await asyncio.to_thread(hook.chmod, 0o755)

    control = await asyncio.to_thread(
        plain_git,
        tmp_path,
        "clone",
        "-q",
        str(sources / "app"),
        str(tmp_path / "control"),
        GIT_TEMPLATE_DIR=str(templates),
    )
    assert control.returncode == 0 and await asyncio.to_thread(marker.exists), "not live"
    await asyncio.to_thread(marker.unlink)

    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(templates))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.hooksPath'='{hook.parent}'")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "global"))
    await asyncio.to_thread(
        (tmp_path / "global").write_text, f"[core]\n\thooksPath = {hook.parent}\n"
    )
    await clone_repository(str(sources / "app"), tmp_path / "clone", allowed=[str(sources)])
    assert await asyncio.to_thread((tmp_path / "clone" / "README.md").exists)
    assert not await asyncio.to_thread(marker.exists)


# --- POST /projects with clone_from ---------------------------------------------------------------


async def test_a_project_is_cloned_over_http_end_to_end(
    app_for: Callable[..., FastAPI], tmp_path: Path, sources: Path
) -> None:
    root = tmp_path / "projects"
    app = app_for(projects_root=root, project_clone_allowed=[str(sources)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        url = str(sources / "app")
        made = await client.post("/projects", json={"name": "cloned", "clone_from": url})
        assert made.status_code == 201, made.text
        project = made.json()
        assert project["origin"] == "cloned" and project["source"] == url
        directory = Path(project["directory"])
        assert directory.parent == await asyncio.to_thread(root.resolve)
        assert await asyncio.to_thread((directory / "README.md").read_text) == "hello\n"

        base = f"/projects/{project['id']}/git"
        status = (await client.get(f"{base}/status")).json()
        assert status["repository"] and status["branch"] == "main" and status["files"] == []
        assert status["upstream"] == "origin/main" and status["ahead"] == 0
        log = (await client.get(f"{base}/log")).json()
        assert [c["subject"] for c in log] == ["first"]

        for body, expect in (
            ({"name": "off-list", "clone_from": str(tmp_path / "elsewhere")}, 403),
            ({"name": "ssh", "clone_from": "ssh://example.com/x.git"}, 422),
            ({"name": "dots", "clone_from": f"{sources}/../elsewhere"}, 422),
            ({"name": "broken", "clone_from": str(sources / "empty")}, 422),
            ({"name": "missing", "clone_from": str(sources / "missing")}, 422),
        ):
            refused = await client.post("/projects", json=body)
            assert refused.status_code == expect, (body, refused.text)
        left = await asyncio.to_thread(lambda: sorted(p.name for p in root.iterdir()))
        assert left == [directory.name]  # a refused or failed clone leaves no folder
        names = [p["name"] for p in (await client.get("/projects")).json()]
        assert names == ["cloned"]

    closed = app_for(projects_root=root)  # the default: no clone allowed
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=closed), base_url="http://test"
    ) as client:
        refused = await client.post("/projects", json={"name": "nope", "clone_from": url})
        assert refused.status_code == 403 and "not enabled" in refused.json()["detail"]
