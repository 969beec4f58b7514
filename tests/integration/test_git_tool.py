"""The `git` tool against real git and real repositories under tmp_path (no mocks).

Each attack writes a script that would create a marker file; the `marker` fixture fails the
test if the marker exists afterwards. Control runs (`plain_git`, git without the tool's
hardening) show that each planted attack is live, so a passing test means the tool stopped it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from git_env import person_git_env

from gathering.errors import (
    InvalidInputError,
    PathTraversalError,
    PermissionDeniedError,
    ToolTimeoutError,
)
from gathering.tools.builtins import git as git_module
from gathering.tools.builtins.git import MAX_OUTPUT_BYTES, git

REFUSED = (InvalidInputError, PermissionDeniedError)  # PathTraversalError is an InvalidInputError


def plain_git(cwd: Path, *args: str) -> str:
    """git as a user would run it (no global config, an identity), for setting up and controls."""
    env = person_git_env(cwd)
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return done.stdout + done.stderr


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A file no attack may create; checked after the test."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "an attack ran a program"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    """A program that creates the marker (and reads its input, as a filter or pager would)."""
    script = tmp_path / "evil.sh"
    write(script, f'#!/bin/sh\ntouch "{marker}"\ncat >/dev/null 2>&1\nexit 0\n', 0o755)
    return script


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def repo(workspace: Path) -> Path:
    """workspace/proj: a repository with one commit on main."""
    path = workspace / "proj"
    path.mkdir()
    plain_git(path, "init", "-q", "-b", "main")
    write(path / "README.md", "hello\n")
    plain_git(path, "add", "README.md")
    plain_git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture
def bare(tmp_path: Path, repo: Path) -> Path:
    """A bare repository outside the workspace, the repository's `origin`, holding main."""
    path = tmp_path / "remote.git"
    plain_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(path))
    plain_git(repo, "remote", "add", "origin", str(path))
    plain_git(repo, "push", "-q", "origin", "main")
    return path


def set_config(repo: Path, text: str) -> None:
    config = repo / ".git" / "config"
    config.write_text(config.read_text() + text)


def set_origin_url(repo: Path, url: str) -> None:
    """Rewrite origin's URL in .git/config itself (`git remote` would read "-o..." as options)."""
    config = repo / ".git" / "config"
    lines = config.read_text().splitlines()
    start = lines.index('[remote "origin"]')
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("url = "))
    lines[at] = f"\turl = {url}"
    config.write_text("\n".join(lines) + "\n")


async def run(root: Path, command: str, **arguments: Any) -> dict[str, Any]:
    result = await git(root, command, repo="proj", **arguments)  # type: ignore[arg-type]
    assert set(result) == {"exit_code", "stdout", "stderr", "truncated"}
    return result


# --- happy paths -------------------------------------------------------------------------------


async def test_status_add_diff_commit_log_show(workspace: Path, repo: Path) -> None:
    await asyncio.to_thread(write, repo / "README.md", "hello\nworld\n")
    await asyncio.to_thread(write, repo / "src" / "app.py", "print('hi')\n")

    status = await run(workspace, "status")
    assert status["exit_code"] == 0
    assert "## main" in status["stdout"] and " M README.md" in status["stdout"]
    assert "?? src/" in status["stdout"]

    diff = await run(workspace, "diff", paths=["README.md"])
    assert "+world" in diff["stdout"]

    assert (await run(workspace, "add", paths=["README.md", "src/app.py"]))["exit_code"] == 0
    assert (await run(workspace, "diff"))["stdout"] == ""
    staged = await run(workspace, "diff", staged=True)
    assert "+world" in staged["stdout"] and "src/app.py" in staged["stdout"]

    commit = await run(
        workspace,
        "commit",
        message="Add app\n\n-- not an option; $(touch x)",
        author_name="Ada Lovelace",
        author_email="ada@example.com",
    )
    assert commit["exit_code"] == 0, commit

    log = await run(workspace, "log", max_count=1)
    assert "Ada Lovelace <ada@example.com>" in log["stdout"]
    assert "-- not an option; $(touch x)" in log["stdout"]
    assert "first" not in log["stdout"]
    assert "first" in (await run(workspace, "log", ref="HEAD~1"))["stdout"]

    show = await run(workspace, "show", paths=["src/app.py"])
    assert (
        "+print('hi')" in show["stdout"] and "README.md" not in show["stdout"].split("\n\n", 2)[2]
    )

    ranged = await run(workspace, "diff", ref="HEAD~1..HEAD", paths=["src"])
    assert "+print('hi')" in ranged["stdout"]
    assert "Add app" in (await run(workspace, "log", ref="main~1..main"))["stdout"]
    assert (await run(workspace, "status"))["stdout"] == "## main\n"


async def test_commit_identity_defaults_to_the_repository_then_the_tool(
    workspace: Path, repo: Path
) -> None:
    await asyncio.to_thread(write, repo / "a.txt", "a\n")
    await run(workspace, "add", paths=["a.txt"])
    assert (await run(workspace, "commit", message="default identity"))["exit_code"] == 0
    log = await run(workspace, "log", max_count=1)
    assert "GatheRing agent <agent@gathering.invalid>" in log["stdout"]

    await asyncio.to_thread(plain_git, repo, "config", "user.name", "Repo User")
    await asyncio.to_thread(plain_git, repo, "config", "user.email", "repo@example.com")
    await asyncio.to_thread(write, repo / "b.txt", "b\n")
    await run(workspace, "add", paths=["b.txt"])
    assert (await run(workspace, "commit", message="repo identity", paths=["b.txt"]))[
        "exit_code"
    ] == 0
    assert "Repo User <repo@example.com>" in (await run(workspace, "log", max_count=1))["stdout"]


async def test_branch_and_checkout(workspace: Path, repo: Path) -> None:
    assert (await run(workspace, "branch", branch="feature/login"))["exit_code"] == 0
    listing = await run(workspace, "branch")
    assert "feature/login" in listing["stdout"] and "* main" in listing["stdout"]

    assert (await run(workspace, "checkout", branch="feature/login"))["exit_code"] == 0
    await asyncio.to_thread(write, repo / "README.md", "changed\n")
    restored = await run(workspace, "checkout", paths=["README.md"])
    assert restored["exit_code"] == 0
    assert await asyncio.to_thread((repo / "README.md").read_text) == "hello\n"

    created = await run(workspace, "checkout", branch="fix-1", create=True, ref="main")
    assert created["exit_code"] == 0, created
    assert "## fix-1" in (await run(workspace, "status"))["stdout"]

    detached = await run(workspace, "checkout", ref="HEAD")
    assert detached["exit_code"] == 0
    assert "no branch" in (await run(workspace, "status"))["stdout"]

    await run(workspace, "checkout", branch="main")
    assert (await run(workspace, "branch", branch="fix-1", delete=True))["exit_code"] == 0
    assert "fix-1" not in (await run(workspace, "branch"))["stdout"]
    await run(workspace, "branch", branch="from-start", ref="HEAD")
    assert "from-start" in (await run(workspace, "branch"))["stdout"]


@pytest.mark.parametrize("spelling", ["path", "file-url"])
async def test_push_and_pull_with_an_allowed_remote(
    tmp_path: Path, workspace: Path, repo: Path, bare: Path, spelling: str
) -> None:
    allowed = [str(bare) if spelling == "path" else f"file://{bare}"]
    await asyncio.to_thread(write, repo / "new.txt", "new\n")
    await run(workspace, "add", paths=["new.txt"])
    await run(workspace, "commit", message="new file")
    pushed = await run(workspace, "push", allowed_remotes=allowed)
    assert pushed["exit_code"] == 0, pushed
    assert "new file" in await asyncio.to_thread(plain_git, bare, "log", "--oneline", "main")

    pushed = await run(workspace, "push", branch="main", remote="origin", allowed_remotes=allowed)
    assert pushed["exit_code"] == 0, pushed

    other = tmp_path / "other"
    await asyncio.to_thread(plain_git, tmp_path, "clone", "-q", str(bare), str(other))
    await asyncio.to_thread(write, other / "upstream.txt", "from elsewhere\n")
    await asyncio.to_thread(plain_git, other, "add", "upstream.txt")
    await asyncio.to_thread(plain_git, other, "commit", "-q", "-m", "upstream change")
    await asyncio.to_thread(plain_git, other, "push", "-q", "origin", "main")

    pulled = await run(workspace, "pull", branch="main", allowed_remotes=allowed)
    assert pulled["exit_code"] == 0, pulled
    assert await asyncio.to_thread((repo / "upstream.txt").read_text) == "from elsewhere\n"


async def test_output_is_capped(workspace: Path, repo: Path) -> None:
    await asyncio.to_thread(write, repo / "big.txt", "x" * 100 + "\n" * 1 + "y\n" * 300_000)
    await run(workspace, "add", paths=["big.txt"])
    await run(workspace, "commit", message="big")
    shown = await run(workspace, "show")
    assert shown["exit_code"] == 0
    assert shown["truncated"] is True
    assert len(shown["stdout"].encode()) <= MAX_OUTPUT_BYTES


async def test_the_repository_may_be_owned_by_another_user(workspace: Path, repo: Path) -> None:
    """safe.directory: a repository owned by someone else works, for that repository only."""
    if os.geteuid() == 0:

        def give_away() -> None:
            for folder, dirs, files in os.walk(repo):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.lchown(name, 54321, 54321)

        await asyncio.to_thread(give_away)
        strict = {**person_git_env(repo), "GIT_CONFIG_COUNT": "0"}  # no safe.directory
        control = await asyncio.to_thread(
            subprocess.run, ["git", "status"], cwd=repo, env=strict, capture_output=True, text=True
        )
        assert "dubious ownership" in control.stderr
    status = await run(workspace, "status")
    assert status["exit_code"] == 0, status


async def test_server_environment_does_not_leak_in(
    workspace: Path, repo: Path, evil: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    await asyncio.to_thread(plain_git, tmp_path, "init", "-q", str(elsewhere))
    for name in ("GIT_EXTERNAL_DIFF", "GIT_SSH_COMMAND", "GIT_PAGER", "GIT_EDITOR", "PAGER"):
        monkeypatch.setenv(name, str(evil))
    monkeypatch.setenv("GIT_DIR", str(elsewhere / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(elsewhere))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.fsmonitor'='{evil}'")
    await asyncio.to_thread(write, repo / "README.md", "changed\n")
    diff = await run(workspace, "diff")
    assert "+changed" in diff["stdout"]
    assert (await run(workspace, "status"))["stdout"].startswith("## main")


# --- refused arguments -------------------------------------------------------------------------

OPTION_LIKE = [
    "--output=/tmp/x",
    "-oProxyCommand=touch x",
    "--upload-pack=touch /tmp/pwned",
    "--receive-pack=touch /tmp/pwned",
    "--exec=touch /tmp/pwned",
    "-c core.sshCommand=touch x",
    "-f",
    "--force",
]
BAD_REFS = [
    *OPTION_LIKE,
    "$(touch x)",
    ";touch x",
    "`touch x`",
    "HEAD@{upstream}",
    "@{-1}",
    "main@{1}",
    "@",
    "HEAD:README.md",
    "main^{tree}",
    ":/first",
    "a b",
    "main\n--output=x",
    "x.lock",
    ".hidden",
    "a//b",
    "a/",
    "trailing.",
    "..",
    "",
    "ext::sh -c touch% /tmp/pwned",
    "x" * 300,
]
BAD_RANGES = ["..main", "main..", "main....x", "a..b..c", "main..--output=x", "-x..main"]
BAD_BRANCHES = [*BAD_REFS, "HEAD", "refs/heads/main", "a..b", "_ok..no", "+main"]
BAD_REMOTES = [
    *OPTION_LIKE,
    "ext::sh -c touch% /tmp/pwned",
    "fd::17",
    "https://example.com/x.git",
    "/tmp/elsewhere.git",
    "../other",
    ".",
    "..",
    "a b",
    "$(touch x)",
]
BAD_PATHS = [
    "--output=/tmp/x",
    "-oProxyCommand=touch x",
    "../outside",
    "../../etc/passwd",
    "a/../../x",
    "/etc/passwd",
    "~/x",
    "%2e%2e/x",
    "a\\..\\..\\x",
    "nul\0byte",
    ".git/config",
    ".git",
    "sub/.git/hooks",
    "escape/secret.txt",
    "escape",
]


@pytest.fixture
def escape(tmp_path: Path, repo: Path) -> None:
    """proj/escape: a symlink to a folder outside the workspace."""
    outside = tmp_path / "outside"
    write(outside / "secret.txt", "secret\n")
    (repo / "escape").symlink_to(outside)


@pytest.mark.parametrize("ref", BAD_REFS + BAD_RANGES)
async def test_bad_refs_are_refused(workspace: Path, repo: Path, marker: Path, ref: str) -> None:
    for command in ("log", "diff", "show", "checkout"):
        with pytest.raises(REFUSED):
            await run(workspace, command, ref=ref)
    with pytest.raises(REFUSED):
        await run(workspace, "branch", branch="ok", ref=ref)


@pytest.mark.parametrize("ref", ["main..HEAD", "HEAD...main~0"])
async def test_ranges_are_only_for_diff_and_log(workspace: Path, repo: Path, ref: str) -> None:
    assert (await run(workspace, "log", ref=ref))["exit_code"] == 0
    for command, extra in (("show", {}), ("checkout", {}), ("branch", {"branch": "b"})):
        with pytest.raises(InvalidInputError, match=r"range|revision"):
            await run(workspace, command, ref=ref, **extra)


@pytest.mark.parametrize("branch", BAD_BRANCHES)
async def test_bad_branch_names_are_refused(
    workspace: Path, repo: Path, bare: Path, marker: Path, branch: str
) -> None:
    for command, extra in (
        ("branch", {}),
        ("checkout", {}),
        ("checkout", {"create": True}),
        ("push", {"allowed_remotes": [str(bare)]}),
        ("pull", {"allowed_remotes": [str(bare)]}),
    ):
        with pytest.raises(REFUSED):
            await run(workspace, command, branch=branch, **extra)


@pytest.mark.parametrize("remote", BAD_REMOTES)
async def test_bad_remote_names_are_refused(
    workspace: Path, repo: Path, bare: Path, marker: Path, remote: str
) -> None:
    for command in ("push", "pull"):
        with pytest.raises(REFUSED):
            await run(workspace, command, remote=remote, allowed_remotes=[str(bare), remote])


@pytest.mark.usefixtures("escape")
@pytest.mark.parametrize("path", BAD_PATHS)
async def test_bad_paths_are_refused(workspace: Path, repo: Path, marker: Path, path: str) -> None:
    for command in ("add", "status", "diff", "log", "show", "checkout", "commit"):
        extra = {"message": "m"} if command == "commit" else {}
        with pytest.raises(REFUSED):
            await run(workspace, command, paths=[path], **extra)


@pytest.mark.parametrize("path", ["$(touch x)", ";touch x", "`touch x`", ":(exclude)*", "*"])
async def test_shell_and_pathspec_syntax_in_paths_is_literal(
    workspace: Path, repo: Path, marker: Path, path: str
) -> None:
    """Not refused (they are valid file names), but never interpreted: no shell, no magic."""
    added = await run(workspace, "add", paths=[path])
    assert added["exit_code"] != 0
    assert "did not match any files" in added["stderr"]
    await asyncio.to_thread(write, repo / path, "a file with an odd name\n")
    assert (await run(workspace, "add", paths=[path]))["exit_code"] == 0
    status = await run(workspace, "status")
    assert status["stdout"].count("\nA ") == 1, status


@pytest.mark.parametrize("repo_path", ["../ws", "/tmp", "proj/../..", "proj/escape", "nowhere"])
async def test_bad_repositories_are_refused(
    workspace: Path, repo: Path, escape: None, repo_path: str
) -> None:
    with pytest.raises(REFUSED):
        await git(workspace, "status", repo=repo_path)


async def test_a_folder_without_git_is_not_searched_upwards(workspace: Path, repo: Path) -> None:
    await asyncio.to_thread((repo / "sub").mkdir)
    with pytest.raises(InvalidInputError, match=r"no \.git folder"):
        await git(workspace, "status", repo="proj/sub")


async def test_git_indirections_are_refused(workspace: Path, repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    await asyncio.to_thread(plain_git, tmp_path, "init", "-q", str(elsewhere))
    linked = workspace / "linked"
    await asyncio.to_thread(write, linked / ".git", f"gitdir: {elsewhere / '.git'}\n")
    with pytest.raises(PermissionDeniedError, match="is a file"):
        await git(workspace, "status", repo="linked")

    symlinked = workspace / "symlinked"
    await asyncio.to_thread(symlinked.mkdir)
    await asyncio.to_thread((symlinked / ".git").symlink_to, elsewhere / ".git")
    with pytest.raises(PathTraversalError, match="symlink"):
        await git(workspace, "status", repo="symlinked")

    alternates = repo / ".git" / "objects" / "info" / "alternates"
    await asyncio.to_thread(write, alternates, f"{elsewhere / '.git' / 'objects'}\n")
    with pytest.raises(PermissionDeniedError, match="alternates"):
        await run(workspace, "status")
    await asyncio.to_thread(alternates.unlink)

    await asyncio.to_thread((repo / ".git" / "commondir").write_text, str(elsewhere / ".git"))
    with pytest.raises(PermissionDeniedError, match="commondir"):
        await run(workspace, "status")
    await asyncio.to_thread((repo / ".git" / "commondir").unlink)

    objects = repo / ".git" / "objects" / "pack"
    await asyncio.to_thread(lambda: os.rename(objects, repo / "pack-moved"))
    await asyncio.to_thread(objects.symlink_to, repo / "pack-moved")
    with pytest.raises(PathTraversalError, match="objects/pack"):
        await run(workspace, "status")


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        ("status", {"message": "m"}),
        ("status", {"ref": "HEAD"}),
        ("log", {"remote": "origin"}),
        ("show", {"max_count": 3}),
        ("add", {"ref": "HEAD", "paths": ["a"]}),
        ("push", {"paths": ["a"]}),
        ("pull", {"message": "m"}),
        ("diff", {"create": True}),
        ("commit", {"staged": True, "message": "m"}),
        ("branch", {"paths": ["a"]}),
        ("checkout", {"delete": True, "branch": "main"}),
        ("rebase", {}),
        ("add", {}),
        ("add", {"paths": []}),
        ("add", {"paths": "README.md"}),
        ("commit", {}),
        ("commit", {"message": "   "}),
        ("commit", {"message": "nul\0byte"}),
        ("commit", {"message": "m", "author_email": "x --upload-pack=y"}),
        ("commit", {"message": "m", "author_email": "-x@example.com@"}),
        ("commit", {"message": "m", "author_name": "Eve <eve@evil>"}),
        ("commit", {"message": "m", "author_name": "a\nb"}),
        ("log", {"max_count": 0}),
        ("log", {"max_count": True}),
        ("log", {"max_count": 10**6}),
        ("diff", {"staged": True, "ref": "HEAD~1..HEAD"}),
        ("branch", {"delete": True}),
        ("branch", {"branch": "x", "delete": True, "ref": "HEAD"}),
        ("checkout", {}),
        ("checkout", {"create": True}),
        ("checkout", {"branch": "x", "ref": "HEAD"}),
        ("checkout", {"branch": "main", "paths": ["README.md"]}),
        ("status", {"timeout": 0}),
        ("status", {"timeout": 10_000}),
    ],
)
async def test_arguments_that_do_not_apply_are_refused(
    workspace: Path, repo: Path, command: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        await run(workspace, command, **arguments)


# --- remotes ---------------------------------------------------------------------------------


async def test_push_and_pull_need_an_allow_list(workspace: Path, repo: Path, bare: Path) -> None:
    for command in ("push", "pull"):
        with pytest.raises(PermissionDeniedError, match="allow-list"):
            await run(workspace, command)
        with pytest.raises(PermissionDeniedError, match="not on the allow-list"):
            await run(workspace, command, allowed_remotes=["https://example.com/other.git"])
    with pytest.raises(InvalidInputError, match="not configured"):
        await run(workspace, "push", remote="upstream", allowed_remotes=[str(bare)])


async def test_a_remote_inside_the_workspace_is_refused(workspace: Path, repo: Path) -> None:
    inside = workspace / "inside.git"
    await asyncio.to_thread(plain_git, workspace, "init", "-q", "--bare", str(inside))
    await asyncio.to_thread(plain_git, repo, "remote", "add", "inside", str(inside))
    with pytest.raises(PermissionDeniedError, match="inside the agent's workspace"):
        await run(workspace, "push", remote="inside", allowed_remotes=[str(inside)])


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% {marker}",
        "ext::{evil}",
        "fd::17",
        "ssh://-oProxyCommand={evil}/x",
        "-oProxyCommand={evil}:x",
        "git@example.com:x.git",
        "ssh://example.com/x.git",
        "git://example.com/x.git",
        "http://example.com/x.git",
        "file://localhost{bare}",
        "relative/path.git",
        "{bare}/../remote.git",
        "file://{bare}%00",
    ],
)
async def test_dangerous_remote_urls_are_refused(
    workspace: Path, repo: Path, bare: Path, marker: Path, evil: Path, url: str
) -> None:
    url = url.format(marker=marker, evil=evil, bare=bare)
    await asyncio.to_thread(set_origin_url, repo, url)
    for command in ("push", "pull"):
        with pytest.raises(PermissionDeniedError, match="not on the allow-list"):
            await run(workspace, command, allowed_remotes=[str(bare)])
        with pytest.raises(REFUSED):  # even listed, such a URL is not an allowed kind
            await run(workspace, command, allowed_remotes=[url])


async def test_a_pushurl_must_be_allowed_too(
    workspace: Path, repo: Path, bare: Path, marker: Path
) -> None:
    await asyncio.to_thread(
        plain_git, repo, "remote", "set-url", "--push", "origin", f"ext::sh -c touch% {marker}"
    )
    with pytest.raises(PermissionDeniedError, match="ext::"):
        await run(workspace, "push", allowed_remotes=[str(bare)])
    pulled = await run(workspace, "pull", branch="main", allowed_remotes=[str(bare)])
    assert pulled["exit_code"] == 0, pulled


async def test_a_remote_reached_through_a_symlink_is_refused(
    workspace: Path, repo: Path, bare: Path
) -> None:
    """The URL is compared as written: a symlink the agent could later point elsewhere (at a
    repository with hooks of its own) does not stand for the allowed remote."""
    link = workspace / "link.git"
    await asyncio.to_thread(link.symlink_to, bare)
    await asyncio.to_thread(set_origin_url, repo, str(link))
    with pytest.raises(PermissionDeniedError, match="not on the allow-list"):
        await run(workspace, "push", allowed_remotes=[str(bare)])


async def test_legacy_remote_files_are_refused(workspace: Path, repo: Path, bare: Path) -> None:
    await asyncio.to_thread(write, repo / ".git" / "remotes" / "origin", "URL: ext::sh\n")
    with pytest.raises(PermissionDeniedError, match="remotes"):
        await run(workspace, "push", allowed_remotes=[str(bare)])


# --- the repository's configuration ------------------------------------------------------------

CONFIG_ATTACKS = [
    ("core.fsmonitor", "[core]\n\tfsmonitor = {evil}\n", "status", {}),
    ("core.hookspath", "[core]\n\thooksPath = hooks\n", "commit", {"message": "m"}),
    ("filter.evil.clean", '[filter "evil"]\n\tclean = {evil}\n', "add", {"paths": ["README.md"]}),
    ("filter.evil.smudge", '[filter "evil"]\n\tsmudge = {evil}\n', "checkout", {"paths": ["."]}),
    ("filter.evil.process", '[filter "evil"]\n\tprocess = {evil}\n', "status", {}),
    ("diff.external", "[diff]\n\texternal = {evil}\n", "diff", {}),
    ("diff.x.textconv", '[diff "x"]\n\ttextconv = {evil}\n', "log", {}),
    ("diff.x.command", '[diff "x"]\n\tcommand = {evil}\n', "show", {}),
    ("merge.x.driver", '[merge "x"]\n\tdriver = {evil}\n', "status", {}),
    ("core.pager", "[core]\n\tpager = {evil}\n", "log", {}),
    ("pager.log", "[pager]\n\tlog = {evil}\n", "log", {}),
    ("core.editor", "[core]\n\teditor = {evil}\n", "commit", {"message": "m"}),
    ("sequence.editor", "[sequence]\n\teditor = {evil}\n", "status", {}),
    ("core.sshcommand", "[core]\n\tsshCommand = {evil}\n", "status", {}),
    ("core.gitproxy", "[core]\n\tgitProxy = {evil}\n", "status", {}),
    ("core.askpass", "[core]\n\taskPass = {evil}\n", "status", {}),
    ("core.worktree", "[core]\n\tworktree = /\n", "status", {}),
    ("credential.helper", "[credential]\n\thelper = !{evil}\n", "status", {}),
    ("gpg.program", "[gpg]\n\tprogram = {evil}\n", "commit", {"message": "m"}),
    ("commit.gpgsign", "[commit]\n\tgpgSign = true\n", "commit", {"message": "m"}),
    ("alias.st", "[alias]\n\tst = !{evil}\n", "status", {}),
    ("include.path", "[include]\n\tpath = ../evil.cfg\n", "status", {}),
    ("includeif.gitdir:/.path", '[includeIf "gitdir:/"]\n\tpath = ../evil.cfg\n', "status", {}),
    ("remote.origin.uploadpack", '[remote "origin"]\n\tuploadpack = {evil}\n', "status", {}),
    ("remote.origin.receivepack", '[remote "origin"]\n\treceivepack = {evil}\n', "status", {}),
    ("remote.origin.vcs", '[remote "origin"]\n\tvcs = ext\n', "status", {}),
    ("http.proxy", "[http]\n\tproxy = http://127.0.0.1:9\n", "status", {}),
    ("protocol.ext.allow", '[protocol "ext"]\n\tallow = always\n', "status", {}),
    ("extensions.worktreeconfig", None, "status", {}),
]


@pytest.mark.parametrize(
    ("key", "snippet", "command", "arguments"), CONFIG_ATTACKS, ids=[c[0] for c in CONFIG_ATTACKS]
)
async def test_repository_config_that_could_run_programs_is_refused(
    workspace: Path,
    repo: Path,
    evil: Path,
    key: str,
    snippet: str | None,
    command: str,
    arguments: dict[str, Any],
) -> None:
    await asyncio.to_thread(write, repo / "README.md", "changed\n")
    await asyncio.to_thread(write, repo / ".gitattributes", "* filter=evil diff=x merge=x\n")
    await asyncio.to_thread(write, repo / "hooks" / "pre-commit", f"#!/bin/sh\n{evil}\n", 0o755)
    await asyncio.to_thread(write, repo / ".git" / "evil.cfg", f"[core]\n\tfsmonitor = {evil}\n")
    if snippet is None:  # the worktree configuration is checked as well
        await asyncio.to_thread(plain_git, repo, "config", "extensions.worktreeConfig", "true")
        await asyncio.to_thread(
            write, repo / ".git" / "config.worktree", f"[core]\n\tfsmonitor = {evil}\n"
        )
        key = "core.fsmonitor"
    else:
        await asyncio.to_thread(set_config, repo, snippet.format(evil=evil))
    with pytest.raises(PermissionDeniedError) as refused:
        await run(workspace, command, **arguments)
    assert repr(key) in refused.value.message
    assert refused.value.hint


async def test_url_rewriting_to_ext_is_refused(workspace: Path, repo: Path, marker: Path) -> None:
    allowed = "https://example.com/repo.git"
    await asyncio.to_thread(plain_git, repo, "remote", "set-url", "origin", allowed)
    await asyncio.to_thread(
        set_config,
        repo,
        f'[url "ext::sh -c touch% {marker}% #"]\n\tinsteadOf = https://example.com/\n',
    )
    for command in ("push", "pull"):
        with pytest.raises(PermissionDeniedError, match="insteadof"):
            await run(workspace, command, allowed_remotes=[allowed])


async def test_plain_git_would_run_the_planted_programs(
    workspace: Path, repo: Path, tmp_path: Path
) -> None:
    """The control: the attacks above are live against git without the tool's hardening."""
    control = tmp_path / "control"
    script = tmp_path / "control.sh"
    await asyncio.to_thread(write, script, f'#!/bin/sh\ntouch "{control}"\ncat >/dev/null\n', 0o755)
    attacks = [
        (f"[core]\n\tfsmonitor = {script}\n", ["status"]),
        (f'[filter "evil"]\n\tclean = {script}\n', ["add", "README.md"]),
        (f"[diff]\n\texternal = {script}\n", ["diff"]),
        ("[core]\n\thooksPath = hooks\n", ["commit", "-m", "m"]),
        ("[include]\n\tpath = evil.cfg\n", ["status"]),
    ]
    await asyncio.to_thread(write, repo / ".gitattributes", "* filter=evil\n")
    await asyncio.to_thread(write, repo / "hooks" / "pre-commit", f"#!/bin/sh\n{script}\n", 0o755)
    await asyncio.to_thread(write, repo / ".git" / "evil.cfg", f"[core]\n\tfsmonitor = {script}\n")
    original = await asyncio.to_thread((repo / ".git" / "config").read_text)
    for snippet, command in attacks:
        await asyncio.to_thread(write, repo / ".git" / "config", original + snippet)
        await asyncio.to_thread(write, repo / "README.md", f"changed for {command[0]}\n")
        await asyncio.to_thread(plain_git, repo, *command)
        assert await asyncio.to_thread(control.exists), f"{snippet!r} did not run"
        await asyncio.to_thread(control.unlink)


def plant_nested_repository(repo: Path, evil: Path, *, tracked: bool) -> Path:
    """proj/nested: a repository whose own config has a clean filter that a status inside it
    runs (a tracked file with the same size but another mtime must be hashed again)."""
    nested = repo / "nested"
    nested.mkdir()
    plain_git(nested, "init", "-q")
    write(nested / "f.txt", "x\n")
    plain_git(nested, "add", "f.txt")
    plain_git(nested, "commit", "-q", "-m", "nested")
    if tracked:
        plain_git(repo, "add", "nested")
        plain_git(repo, "commit", "-q", "-m", "add a submodule")
    set_config(nested, f'[filter "evil"]\n\tclean = {evil}\n')
    write(nested / ".gitattributes", "* filter=evil\n")
    write(nested / "f.txt", "y\n")
    os.utime(nested / "f.txt", (1_000_000_000, 1_000_000_000))
    return nested


async def test_checked_out_submodules_are_refused(
    workspace: Path, repo: Path, evil: Path, marker: Path
) -> None:
    nested = await asyncio.to_thread(plant_nested_repository, repo, evil, tracked=True)
    for command, arguments in (
        ("status", {}),
        ("diff", {}),
        ("add", {"paths": ["nested"]}),
        ("commit", {"message": "m", "paths": ["nested"]}),
        ("checkout", {"paths": ["nested"]}),
    ):
        with pytest.raises(PermissionDeniedError, match="submodule"):
            await run(workspace, command, **arguments)
    assert (await run(workspace, "log"))["exit_code"] == 0  # history only: allowed
    assert (await run(workspace, "show"))["exit_code"] == 0

    await asyncio.to_thread(plain_git, repo, "status")  # the control, last: it runs the filter
    assert await asyncio.to_thread(marker.exists), "the planted filter is not live"
    await asyncio.to_thread(marker.unlink)

    await asyncio.to_thread(os.rename, nested / ".git", repo.parent / "nested-git")
    assert (await run(workspace, "status"))["exit_code"] == 0  # not checked out: allowed


async def test_an_untracked_nested_repository_is_not_entered(
    workspace: Path, repo: Path, evil: Path
) -> None:
    await asyncio.to_thread(plant_nested_repository, repo, evil, tracked=False)
    assert "?? nested/" in (await run(workspace, "status"))["stdout"]
    assert (await run(workspace, "add", paths=["."]))["exit_code"] == 0  # records a gitlink
    with pytest.raises(PermissionDeniedError, match="submodule"):
        await run(workspace, "status")


async def test_overrides_hold_even_without_the_config_check(workspace: Path, repo: Path) -> None:
    """Defence in depth: the command line and environment alone neutralise the single-valued
    keys (as if .git/config changed between the check and the run). The program they name is
    in the workspace, where git (in the sandbox) could run it."""
    repository = await asyncio.to_thread(git_module._open_repository, workspace, "proj")
    script = "#!/bin/sh\ntouch /workspace/pwned\ncat >/dev/null 2>&1\nexit 0\n"
    await asyncio.to_thread(write, workspace / "evil.sh", script, 0o755)
    evil = "/workspace/evil.sh"  # where git sees it
    await asyncio.to_thread(write, repo / "hooks" / "pre-commit", f"#!/bin/sh\n{evil}\n", 0o755)
    await asyncio.to_thread(write, repo / "hooks" / "post-commit", f"#!/bin/sh\n{evil}\n", 0o755)
    await asyncio.to_thread(
        set_config,
        repo,
        f"[core]\n\tfsmonitor = {evil}\n\thooksPath = hooks\n\tpager = {evil}\n"
        f"\teditor = {evil}\n\tsshCommand = {evil}\n\taskPass = {evil}\n"
        f"[diff]\n\texternal = {evil}\n[credential]\n\thelper = !{evil}\n"
        f"[gpg]\n\tprogram = {evil}\n[commit]\n\tgpgSign = true\n",
    )
    await asyncio.to_thread(write, repo / "README.md", "changed\n")
    execute = git_module._execute
    await execute(repository, ["status"])
    await execute(repository, ["diff"])  # without --no-ext-diff
    await execute(repository, ["log", "-p"])
    identity = ["user.name=Tester", "user.email=tester@example.com"]
    committed = await execute(repository, ["commit", "-a", "-m", "m"], config=identity)
    assert committed["exit_code"] == 0, committed  # without --no-verify, yet no hook ran
    await execute(repository, ["commit", "--allow-empty"])  # would open an editor
    pushed = await execute(repository, ["push", "ssh://example.invalid/x", "HEAD"])
    assert "not allowed" in pushed["stderr"]
    pushed = await execute(
        repository, ["push", "ssh://example.invalid/x", "HEAD"], transports=["ssh"]
    )
    assert pushed["exit_code"] != 0
    assert not await asyncio.to_thread((workspace / "pwned").exists), "a planted program ran"


# --- timeouts ----------------------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if text.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def test_a_hung_git_is_killed_with_its_children(workspace: Path, repo: Path) -> None:
    """A remote that accepts the connection and never answers: git pull (and its fetch and
    git-remote-https children) are killed at the timeout, and no process is left."""
    connections: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/stalled.git"
    await asyncio.to_thread(plain_git, repo, "remote", "add", "stalled", url)
    try:
        started = time.monotonic()
        with pytest.raises(ToolTimeoutError):
            await run(workspace, "pull", remote="stalled", allowed_remotes=[url], timeout=2)
        assert time.monotonic() - started < 10
        assert connections, "git never reached the stalling server"
        for _ in range(50):
            left = await asyncio.to_thread(_processes_mentioning, f"127.0.0.1:{port}")
            left += await asyncio.to_thread(_processes_mentioning, f"--git-dir={repo}/.git")
            if not left:
                break
            await asyncio.sleep(0.1)
        assert not left, f"processes left behind: {left}"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


# --- as agents get it -----------------------------------------------------------------------------


async def test_the_registry_git_tools_work_in_an_agents_workspace(
    app_for, llm_stub_env, settings_env, tmp_path
):
    """`git` (local commands, write) and `git_remote` (push and pull: external, so it asks a
    person by default, and only to remotes the settings allow)."""
    import httpx
    from workspaces import workspace_of

    app = app_for()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as api:
        agent_id = (await api.post("/agents", json={"name": "Coder", "provider": "openai"})).json()[
            "id"
        ]
        for name in ("write_file", "git", "git_remote"):
            await api.put(f"/agents/{agent_id}/tools/{name}", json={"enabled": True})
        workspace = await workspace_of(api, agent_id)
        await asyncio.to_thread(workspace.mkdir, parents=True, exist_ok=True)
        await _git_setup(workspace)

        async def invoke(tool: str, **arguments):
            response = await api.post(
                f"/tools/{tool}/invoke", json={"agent_id": agent_id, "arguments": arguments}
            )
            return response.status_code, response.json()

        await invoke("write_file", path="README.md", content="# hello\n")
        assert (await invoke("git", command="add", paths=["README.md"]))[1]["is_error"] is False
        status, body = await invoke("git", command="commit", message="first")
        assert body["is_error"] is False, body
        log = json.loads((await invoke("git", command="log"))[1]["output"])
        assert "first" in log["stdout"]

        bare = tmp_path / "remote.git"
        await _run_git(tmp_path, "init", "--bare", str(bare))
        await _run_git(workspace, "remote", "add", "origin", str(bare))
        status, _ = await invoke("git_remote", command="push")
        assert status == 202  # external: a person approves by default
        await api.put(f"/agents/{agent_id}/tools/git_remote", json={"policy": "allow"})
        status, refused = await invoke("git_remote", command="push")
        assert refused["is_error"] and refused["error"]["code"] == "permission_denied"
        settings_env(git_allowed_remotes=str(bare))
        status, pushed = await invoke("git_remote", command="push")
        assert pushed["is_error"] is False, pushed
        assert json.loads(pushed["output"])["exit_code"] == 0


async def _run_git(cwd, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=str(cwd), env=person_git_env(cwd), stdout=asyncio.subprocess.DEVNULL
    )
    assert await process.wait() == 0


async def _git_setup(workspace) -> None:
    await _run_git(workspace, "init", "-q", "-b", "main")
    await _run_git(workspace, "config", "user.name", "Tester")
    await _run_git(workspace, "config", "user.email", "tester@example.com")
