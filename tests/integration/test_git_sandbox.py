"""The server's git runs in the bubblewrap sandbox: whatever git is made to run (a filter
slipped into `.git/config` after the tool's checks, by a shell racing the call) sees the
workspace and nothing else of the machine, as the sandbox's uid."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

from gathering.errors import FeatureUnavailableError, InvalidInputError, PermissionDeniedError
from gathering.tools.builtins import git as git_module
from gathering.tools.builtins.git import git, init_repository
from gathering.tools.sandbox import SANDBOX_UID

# A filter's command (git runs it with the shell): what it can see and who it is.
SPY = (
    "{ id -u; test -r /etc/shadow && echo shadow; test -e {host} && echo host; "
    "ls /; } > /workspace/proj/facts 2>&1; cat"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def repository(workspace: Path) -> Path:
    path = workspace / "proj"
    path.mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(path), "GIT_CONFIG_GLOBAL": "/dev/null"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, env=env, check=True)
    write(path / ".gitattributes", "*.txt filter=spy\n")
    write(path / "notes.txt", "hello\n")
    return path


async def test_a_filter_that_wins_the_race_runs_in_the_sandbox(tmp_path: Path) -> None:
    """The tool's checks refuse a filter in the configuration; one that appears after them (a
    concurrent writer) is what `_execute`'s `config` stands for here: git runs it, in the box."""
    workspace = tmp_path / "ws"
    proj = await asyncio.to_thread(repository, workspace)
    secret = tmp_path / "server-secret"  # outside the workspace: the server's files
    await asyncio.to_thread(write, secret, "key\n")
    opened = await asyncio.to_thread(git_module._open_repository, workspace, "proj")
    spy = SPY.replace("{host}", str(secret))
    result = await git_module._execute(
        opened, ["add", "--", "notes.txt"], config=[f"filter.spy.clean={spy}"]
    )
    assert result["exit_code"] == 0, result["stderr"]
    facts = (await asyncio.to_thread((proj / "facts").read_text)).split()
    assert facts[0] == str(SANDBOX_UID)  # never root, never the server's uid inside
    assert "shadow" not in facts and "host" not in facts
    assert "workspace" in facts and "root" not in facts and "home" not in facts
    assert "proc" not in facts  # with its one capability, git gets no /proc at all


async def test_racing_a_filter_into_the_config_never_reaches_outside(tmp_path: Path) -> None:
    """A writer flips `.git/config` between a clean one and one with a filter while the tool
    runs `git add` again and again: the filter may run, but only inside the sandbox."""
    workspace = tmp_path / "ws"
    proj = await asyncio.to_thread(repository, workspace)
    outside = tmp_path / "pwned"
    config = proj / ".git" / "config"
    clean = await asyncio.to_thread(config.read_text)
    evil = clean + f'[filter "spy"]\n\tclean = "touch {outside}; touch /workspace/proj/ran; cat"\n'
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for text in (evil, clean):
                staged = config.with_name("config.new")
                staged.write_text(text)
                os.replace(staged, config)

    writer = threading.Thread(target=flip, daemon=True)
    writer.start()
    refused = 0
    try:
        for round_ in range(30):
            await asyncio.to_thread(write, proj / "notes.txt", f"round {round_}\n")
            try:
                await git(workspace, "add", repo="proj", paths=["notes.txt"])
            except PermissionDeniedError:
                refused += 1  # the check saw the filter: the usual outcome
            except (InvalidInputError, FeatureUnavailableError):
                pass  # .git/config was replaced while the sandbox bound its checked copy
    finally:
        stop.set()
        await asyncio.to_thread(writer.join)
    assert not await asyncio.to_thread(outside.exists), "a filter wrote outside the workspace"
    assert refused > 0  # the race was real: the checks caught the filter at least once


async def test_files_git_writes_belong_to_the_sandbox_and_stay_writable(tmp_path: Path) -> None:
    """As root, git keeps CAP_DAC_OVERRIDE to write what the server wrote as root; what it
    writes belongs to the sandbox's uid, like the terminal's files."""
    workspace = tmp_path / "ws"
    proj = workspace / "new"
    await asyncio.to_thread(proj.mkdir, parents=True)
    await init_repository(workspace, "new")
    head = proj / ".git" / "HEAD"
    owner = (await asyncio.to_thread(head.stat)).st_uid
    assert owner == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())
    await asyncio.to_thread(write, proj / "a.txt", "server wrote this\n")  # root's when root
    assert (await git(workspace, "add", repo="new", paths=["a.txt"]))["exit_code"] == 0
    done = await git(
        workspace,
        "commit",
        repo="new",
        message="first",
        author_name="Tester",
        author_email="tester@example.com",
    )
    assert done["exit_code"] == 0, done["stderr"]


async def test_a_folder_of_another_user_is_worked_on_as_that_user(tmp_path: Path) -> None:
    """A registered folder belongs to a person (uid 1000 here): as root, git works there as
    that uid, and the folder keeps its owner."""
    if os.geteuid() != 0:
        return  # the server's own uid is the only one it has
    workspace = tmp_path / "ws"
    proj = await asyncio.to_thread(repository, workspace)

    def give_away() -> None:
        for folder, dirs, files in os.walk(workspace):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.lchown(name, 1000, 1000)

    await asyncio.to_thread(give_away)
    await asyncio.to_thread((proj / ".gitattributes").unlink)
    assert (await git(workspace, "add", repo="proj", paths=["notes.txt"]))["exit_code"] == 0
    done = await git(
        workspace, "commit", repo="proj", message="m", author_name="T", author_email="t@e.org"
    )
    assert done["exit_code"] == 0, done["stderr"]
    index = await asyncio.to_thread((proj / ".git" / "index").stat)
    assert index.st_uid == 1000
    assert (await asyncio.to_thread(workspace.stat)).st_uid == 1000


async def test_a_local_remote_in_the_servers_data_is_refused(tmp_path: Path) -> None:
    """push and pull refuse a local remote below a forbidden folder (other projects), even
    through a symlink that the allow-list names."""
    workspace = tmp_path / "ws"
    proj = await asyncio.to_thread(repository, workspace)
    data = tmp_path / "data"
    other = data / "projects" / "other.git"
    await asyncio.to_thread(other.mkdir, parents=True)
    alias = tmp_path / "remote.git"
    await asyncio.to_thread(alias.symlink_to, other)
    env = {"PATH": os.environ["PATH"], "HOME": str(proj), "GIT_CONFIG_GLOBAL": "/dev/null"}
    await asyncio.to_thread(
        subprocess.run, ["git", "init", "-q", "--bare", str(other)], env=env, check=True
    )
    await asyncio.to_thread(
        subprocess.run,
        ["git", "remote", "add", "origin", str(alias)],
        cwd=proj,
        env=env,
        check=True,
    )
    for command in ("push", "pull"):
        try:
            await git(
                workspace, command, repo="proj", allowed_remotes=[str(alias)], forbidden=[data]
            )
        except PermissionDeniedError as refused:
            assert "server's own data" in str(refused)
        else:
            raise AssertionError(f"{command} to a remote in the server's data was not refused")
