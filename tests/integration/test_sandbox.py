"""The OS sandbox of the `shell` and `python` tools, on its happy paths: real bubblewrap
processes, no mocks. Without bubblewrap these tests fail with the command that installs it
(they never skip); the escape attempts are in tests/e2e/test_sandbox_attacks.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gathering.errors import FeatureUnavailableError, InvalidInputError, NotFoundError
from gathering.tools.builtins.shell import MAX_COMMAND_BYTES, python, shell
from gathering.tools.sandbox import (
    INSTALL_HINT,
    SANDBOX_UID,
    SandboxLimits,
    check_sandbox,
    run_sandboxed,
    sandbox_available,
)

QUICK = SandboxLimits(wall_seconds=20)


@pytest.fixture(autouse=True, scope="module")
async def _bubblewrap_works() -> None:
    """Fail (never skip) every test here at once, with the fix, when no sandbox can start."""
    await check_sandbox()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    (folder / "given.txt").write_text("from the host\n")
    return folder


async def test_echo_runs_in_the_workspace(workspace: Path) -> None:
    reply = await shell(workspace, "echo hello; pwd; cat given.txt", limits=QUICK)
    assert reply == {
        "exit_code": 0,
        "stdout": "hello\n/workspace\nfrom the host\n",
        "stderr": "",
        "timed_out": False,
        "truncated": False,
    }


async def test_python_runs_the_system_python_isolated(workspace: Path) -> None:
    reply = await python(
        workspace, "import sys; print(6 * 7); print(sys.executable, sys.flags.isolated)"
    )
    assert reply["exit_code"] == 0, reply
    assert reply["stdout"] == "42\n/usr/bin/python3 1\n"


async def test_a_file_written_inside_is_seen_by_the_host(workspace: Path) -> None:
    await shell(workspace, "mkdir -p out && echo data > out/made.txt", limits=QUICK)
    await python(workspace, "open('by_python.txt', 'w').write('py')", limits=QUICK)
    made = await asyncio.to_thread((workspace / "out" / "made.txt").read_text)
    by_python = await asyncio.to_thread((workspace / "by_python.txt").read_text)
    assert (made, by_python) == ("data\n", "py")


async def test_exit_codes_and_stderr_come_back(workspace: Path) -> None:
    failed = await shell(workspace, "echo oops >&2; exit 7", limits=QUICK)
    raised = await python(workspace, "raise SystemExit(3)", limits=QUICK)
    crashed = await python(workspace, "1/0", limits=QUICK)
    assert (failed["exit_code"], failed["stderr"]) == (7, "oops\n")
    assert raised["exit_code"] == 3
    assert crashed["exit_code"] == 1 and "ZeroDivisionError" in crashed["stderr"]


async def test_a_command_killed_by_a_signal_reports_128_plus_the_signal(workspace: Path) -> None:
    reply = await shell(workspace, "kill -9 $$", limits=QUICK)
    assert reply["exit_code"] == 128 + 9


async def test_stdin_is_given_to_the_command(workspace: Path) -> None:
    reply = await shell(workspace, "tr a-z A-Z", stdin="quiet words\n", limits=QUICK)
    assert reply["stdout"] == "QUIET WORDS\n"
    unread = await shell(workspace, "echo ignored it", stdin="x" * 300_000, limits=QUICK)
    assert unread["stdout"] == "ignored it\n"


async def test_output_past_the_cap_is_cut_and_the_command_stopped(workspace: Path) -> None:
    limits = SandboxLimits(max_output_bytes=10_000, wall_seconds=20)
    result = await run_sandboxed(["/bin/sh", "-c", "yes; sleep 30"], workspace, limits=limits)
    assert result.killed_for_output and result.truncated and not result.timed_out
    assert result.exit_code is None and result.signal == 9
    text, marker = result.stdout.split("\n[output cut:")
    assert len(text.encode()) == 10_000 and "10000 bytes" in marker
    assert result.duration < 10
    reply = await shell(workspace, "yes", limits=limits)
    assert reply["truncated"] and reply["exit_code"] is None


async def test_stdout_and_stderr_share_the_cap(workspace: Path) -> None:
    limits = SandboxLimits(max_output_bytes=1000, wall_seconds=20)
    result = await run_sandboxed(
        ["/bin/sh", "-c", "head -c 600 /dev/zero | tr '\\0' a; head -c 600 /dev/zero >&2"],
        workspace,
        limits=limits,
    )
    assert result.killed_for_output
    kept = len(result.stdout) + len(result.stderr.split("\n[output cut")[0])
    assert kept == 1000


async def test_the_wall_timeout_stops_the_command(workspace: Path) -> None:
    reply = await shell(workspace, "echo started; sleep 60", limits=SandboxLimits(wall_seconds=1))
    assert reply["timed_out"] and reply["exit_code"] is None
    assert reply["stdout"] == "started\n"
    result = await run_sandboxed(
        ["/bin/sh", "-c", "sleep 60"], workspace, limits=SandboxLimits(wall_seconds=0.5)
    )
    assert result.timed_out and 0.5 <= result.duration < 5


async def test_the_environment_is_minimal(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "GATHERING_SECRET_KEY": "gathering-secret-value",
        "SECRET_KEY": "plain-secret-value",
        "DATABASE_URL": "postgresql://user:db-password@db/app",
        "GATHERING_API_KEY_PEPPER": "pepper-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    reply = await shell(workspace, "env; cat /proc/1/environ 2>/dev/null", limits=QUICK)
    names = {line.split("=", 1)[0] for line in reply["stdout"].splitlines() if "=" in line}
    assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}, reply["stdout"]
    assert not any(value in reply["stdout"] for value in secrets.values())
    from_python = await python(workspace, "import os; print(sorted(os.environ))", limits=QUICK)
    assert "GATHERING" not in from_python["stdout"] and "SECRET" not in from_python["stdout"]


async def test_the_command_runs_as_uid_65534_without_capabilities(workspace: Path) -> None:
    reply = await shell(
        workspace,
        "id -u; id -g; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
        limits=QUICK,
    )
    assert reply["stdout"].split() == [
        str(SANDBOX_UID),
        str(SANDBOX_UID),
        str(SANDBOX_UID),
        "CapEff:",
        "0000000000000000",
        "CapBnd:",
        "0000000000000000",
        "NoNewPrivs:",
        "1",
    ]


async def test_the_rlimits_are_set_inside(workspace: Path) -> None:
    limits = SandboxLimits(
        cpu_seconds=7,
        address_space_bytes=512 * 1024 * 1024,
        max_processes=40,
        max_file_bytes=3 * 1024 * 1024,
        max_open_files=100,
        wall_seconds=20,
    )
    reply = await python(
        workspace,
        "import resource as r\n"
        "for name in ('CPU', 'AS', 'NPROC', 'FSIZE', 'NOFILE', 'CORE'):\n"
        "    print(name, *r.getrlimit(getattr(r, 'RLIMIT_' + name)))",
        limits=limits,
    )
    assert reply["stdout"].splitlines() == [
        "CPU 7 7",
        f"AS {512 * 1024 * 1024} {512 * 1024 * 1024}",
        "NPROC 40 40",
        f"FSIZE {3 * 1024 * 1024} {3 * 1024 * 1024}",
        "NOFILE 100 100",
        "CORE 0 0",
    ]


async def test_cpu_and_memory_limits_stop_a_runaway_program(workspace: Path) -> None:
    spin = await python(
        workspace, "while True: pass", limits=SandboxLimits(cpu_seconds=1, wall_seconds=20)
    )
    assert spin["exit_code"] in (128 + 9, 128 + 24) and not spin["timed_out"]
    hog = await python(
        workspace,
        "x = bytearray(2 * 1024 ** 3)",
        limits=SandboxLimits(address_space_bytes=256 * 1024 * 1024, wall_seconds=20),
    )
    assert hog["exit_code"] == 1 and "MemoryError" in hog["stderr"]


async def test_the_process_limit_is_per_sandbox(workspace: Path) -> None:
    """Two sandboxes with a limit of 16 processes each run 10 at the same time: the kernel
    counts per user namespace, so they do not share one budget of uid 65534."""
    limits = SandboxLimits(max_processes=16, wall_seconds=20)
    command = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; wait; echo done"
    replies = await asyncio.gather(*(shell(workspace, command, limits=limits) for _ in "ab"))
    assert [reply["stdout"] for reply in replies] == ["done\n", "done\n"], replies
    over = await shell(
        workspace, command.replace("1 2 3", "1 2 3 11 12 13 14 15 16 17"), limits=limits
    )
    assert "fork" in over["stderr"].lower()


async def test_cancelling_the_call_stops_the_sandbox(workspace: Path) -> None:
    task = asyncio.create_task(shell(workspace, "sleep 60", limits=QUICK))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = await shell(workspace, "echo still works", limits=QUICK)
    assert reply["stdout"] == "still works\n"


async def test_a_missing_bubblewrap_is_a_clear_error(workspace: Path) -> None:
    with pytest.raises(FeatureUnavailableError) as caught:
        await run_sandboxed(["/bin/true"], workspace, bwrap="/nonexistent/bin/bwrap")
    assert caught.value.hint == INSTALL_HINT
    assert "sudo apt-get install bubblewrap" in str(caught.value)
    assert caught.value.to_dict()["code"] == "feature_unavailable"
    with pytest.raises(FeatureUnavailableError):
        await check_sandbox(bwrap="/nonexistent/bin/bwrap")


@pytest.fixture
def bwrap_without_namespaces(tmp_path: Path) -> Path:
    """A bubblewrap that answers `--version` but, like one on a kernel that forbids user
    namespaces, refuses every sandbox (its message is bubblewrap's own)."""
    program = tmp_path / "bwrap"
    program.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "bubblewrap 0.8.0"; exit 0; fi\n'
        "echo 'bwrap: No permissions to creating new namespace, likely because the kernel "
        "does not allow non-privileged user namespaces.' >&2\n"
        "exit 1\n"
    )
    program.chmod(0o755)
    return program


async def test_user_namespaces_refused_is_a_clear_error_and_nothing_runs(
    workspace: Path, bwrap_without_namespaces: Path
) -> None:
    with pytest.raises(FeatureUnavailableError) as caught:
        await run_sandboxed(
            ["/bin/sh", "-c", "touch ran.txt"], workspace, bwrap=str(bwrap_without_namespaces)
        )
    assert "No permissions to creating new namespace" in caught.value.message
    assert caught.value.hint is not None and "user namespaces" in caught.value.hint
    assert not await asyncio.to_thread((workspace / "ran.txt").exists)


def test_sandbox_available_says_whether_a_sandbox_starts() -> None:
    assert sandbox_available() is True
    assert sandbox_available(bwrap="/nonexistent/bin/bwrap") is False


async def test_network_is_refused_until_the_egress_list_reaches_the_sandbox(
    workspace: Path,
) -> None:
    with pytest.raises(FeatureUnavailableError) as caught:
        await run_sandboxed(["/bin/true"], workspace, network=True)
    assert "egress" in str(caught.value)


async def test_bad_commands_workspaces_and_limits_are_refused(
    tmp_path: Path, workspace: Path
) -> None:
    for command in ("", "   ", "echo \x00", "x" * (MAX_COMMAND_BYTES + 1)):
        with pytest.raises(InvalidInputError):
            await shell(workspace, command)
    with pytest.raises(InvalidInputError):
        await python(workspace, "")
    with pytest.raises(InvalidInputError):
        await run_sandboxed([], workspace)
    with pytest.raises(InvalidInputError):  # the sandbox never runs as host root
        await run_sandboxed(["/bin/true"], workspace, host_uid=0)
    with pytest.raises(InvalidInputError):
        await run_sandboxed(["/bin/echo", "\udc80\ud800"], workspace)
    with pytest.raises(NotFoundError):
        await shell(tmp_path / "missing", "true")
    with pytest.raises(InvalidInputError):
        await shell(Path("/"), "true")
    with pytest.raises(InvalidInputError):
        await shell(Path("/tmp"), "true")
    for bad in ({"cpu_seconds": 0}, {"max_processes": -1}, {"wall_seconds": 0}):
        with pytest.raises(InvalidInputError):
            SandboxLimits(**bad)  # type: ignore[arg-type]


async def test_a_root_owned_workspace_is_handed_to_the_sandbox_uid(tmp_path: Path) -> None:
    """When the server is root, the sandbox is uid 65534 on the host too; the top folder of
    a workspace root owns is given to it, so the command can create files there."""
    workspace = tmp_path / "owned"
    await asyncio.to_thread(workspace.mkdir, mode=0o700)
    reply = await shell(workspace, "touch new.txt && echo ok", limits=QUICK)
    assert reply["stdout"] == "ok\n", reply
    stat = await asyncio.to_thread((workspace / "new.txt").stat)
    expected = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
    assert stat.st_uid == expected


async def test_shell_and_python_as_agents_get_them(app_for, llm_stub_env):
    """Registered as tools that ask a person first; allowed, they run in the agent's
    workspace, in the sandbox."""
    import json

    import httpx
    from workspaces import workspace_of

    app = app_for()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as api:
        made = await api.post("/agents", json={"name": "Runner", "provider": "openai"})
        agent_id = made.json()["id"]
        for name in ("shell", "python"):
            await api.put(f"/agents/{agent_id}/tools/{name}", json={"enabled": True})
        listed = {t["name"]: t for t in (await api.get(f"/agents/{agent_id}/tools")).json()}
        assert listed["shell"]["policy"] == listed["python"]["policy"] == "ask"

        async def invoke(tool: str, **arguments):
            body = {"agent_id": agent_id, "arguments": arguments}
            return await api.post(f"/tools/{tool}/invoke", json=body)

        assert (await invoke("shell", command="echo hi > a.txt")).status_code == 202
        for name in ("shell", "python"):
            await api.put(f"/agents/{agent_id}/tools/{name}", json={"policy": "allow"})
        ran = await invoke("shell", command="echo hi > a.txt && id -u")
        result = json.loads(ran.json()["output"])
        assert result["exit_code"] == 0 and result["stdout"].strip() == "65534"
        workspace = await workspace_of(api, agent_id)
        assert (await asyncio.to_thread((workspace / "a.txt").read_text)) == "hi\n"
        code = "import os; print(sorted(os.listdir('.')), 'GATHERING_DATA_DIR' in os.environ)"
        printed = json.loads((await invoke("python", code=code)).json()["output"])
        assert printed["stdout"].strip() == "['a.txt'] False"
