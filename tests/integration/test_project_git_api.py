"""A project's git over HTTP, on real repositories made with the git binary (no mocks): a
directory that is not a repository (status says so, the rest is a 409, init makes one); the
whole local cycle (status, stage, unstage, diff, commit, log, file history, show, branches,
checkout of a branch, a commit and paths) with each change in the activity log; push to and
pull from a local bare repository on the allow-list (and refusals of one that is not, of a
push that is not a fast-forward); traversal and option attacks on every path and ref
parameter; who may read and who may change (a commit's author is the person who made it);
and the grammars the schema publishes, against the tool's own checks."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from git_env import person_git_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gathering.auth.users import UserStore
from gathering.errors import InvalidInputError, PermissionDeniedError
from gathering.projects.git import author_of
from gathering.tools.builtins import git as git_tool
from gathering.tools.workspace import resolve_in_workspace

Json = dict[str, Any]
PASSWORD = "correct horse battery staple"
KEY = "k" * 64


def plain_git(cwd: Path, *args: str) -> str:
    """git as a person would run it (an identity, no global configuration), for setting up."""
    env = person_git_env(cwd)
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def run_git(cwd: Path, *args: str) -> str:
    return await asyncio.to_thread(plain_git, cwd, *args)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def put(path: Path, text: str) -> None:
    await asyncio.to_thread(write, path, text)


async def read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare repository outside every project, on the allow-list of `api`."""
    path = tmp_path / "remote.git"
    plain_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(path))
    return path


@pytest.fixture
async def api(
    app_for: Callable[..., FastAPI], tmp_path: Path, bare: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Single-user mode; projects under tmp_path; `bare` on the remote allow-list."""
    app = app_for(projects_root=tmp_path / "projects", git_allowed_remotes=[str(bare)])
    async with client_for(app) as client:
        yield client


async def new_project(client: httpx.AsyncClient, name: str = "app", **request: Any) -> Json:
    made = await client.post("/projects", json={"name": name}, **request)
    assert made.status_code == 201, made.text
    project: Json = made.json()
    return project


async def posted(
    client: httpx.AsyncClient, path: str, body: Json | None = None, expect: int = 200, **more: Any
) -> Any:
    answer = await client.post(path, json=body, **more)
    assert answer.status_code == expect, (path, answer.text)
    return answer.json()


async def got(client: httpx.AsyncClient, path: str, expect: int = 200, **more: Any) -> Any:
    answer = await client.get(path, **more)
    assert answer.status_code == expect, (path, answer.text)
    return answer.json()


async def repository(client: httpx.AsyncClient, name: str = "app") -> tuple[str, Path]:
    """A new project made a repository over HTTP: its git URL prefix and its directory."""
    project = await new_project(client, name)
    base = f"/projects/{project['id']}/git"
    await posted(client, f"{base}/init", expect=201)
    return base, Path(project["directory"])


async def actions(client: httpx.AsyncClient, base: str, **more: Any) -> list[Json]:
    activity: list[Json] = await got(client, base.removesuffix("/git") + "/activity", **more)
    return [entry for entry in activity if entry["action"].startswith("git.")]


def states(status: Json) -> dict[str, tuple[str, str]]:
    return {f["path"]: (f["index"], f["worktree"]) for f in status["files"]}


# --- no repository, then one --------------------------------------------------------------------


async def test_a_directory_without_git_says_so_and_init_makes_one(api: httpx.AsyncClient) -> None:
    project = await new_project(api)
    base = f"/projects/{project['id']}/git"
    status = await got(api, f"{base}/status")
    assert status["repository"] is False and status["files"] == [] and status["branch"] is None

    for method, path, body in [
        ("GET", "diff", None),
        ("GET", "log", None),
        ("GET", "show", None),
        ("GET", "branches", None),
        ("POST", "stage", {"paths": ["."]}),
        ("POST", "unstage", {"paths": ["."]}),
        ("POST", "commit", {"message": "m"}),
        ("POST", "checkout", {"branch": "main"}),
        ("POST", "push", {}),
        ("POST", "pull", {}),
    ]:
        answer = await api.request(method, f"{base}/{path}", json=body)
        assert answer.status_code == 409, (path, answer.text)
        assert answer.json()["code"] == "no_repository" and "init" in answer.json()["hint"]

    made = await posted(api, f"{base}/init", {"branch": "trunk"}, expect=201)
    assert made["repository"] is True and made["branch"] == "trunk" and made["head"] is None
    directory = Path(project["directory"])
    assert await asyncio.to_thread((directory / ".git").is_dir)
    assert not await asyncio.to_thread((directory / ".git" / "hooks").exists)  # no template
    assert await got(api, f"{base}/log") == []  # no commit yet: an empty history

    again = await api.post(f"{base}/init")
    assert again.status_code == 409 and "already" in again.json()["detail"]
    assert [a["action"] for a in await actions(api, base)] == ["git.init"]
    assert (await actions(api, base))[0]["detail"] == {"branch": "trunk"}


async def test_init_refuses_a_git_file_or_symlink(api: httpx.AsyncClient, tmp_path: Path) -> None:
    """A .git file (gitdir: elsewhere) or symlink would make `git init` write elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    await run_git(tmp_path, "init", "-q", str(elsewhere))
    before = await read(elsewhere / ".git" / "config")
    for plant in ("file", "symlink"):
        project = await new_project(api, f"p-{plant}")
        git_path = Path(project["directory"]) / ".git"
        if plant == "file":
            await put(git_path, f"gitdir: {elsewhere / '.git'}\n")
        else:
            await asyncio.to_thread(git_path.symlink_to, elsewhere / ".git")
        base = f"/projects/{project['id']}/git"
        assert (await api.post(f"{base}/init")).status_code == 409
        refused = await api.get(f"{base}/status")
        assert refused.status_code in (403, 422), refused.text
    assert await read(elsewhere / ".git" / "config") == before


# --- the local cycle ----------------------------------------------------------------------------


async def test_stage_unstage_diff_commit_log_show(api: httpx.AsyncClient) -> None:
    base, directory = await repository(api)
    await put(directory / "README.md", "hello\n")
    await put(directory / "src" / "app.py", "print('hi')\n")

    status = await got(api, f"{base}/status")
    assert status["branch"] == "main" and status["head"] is None and not status["detached"]
    assert states(status) == {
        "README.md": ("untracked", "untracked"),
        "src/": ("untracked", "untracked"),
    }

    staged = await posted(api, f"{base}/stage", {"paths": ["README.md", "src/app.py"]})
    assert states(staged) == {
        "README.md": ("added", "unmodified"),
        "src/app.py": ("added", "unmodified"),
    }
    diff = await got(api, f"{base}/diff", params={"staged": "true"})
    assert "+hello" in diff["diff"] and "+print('hi')" in diff["diff"] and not diff["truncated"]
    assert (await got(api, f"{base}/diff"))["diff"] == ""

    unstaged = await posted(api, f"{base}/unstage", {"paths": ["src/app.py"]})  # no commit yet
    assert states(unstaged)["src/"] == ("untracked", "untracked")
    await posted(api, f"{base}/stage", {"paths": ["."]})

    first = await posted(api, f"{base}/commit", {"message": "First\n\nWith a body"}, expect=201)
    assert first["subject"] == "First" and first["body"] == "With a body"
    assert first["author_email"] == "local-owner@gathering.invalid"
    assert first["author_name"] == "Local Owner" and first["parents"] == []

    await put(directory / "README.md", "hello\nworld\n")
    status = await got(api, f"{base}/status")
    assert status["head"] == first["sha"] and states(status) == {
        "README.md": ("unmodified", "modified")
    }
    diff = await got(api, f"{base}/diff", params={"path": "README.md"})
    assert "+world" in diff["diff"]
    assert (await got(api, f"{base}/diff", params={"path": "src"}))["diff"] == ""
    against = await got(api, f"{base}/diff", params={"ref": first["sha"]})
    assert "+world" in against["diff"]

    await posted(api, f"{base}/stage", {"paths": ["README.md"]})
    assert "+world" in (await got(api, f"{base}/diff", params={"staged": "true"}))["diff"]
    await posted(api, f"{base}/unstage", {"paths": ["README.md"]})  # back to HEAD's
    assert states(await got(api, f"{base}/status"))["README.md"] == ("unmodified", "modified")

    await put(directory / "src" / "app.py", "print('bye')\n")
    second = await posted(
        api, f"{base}/commit", {"message": "Only the app", "paths": ["src/app.py"]}, expect=201
    )
    assert second["parents"] == [first["sha"]]
    assert states(await got(api, f"{base}/status")) == {"README.md": ("unmodified", "modified")}

    log = await got(api, f"{base}/log")
    assert [c["subject"] for c in log] == ["Only the app", "First"]
    assert [c["sha"] for c in await got(api, f"{base}/log", params={"max_count": 1})] == [
        second["sha"]
    ]
    history = await got(api, f"{base}/log", params={"path": "README.md"})
    assert [c["subject"] for c in history] == ["First"]
    ranged = await got(api, f"{base}/log", params={"ref": f"{first['sha']}..HEAD"})
    assert [c["subject"] for c in ranged] == ["Only the app"]

    shown = await got(api, f"{base}/show")
    assert shown["commit"]["sha"] == second["sha"] and "+print('bye')" in shown["diff"]
    old = await got(api, f"{base}/show", params={"ref": "HEAD~1", "path": "README.md"})
    assert old["commit"]["subject"] == "First" and "+hello" in old["diff"]
    assert "app.py" not in old["diff"]

    nothing = await api.post(f"{base}/commit", json={"message": "empty"})
    assert nothing.status_code == 409 and nothing.json()["code"] == "git_failed"
    assert "no changes added to commit" in nothing.json()["detail"]
    missing = await api.get(f"{base}/show", params={"ref": "no-such-branch"})
    assert missing.status_code == 409 and missing.json()["code"] == "git_failed"

    recorded = await actions(api, base)
    assert [a["action"] for a in recorded][:7] == [
        "git.commit",
        "git.unstage",
        "git.stage",
        "git.commit",
        "git.stage",
        "git.unstage",
        "git.stage",
    ]
    commit = recorded[0]
    assert commit["detail"]["commit"] == second["sha"] and commit["path"] == "src/app.py"
    assert commit["user_id"] is not None and commit["agent_id"] is None
    assert recorded[3]["detail"] == {"commit": first["sha"], "subject": "First"}


async def test_renames_are_reported_with_where_they_came_from(api: httpx.AsyncClient) -> None:
    base, directory = await repository(api)
    await put(directory / "old.txt", "same text\n" * 10)
    await posted(api, f"{base}/stage", {"paths": ["old.txt"]})
    await posted(api, f"{base}/commit", {"message": "old"}, expect=201)
    await asyncio.to_thread(os.rename, directory / "old.txt", directory / "new name.txt")
    status = await posted(api, f"{base}/stage", {"paths": ["old.txt", "new name.txt"]})
    [renamed] = status["files"]
    assert renamed == {
        "path": "new name.txt",
        "index": "renamed",
        "worktree": "unmodified",
        "original_path": "old.txt",
    }


async def test_branches_and_checkout(api: httpx.AsyncClient) -> None:
    base, directory = await repository(api)
    await put(directory / "a.txt", "one\n")
    await posted(api, f"{base}/stage", {"paths": ["a.txt"]})
    first = await posted(api, f"{base}/commit", {"message": "one"}, expect=201)

    created = await posted(api, f"{base}/checkout", {"branch": "feature/x", "create": True})
    assert created["branch"] == "feature/x"
    await put(directory / "a.txt", "two\n")
    await posted(api, f"{base}/stage", {"paths": ["a.txt"]})
    second = await posted(api, f"{base}/commit", {"message": "two"}, expect=201)

    branches = await got(api, f"{base}/branches")
    assert branches["current"] == "feature/x"
    listed = {b["name"]: b for b in branches["branches"]}
    assert set(listed) == {"main", "feature/x"}
    assert listed["feature/x"]["current"] and listed["feature/x"]["commit"] == second["sha"]
    assert listed["main"]["subject"] == "one" and not listed["main"]["remote"]

    assert (await posted(api, f"{base}/checkout", {"branch": "main"}))["branch"] == "main"
    assert await read(directory / "a.txt") == "one\n"
    started = await posted(api, f"{base}/checkout", {"branch": "from-x", "ref": "feature/x"})
    assert started["branch"] == "from-x" and started["head"] == second["sha"]

    detached = await posted(api, f"{base}/checkout", {"ref": first["sha"]})
    assert detached["detached"] is True and detached["branch"] is None
    assert (await got(api, f"{base}/branches"))["current"] is None
    await posted(api, f"{base}/checkout", {"branch": "main"})

    await put(directory / "a.txt", "scribbled\n")
    restored = await posted(api, f"{base}/checkout", {"paths": ["a.txt"]})
    assert restored["files"] == [] and await read(directory / "a.txt") == "one\n"
    from_x = await posted(api, f"{base}/checkout", {"paths": ["a.txt"], "ref": "feature/x"})
    assert states(from_x) == {"a.txt": ("modified", "unmodified")}
    assert await read(directory / "a.txt") == "two\n"

    taken = await api.post(f"{base}/checkout", json={"branch": "main", "create": True})
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    for mixed in (
        {"branch": "main", "paths": ["a.txt"]},
        {},
        {"create": True},
        {"ref": "HEAD", "staged": True},
    ):
        assert (await api.post(f"{base}/checkout", json=mixed)).status_code == 422, mixed

    recorded = await actions(api, base)
    checkouts = [a for a in recorded if a["action"] == "git.checkout"]
    assert checkouts[0]["detail"] == {"paths": ["a.txt"], "path_count": 1, "ref": "feature/x"}
    assert checkouts[0]["path"] == "a.txt"
    assert {"branch": "from-x", "create": True, "ref": "feature/x"} in [
        c["detail"] for c in checkouts
    ]


# --- remotes ------------------------------------------------------------------------------------


async def test_push_to_and_pull_from_a_local_bare_repository(
    api: httpx.AsyncClient, bare: Path, tmp_path: Path
) -> None:
    base, directory = await repository(api)
    await put(directory / "a.txt", "mine\n")
    await posted(api, f"{base}/stage", {"paths": ["a.txt"]})
    mine = await posted(api, f"{base}/commit", {"message": "mine"}, expect=201)
    await run_git(directory, "remote", "add", "origin", str(bare))

    pushed = await posted(api, f"{base}/push", {})
    assert pushed["status"]["head"] == mine["sha"]
    assert (await run_git(bare, "log", "--format=%H", "main")).split() == [mine["sha"]]

    other = tmp_path / "other"
    await run_git(tmp_path, "clone", "-q", str(bare), str(other))
    await put(other / "b.txt", "theirs\n")
    await run_git(other, "add", "b.txt")
    await run_git(other, "commit", "-q", "-m", "theirs")
    await run_git(other, "push", "-q", "origin", "main")

    pulled = await posted(api, f"{base}/pull", {"remote": "origin", "branch": "main"})
    assert await read(directory / "b.txt") == "theirs\n"
    log = await got(api, f"{base}/log")
    assert [c["subject"] for c in log] == ["theirs", "mine"]
    assert log[0]["author_email"] == "tester@example.com"
    assert pulled["status"]["head"] == log[0]["sha"]

    await posted(api, f"{base}/checkout", {"branch": "topic", "create": True})
    assert (await posted(api, f"{base}/push", {"branch": "topic"}))["output"]
    assert "topic" in await run_git(bare, "branch", "--list")
    await run_git(directory, "fetch", "-q", "origin")  # remote-tracking branches, listed
    listed = {b["name"]: b for b in (await got(api, f"{base}/branches"))["branches"]}
    assert listed["origin/topic"]["remote"] and listed["origin/main"]["commit"] == log[0]["sha"]

    recorded = await actions(api, base)
    assert [a["action"] for a in recorded][:4] == [
        "git.push",
        "git.checkout",
        "git.pull",
        "git.push",
    ]
    assert recorded[0]["detail"]["branch"] == "topic"
    assert recorded[2]["detail"] == {"remote": "origin", "branch": "main", "head": log[0]["sha"]}
    assert recorded[3]["detail"] == {"remote": "origin", "branch": "main", "head": mine["sha"]}


async def test_a_push_that_is_not_a_fast_forward_is_a_conflict(
    api: httpx.AsyncClient, bare: Path, tmp_path: Path
) -> None:
    base, directory = await repository(api)
    await run_git(directory, "remote", "add", "origin", str(bare))
    other = tmp_path / "other"
    await run_git(tmp_path, "init", "-q", "-b", "main", str(other))
    await put(other / "x.txt", "x\n")
    await run_git(other, "add", "x.txt")
    await run_git(other, "commit", "-q", "-m", "elsewhere")
    await run_git(other, "push", "-q", str(bare), "main")

    await put(directory / "y.txt", "y\n")
    await posted(api, f"{base}/stage", {"paths": ["y.txt"]})
    await posted(api, f"{base}/commit", {"message": "here"}, expect=201)
    refused = await api.post(f"{base}/push")
    assert refused.status_code == 409 and refused.json()["code"] == "git_failed"
    assert "rejected" in refused.json()["detail"]
    diverged = await api.post(f"{base}/pull", json={"branch": "main"})
    assert diverged.status_code == 409, diverged.text  # fast-forward only: no merge
    assert not any(a["action"] in ("git.push", "git.pull") for a in await actions(api, base))


async def test_remotes_off_the_allow_list_are_refused(
    app_for: Callable[..., FastAPI], api: httpx.AsyncClient, bare: Path, tmp_path: Path
) -> None:
    base, directory = await repository(api)
    await put(directory / "a.txt", "a\n")
    await posted(api, f"{base}/stage", {"paths": ["a.txt"]})
    await posted(api, f"{base}/commit", {"message": "a"}, expect=201)
    elsewhere = tmp_path / "elsewhere.git"
    await run_git(tmp_path, "init", "-q", "--bare", str(elsewhere))
    await run_git(directory, "remote", "add", "elsewhere", str(elsewhere))
    await run_git(directory, "remote", "add", "origin", str(bare))
    for command in ("push", "pull"):
        refused = await api.post(f"{base}/{command}", json={"remote": "elsewhere"})
        assert refused.status_code == 403, refused.text
        assert "not on the allow-list" in refused.json()["detail"]
    assert await run_git(elsewhere, "branch", "--list") == ""
    unknown = await api.post(f"{base}/push", json={"remote": "nowhere"})
    assert unknown.status_code == 409 and "not configured" in unknown.json()["detail"]

    closed = app_for(projects_root=tmp_path / "projects")  # no allow-list: nothing leaves
    async with client_for(closed) as client:
        for command in ("push", "pull"):
            answer = await client.post(f"{base}/{command}")
            assert answer.status_code == 403 and "allow-list" in answer.json()["detail"]
    assert await run_git(bare, "branch", "--list") == ""


# --- attacks ------------------------------------------------------------------------------------

BAD_PATHS = [
    "../outside.txt",
    "../../etc/passwd",
    "a/../../outside.txt",
    "/etc/passwd",
    "~/x",
    "%2e%2e/outside.txt",
    "%252e%252e/outside.txt",
    "\uff0e\uff0e/outside.txt",  # full-width dots
    "a\\..\\..\\outside.txt",
    "C:/x",
    "-x",
    "--output=/tmp/pwned",
    ".git/config",
    ".git",
    "sub/.GIT/hooks",
    "escape/secret.txt",
    "escape",
    "x" * 300,
]
BAD_REFS = [
    "--output=/tmp/pwned",
    "-x",
    "$(touch pwned)",
    "HEAD@{1}",
    "@{-1}",
    "HEAD:README.md",
    "main^{tree}",
    ":/first",
    "ext::sh -c touch% pwned",
    "a b",
    "x.lock",
    "..",
    "x" * 300,
]


@pytest.fixture
async def attacked(api: httpx.AsyncClient, tmp_path: Path) -> tuple[str, Path, Path]:
    """A repository with one commit, a symlink `escape` to a folder outside it, and that
    folder's `secret.txt` beside an `outside.txt`."""
    base, directory = await repository(api)
    outside = tmp_path / "outside"
    await put(outside / "secret.txt", "secret\n")
    await put(directory / "README.md", "hello\n")
    await asyncio.to_thread((directory / "escape").symlink_to, outside)
    await posted(api, f"{base}/stage", {"paths": ["README.md"]})
    await posted(api, f"{base}/commit", {"message": "first"}, expect=201)
    return base, directory, outside


async def test_traversal_on_every_path_parameter_is_refused(
    api: httpx.AsyncClient, attacked: tuple[str, Path, Path]
) -> None:
    base, directory, outside = attacked
    before = await run_git(directory, "ls-files", "--stage")
    for path in [*BAD_PATHS, "nul\0byte"]:
        for route, body in (
            ("stage", {"paths": [path]}),
            ("unstage", {"paths": [path]}),
            ("commit", {"message": "m", "paths": [path]}),
            ("checkout", {"paths": [path]}),
            ("checkout", {"paths": [path], "ref": "HEAD"}),
            ("stage", {"paths": ["README.md", path]}),
        ):
            answer = await api.post(f"{base}/{route}", json=body)
            assert answer.status_code in (403, 422), (route, path, answer.text)
        for route in ("diff", "log", "show"):
            answer = await api.get(f"{base}/{route}", params={"path": path})
            assert answer.status_code in (400, 403, 422), (route, path, answer.text)
    assert await run_git(directory, "ls-files", "--stage") == before
    assert await read(outside / "secret.txt") == "secret\n"
    assert len(await got(api, f"{base}/log")) == 1
    assert [a["action"] for a in await actions(api, base)][:2] == ["git.commit", "git.stage"]


async def test_option_and_revision_tricks_are_refused(
    api: httpx.AsyncClient, attacked: tuple[str, Path, Path], tmp_path: Path
) -> None:
    base, directory, _ = attacked
    for ref in BAD_REFS:
        for route, params in (
            ("diff", {"ref": ref}),
            ("log", {"ref": ref}),
            ("log", {"ref": f"HEAD..{ref}"}),
            ("show", {"ref": ref}),
        ):
            answer = await api.get(f"{base}/{route}", params=params)
            assert answer.status_code == 422, (route, ref, answer.text)
        for body in (
            {"branch": ref},
            {"branch": "ok", "ref": ref},
            {"ref": ref},
            {"paths": ["README.md"], "ref": ref},
        ):
            answer = await api.post(f"{base}/checkout", json=body)
            assert answer.status_code == 422, (body, answer.text)
        known = 409 if re.fullmatch(git_tool.REMOTE_PATTERN, ref) else 422  # no such remote
        for route in ("push", "pull"):
            for body, expect in (({"remote": ref}, known), ({"branch": ref}, 422)):
                answer = await api.post(f"{base}/{route}", json=body)
                assert answer.status_code == expect, (route, body, answer.text)
        assert (await api.post(f"{base}/init", json={"branch": ref})).status_code == 422
    assert (await got(api, f"{base}/status"))["branch"] == "main"
    assert await run_git(directory, "branch", "--list") == "* main\n"
    assert not await asyncio.to_thread((tmp_path / "pwned").exists)
    assert not await asyncio.to_thread(os.path.exists, "/tmp/pwned")


async def test_planted_configuration_is_refused_not_run(
    api: httpx.AsyncClient, attacked: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """Someone with the terminal (or an agent) writes .git/config: the API refuses to run git
    under a configuration that would run programs."""
    base, directory, _ = attacked
    marker = tmp_path / "pwned"
    script = tmp_path / "evil.sh"
    await put(script, f'#!/bin/sh\ntouch "{marker}"\n')
    await asyncio.to_thread(script.chmod, 0o755)
    config = directory / ".git" / "config"
    await put(config, await read(config) + f"[core]\n\tfsmonitor = {script}\n")
    for method, route in (("GET", "status"), ("GET", "diff"), ("POST", "stage")):
        body = {"paths": ["README.md"]} if method == "POST" else None
        answer = await api.request(method, f"{base}/{route}", json=body)
        assert answer.status_code == 403 and "core.fsmonitor" in answer.json()["detail"]
    assert not await asyncio.to_thread(marker.exists)


# --- who may do what ----------------------------------------------------------------------------


@pytest.fixture
async def multi(
    app_for: Callable[..., FastAPI], tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = app_for(auth="required", secret_key=KEY, projects_root=tmp_path / "projects")
    async with client_for(app) as client:
        yield app, client


async def person(app: FastAPI, client: httpx.AsyncClient, email: str) -> tuple[int, Json]:
    user = await UserStore(await app.state.gathering.database()).create(email, PASSWORD)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return user.id, {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_readers_read_writers_commit_as_themselves(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    tag = secrets.token_hex(3)
    _, owner = await person(app, client, f"owner-{tag}@example.com")
    writer_id, writer = await person(app, client, f"ada.lovelace-{tag}@example.com")
    reader_id, reader = await person(app, client, f"reader-{tag}@example.com")
    _, stranger = await person(app, client, f"stranger-{tag}@example.com")
    project = await new_project(client, headers=owner)
    root = f"/projects/{project['id']}"
    base = f"{root}/git"
    for user_id, permissions in ((writer_id, ["read", "write"]), (reader_id, ["read"])):
        member = await client.put(
            f"{root}/members/{user_id}", json={"permissions": permissions}, headers=owner
        )
        assert member.status_code == 200, member.text

    assert (await client.post(f"{base}/init", headers=reader)).status_code == 403
    await posted(client, f"{base}/init", expect=201, headers=writer)
    await put(Path(project["directory"]) / "notes.md", "notes\n")
    assert (await got(client, f"{base}/status", headers=reader))["files"]
    for route, body in (
        ("stage", {"paths": ["notes.md"]}),
        ("unstage", {"paths": ["notes.md"]}),
        ("commit", {"message": "m"}),
        ("checkout", {"branch": "main"}),
        ("push", {}),
        ("pull", {}),
        ("init", {}),
    ):
        refused = await client.post(f"{base}/{route}", json=body, headers=reader)
        assert refused.status_code == 403, (route, refused.text)
        hidden = await client.post(f"{base}/{route}", json=body, headers=stranger)
        assert hidden.status_code == 404, (route, hidden.text)
    for route in ("status", "diff", "log", "show", "branches"):
        assert (await client.get(f"{base}/{route}", headers=stranger)).status_code == 404
    assert (await client.get(f"{base}/status")).status_code == 401

    await posted(client, f"{base}/stage", {"paths": ["notes.md"]}, headers=writer)
    commit = await posted(
        client, f"{base}/commit", {"message": "Notes"}, expect=201, headers=writer
    )
    assert commit["author_email"] == f"ada.lovelace-{tag}@example.com"
    assert commit["author_name"] == f"Ada Lovelace {tag[:1].upper()}{tag[1:]}"
    [logged] = await got(client, f"{base}/log", headers=reader)
    assert logged["author_email"] == f"ada.lovelace-{tag}@example.com"
    shown = await got(client, f"{base}/show", headers=reader)
    assert shown["commit"]["sha"] == commit["sha"] and "+notes" in shown["diff"]

    recorded = await actions(client, base, headers=owner)
    assert [(a["action"], a["user_id"]) for a in recorded] == [
        ("git.commit", writer_id),
        ("git.stage", writer_id),
        ("git.init", writer_id),
    ]
    assert recorded[0]["detail"]["commit"] == commit["sha"]


async def test_api_keys_need_the_projects_scopes(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    _, owner = await person(app, client, f"keys-{secrets.token_hex(3)}@example.com")
    project = await new_project(client, headers=owner)
    base = f"/projects/{project['id']}/git"
    keys = {}
    for number, scopes in enumerate((["projects:read"], ["projects:write"], ["agents:read"])):
        made = await client.post(
            "/auth/api-keys", json={"name": f"key{number}", "scopes": scopes}, headers=owner
        )
        assert made.status_code == 201, made.text
        keys[scopes[0]] = {"X-API-Key": made.json()["key"]}
    assert (await client.post(f"{base}/init", headers=keys["projects:read"])).status_code == 403
    assert (await client.post(f"{base}/init", headers=keys["projects:write"])).status_code == 201
    assert (await client.get(f"{base}/status", headers=keys["projects:read"])).status_code == 200
    assert (await client.get(f"{base}/status", headers=keys["agents:read"])).status_code == 403


# --- the published grammars ----------------------------------------------------------------------


def _accepted_path(path: str) -> bool:
    try:
        git_tool._check_paths([path], required=True)
        resolve_in_workspace("/nonexistent-root-for-grammar", path)
    except (InvalidInputError, PermissionDeniedError):
        return False
    return True


_SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@_SETTINGS
@given(st.from_regex(git_tool.PATH_PATTERN, fullmatch=True))
def test_every_path_the_schema_allows_passes_the_path_checks(path: str) -> None:
    assert len(path) > 4096 or _accepted_path(path), path


@_SETTINGS
@given(st.from_regex(git_tool.REVISION_PATTERN, fullmatch=True))
def test_every_revision_the_schema_allows_passes_the_tool(ref: str) -> None:
    if len(ref) <= git_tool.MAX_NAME_CHARS:
        assert git_tool._check_revisions(ref, ranges=False) == ref


@_SETTINGS
@given(st.from_regex(git_tool.RANGE_PATTERN, fullmatch=True))
def test_every_range_the_schema_allows_passes_the_tool(ref: str) -> None:
    if len(ref) <= git_tool.MAX_NAME_CHARS:
        assert git_tool._check_revisions(ref, ranges=True) == ref


@_SETTINGS
@given(st.from_regex(git_tool.BRANCH_PATTERN, fullmatch=True))
def test_every_branch_the_schema_allows_passes_the_tool(branch: str) -> None:
    if len(branch) <= git_tool.MAX_NAME_CHARS:
        assert git_tool._check_branch(branch) == branch


@_SETTINGS
@given(st.from_regex(git_tool.REMOTE_PATTERN, fullmatch=True))
def test_every_remote_the_schema_allows_passes_the_tool(remote: str) -> None:
    assert git_tool._check_remote_name(remote) == remote


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        (git_tool.PATH_PATTERN, [*BAD_PATHS[:12], "x" * 300, "a/" + "é" * 64]),
        (git_tool.REVISION_PATTERN, [*BAD_REFS[:-1], "a..b", "a/.b", "a.lock/b", "a."]),
        (git_tool.RANGE_PATTERN, ["..a", "a..", "a....b", "a.lock..b", "a..-b", "a..b..c"]),
        (git_tool.BRANCH_PATTERN, ["HEAD", "refs/heads/x", "+x", "-x", ".x", "a..b"]),
        (git_tool.REMOTE_PATTERN, ["-x", ".x", "a..b", "a/b", "https://x", "a" * 101]),
    ],
)
def test_the_grammars_refuse_what_the_tool_refuses(pattern: str, refused: list[str]) -> None:
    for value in refused:
        assert re.fullmatch(pattern, value) is None, value


@pytest.mark.parametrize(
    ("email", "author"),
    [
        ("ada.lovelace@example.com", ("Ada Lovelace", "ada.lovelace@example.com")),
        ("åda+tag@exämple.com", ("Åda Tag", "åda+tag@exämple.com")),
        ("-odd<x>@example.com", ("Oddx", "oddx@example.com")),
        ("admin@localhost", ("Admin", "admin@localhost")),
    ],
)
def test_a_persons_commits_carry_their_email_and_a_name_made_from_it(
    email: str, author: tuple[str, str]
) -> None:
    assert author_of(email) == author
    git_tool._check_identity(*author)  # the tool takes it
