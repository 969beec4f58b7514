"""`WS /ws/projects/{id}/terminal`: a real shell on a PTY in the real bubblewrap sandbox.

Each test drives the app's socket in its own event loop (tests/_support/asgi_ws.py) and types
into a real bash. Commands print a marker computed by the shell (`M-$((6*7))` prints `M-42`),
so the echo of the typed line never passes for its output. Escape attempts must fail; every
process of a terminal must be gone once its socket is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest

from gathering.api.routers.project_terminal import TerminalSlots
from gathering.auth.users import UserStore
from gathering.config import Settings
from gathering.errors import PermissionDeniedError
from gathering.projects import (
    ProjectIn,
    ProjectMemberIn,
    ProjectSettings,
    create_project,
    set_member,
)
from gathering.projects.terminal import OUTPUT_BUFFER_BYTES, open_project_terminal, open_terminal
from gathering.tools.sandbox import check_sandbox

PASSWORD = "correct horse battery staple"
SECRET = "JWT-SECRET-" + "s" * 60  # the signing key (64+ characters), also in the data dir


@pytest.fixture(autouse=True, scope="module")
async def _bubblewrap_works() -> None:
    """Fail (never skip) every test here at once, with the fix, when no sandbox can start."""
    await check_sandbox()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The server's data directory: its signing key and an embedded database's files."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    (folder / "secret_key").write_text(SECRET)
    (folder / "secret_key").chmod(0o600)
    (folder / "pgdata").mkdir(mode=0o700)
    (folder / "pgdata" / "PG_VERSION").write_text("16\n")
    return folder


@pytest.fixture
def single(app_for, data_dir: Path):
    return app_for(data_dir=data_dir)


def multi_user(app_for, data_dir: Path, **settings: Any):
    return app_for(auth="required", secret_key=SECRET, data_dir=data_dir, **settings)


@pytest.fixture
def multi(app_for, data_dir: Path):
    return multi_user(app_for, data_dir)


async def db_of(application):
    return await application.state.gathering.database()


async def local_owner(application) -> int:
    return (await UserStore(await db_of(application)).local_owner()).id


async def new_user(application, *, role: str = "member") -> tuple[int, str]:
    """A new account and the access token of a session started for it."""
    security = application.state.security
    user = await UserStore(await security.db()).create(
        f"term-{secrets.token_hex(4)}@example.com", PASSWORD, role=role
    )
    pair = await (await security.services()).sessions.start(user.id)
    return user.id, pair.access.token


async def new_project(application, owner_id: int, *, allow_network: bool = False):
    settings: Settings = application.state.gathering.settings
    spec = ProjectIn(
        name=f"p{secrets.token_hex(4)}", settings=ProjectSettings(allow_network=allow_network)
    )
    return await create_project(await db_of(application), settings, owner_id, spec)


def path_of(project) -> str:
    return f"/ws/projects/{project.id}/terminal"


class Shell:
    """A terminal socket: type a command, read its output up to a marker."""

    def __init__(self, ws: ASGIWebSocket) -> None:
        self.ws = ws
        self.seen = ""
        self.frames: list[dict[str, Any]] = []

    async def ready(self) -> dict[str, Any]:
        message = await self.ws.receive_json(timeout=20)
        while message["type"] in ("authenticated", "output"):
            message = await self.ws.receive_json(timeout=20)
        assert message["type"] == "ready", message
        return message

    async def until(self, text: str, timeout: float = 20) -> str:
        """Output up to and including `text` (which must come)."""
        while text not in self.seen:
            message = await self.ws.receive_json(timeout=timeout)
            self.frames.append(message)
            if message["type"] == "output":
                self.seen += message["data"]
            else:
                raise AssertionError(f"{message} before {text!r}; output: {self.seen!r}")
        before, _, after = self.seen.partition(text)
        self.seen = after
        return before + text

    async def reply(self, timeout: float = 20) -> dict[str, Any]:
        """The next frame that is not output (output is kept for `until`)."""
        while True:
            message = await self.ws.receive_json(timeout=timeout)
            if message["type"] != "output":
                return message
            self.seen += message["data"]

    async def run(self, command: str, *, timeout: float = 20) -> str:
        """Run `command` and return its output (up to a marker the shell prints after it)."""
        marker = f"END{secrets.token_hex(3)}"
        await self.ws.send_json({"type": "input", "data": f"{command}; echo {marker}-$((6*7))\n"})
        return (await self.until(f"{marker}-42", timeout)).rsplit(f"{marker}-$((6*7))", 1)[-1]

    async def final(self) -> tuple[list[dict[str, Any]], int]:
        """The frames up to the socket's close, and its close code."""
        frames = []
        with contextlib.suppress(ConnectionError):
            while True:
                frames.append(await self.ws.receive_json(timeout=20))
        assert self.ws.close_code is not None
        return frames, self.ws.close_code


@contextlib.asynccontextmanager
async def terminal(application, project, query: str = ""):
    async with ASGIWebSocket(application, path_of(project), query=query) as ws:
        shell = Shell(ws)
        await shell.ready()
        yield shell


# --- processes on the host ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(child) for child in text.split()]
    return found


def _sandbox_namespace(monitor: int) -> str:
    """The pid namespace of the sandbox whose bubblewrap is `monitor` (its child's)."""
    (child,) = _children(monitor)
    return os.readlink(f"/proc/{child}/ns/pid")


def _in_namespace(namespace: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _processes(application) -> tuple[int, str, list[int]]:
    """The one open terminal's bubblewrap, its sandbox's pid namespace and processes."""
    (opened,) = application.state.terminals.open
    namespace = await asyncio.to_thread(_sandbox_namespace, opened.pid)
    return opened.pid, namespace, await asyncio.to_thread(_in_namespace, namespace)


async def assert_gone(monitor: int, namespace: str) -> None:
    """Nothing of the sandbox survives (the kernel tears a pid namespace down shortly)."""
    left: list[int] = []
    for _ in range(100):
        left = await asyncio.to_thread(_in_namespace, namespace)
        if not left and not await asyncio.to_thread(_alive, monitor):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes survived the terminal: {left}")


# --- a shell that works -----------------------------------------------------------------------


async def test_a_command_runs_in_the_project_directory_and_its_output_comes_back(single):
    project = await new_project(single, await local_owner(single))
    async with ASGIWebSocket(single, path_of(project)) as ws:
        shell = Shell(ws)
        ready = await shell.ready()
        assert ready == {
            "type": "ready",
            "cols": 80,
            "rows": 24,
            "network": False,
            "idle_seconds": 900.0,
            "max_seconds": 14400.0,
        }
        output = await shell.run("pwd; id -u; echo made > made.txt")
        assert "/workspace\r\n65534\r\n" in output
        made = await asyncio.to_thread((project.directory / "made.txt").read_text)
        assert made == "made\n"
        await ws.send_json({"type": "ping"})
        assert await shell.reply() == {"type": "pong"}
        await ws.send_json({"type": "input", "data": "exit 7\n"})
        frames, code = await shell.final()
    assert {"type": "exit", "code": 7} in frames
    assert code == 1000
    assert single.state.terminals.open == set()
    db = await db_of(single)
    actions = [
        row["action"]
        for row in await db.fetch_all(
            "SELECT action FROM project.activity WHERE project_id = $1 ORDER BY id", project.id
        )
    ]
    assert actions == ["terminal.open", "terminal.close"]


async def test_resize_changes_the_size_the_shell_sees(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        assert "24 80" in await shell.run("stty size")
        await shell.ws.send_json({"type": "resize", "cols": 132, "rows": 43})
        assert "43 132" in await shell.run("stty size")
        await shell.ws.send_json({"type": "resize", "cols": 0, "rows": 43})
        assert (await shell.reply())["code"] == "invalid_input"
        await shell.ws.send_json({"type": "resize", "cols": "wide", "rows": 43})
        assert (await shell.reply())["code"] == "invalid_input"
        assert "43 132" in await shell.run("stty size")  # still open, size kept


async def test_output_is_decoded_without_splitting_a_character(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        # é is c3 a9: its two bytes come in two writes, a moment apart.
        output = await shell.run(r"printf '\303'; sleep 0.3; printf '\251 ok\n'")
    assert "é ok" in output
    assert "\ufffd" not in output


async def test_job_control_and_ctrl_c_work(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        await shell.ws.send_json({"type": "input", "data": "sleep 1000\n"})
        await asyncio.sleep(0.3)
        await shell.ws.send_json({"type": "input", "data": "\x03"})  # Ctrl-C
        assert "done-130" in await shell.run("echo done-$?")


async def test_bad_frames_get_errors_and_the_terminal_stays(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        for frame in ({"type": "input"}, {"type": "input", "data": 5}, {"type": "jump"}):
            await shell.ws.send_json(frame)
            assert (await shell.reply())["type"] == "error"
        await shell.ws.send_text("not json")
        assert (await shell.reply())["code"] == "invalid_message"
        await shell.ws.send_json({"type": "auth", "token": "x"})
        assert (await shell.reply())["code"] == "invalid_message"
        assert "still-42" in await shell.run("echo still-$((6*7))")
        await shell.ws.send_json({"type": "input", "data": "x" * 70_000})
        assert (await shell.reply())["code"] == "invalid_message"
        assert await shell.ws.wait_closed() == 1009


# --- escape attempts --------------------------------------------------------------------------


async def test_the_data_dir_its_secret_and_etc_shadow_cannot_be_read(single, data_dir: Path):
    project = await new_project(single, await local_owner(single))
    real_data_dir = await asyncio.to_thread(os.path.realpath, data_dir)
    assert project.directory.is_relative_to(real_data_dir)  # <data dir>/projects/...
    async with terminal(single, project) as shell:
        for path in (
            data_dir / "secret_key",
            data_dir / "pgdata" / "PG_VERSION",
            project.directory.parent,
            Path("/etc/shadow"),
            Path(os.environ["GATHERING_DATA_DIR"]),
        ):
            output = await shell.run(f"cat {path} 2>&1; ls {path} 2>&1")
            assert "No such file or directory" in output, (path, output)
        output = await shell.run(
            "cat /workspace/../secret_key /workspace/../../secret_key /proc/1/root/etc/shadow "
            "2>&1; find / \\( -path /proc -o -path /sys \\) -prune -o \\( -name secret_key "
            "-o -name PG_VERSION -o -name shadow \\) -print 2>/dev/null; echo searched",
            timeout=180,  # find prints nothing while it walks the whole of /usr
        )
    assert "No such file or directory" in output
    assert "/secret_key\r" not in output and "PG_VERSION" not in output.split("print")[-1]
    assert "shadow\r" not in output
    assert SECRET not in output


async def test_nothing_outside_the_workspace_can_be_written(single, data_dir: Path):
    project = await new_project(single, await local_owner(single))
    before = sorted(await asyncio.to_thread(os.listdir, project.directory.parent))
    async with terminal(single, project) as shell:
        output = await shell.run(
            "for f in /escape /usr/escape /etc/escape /workspace/../escape /proc/escape; do "
            "touch $f 2>/dev/null && echo WROTE:$f; done; echo tried"
        )
        assert "WROTE:" not in output.replace("echo WROTE:$f", "")
        assert "inside" in await shell.run("echo inside > /workspace/inside.txt; cat inside.txt")
    assert sorted(await asyncio.to_thread(os.listdir, project.directory.parent)) == before
    assert sorted(await asyncio.to_thread(os.listdir, data_dir)) == [
        "pgdata",
        "projects",
        "secret_key",
    ]
    assert await asyncio.to_thread((project.directory / "inside.txt").exists)


async def test_no_terminal_opens_on_a_directory_holding_the_data_dir(single, data_dir: Path):
    project = await new_project(single, await local_owner(single))
    db = await db_of(single)
    await db.execute(
        "UPDATE project.projects SET directory = $2 WHERE id = $1", project.id, str(data_dir)
    )
    async with ASGIWebSocket(single, path_of(project)) as ws:
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "permission_denied")
        assert await ws.wait_closed() == 4403
    moved = type(project)(**{**project.__dict__, "directory": data_dir.parent})
    with pytest.raises(PermissionDeniedError):
        await open_project_terminal(moved, single.state.gathering.settings)


@contextlib.asynccontextmanager
async def tcp_listener():
    """A loopback TCP server of the host; yields its port and the connections it saw."""
    seen: list[bool] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


CONNECT = (
    "(echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo NET-OPEN-$((1)) "
    "|| echo NET-CLOSED-$((1))"
)


async def test_the_network_is_off_by_default(single):
    project = await new_project(single, await local_owner(single))
    async with tcp_listener() as (port, seen), terminal(single, project) as shell:
        output = await shell.run(CONNECT.format(port=port))
    assert "NET-CLOSED-1" in output
    assert seen == []


async def test_the_network_is_on_when_the_project_allows_it(single):
    project = await new_project(single, await local_owner(single), allow_network=True)
    async with tcp_listener() as (port, seen), ASGIWebSocket(single, path_of(project)) as ws:
        shell = Shell(ws)
        assert (await shell.ready())["network"] is True
        output = await shell.run(CONNECT.format(port=port))
        assert "NET-OPEN-1" in output
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
    assert seen == [True]


# --- nothing survives -------------------------------------------------------------------------

DETACH = (
    "sleep 1001 & setsid sleep 1002 & nohup sleep 1003 >/dev/null 2>&1 & (sleep 1004 &) ; disown -a"
)


async def test_every_process_is_gone_once_the_client_leaves(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        await shell.run(DETACH)
        monitor, namespace, processes = await _processes(single)
        assert len(processes) >= 6  # bubblewrap's pid 1, bash, four sleeps
    await assert_gone(monitor, namespace)
    assert single.state.terminals.open == set()


async def test_every_process_is_gone_when_the_server_drains(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        await shell.run(DETACH)
        monitor, namespace, _ = await _processes(single)
        single.state.gathering.drain.begin()
        _, code = await shell.final()
        assert code == 1001
        await assert_gone(monitor, namespace)


async def test_the_idle_cap_closes_the_terminal(app_for, data_dir: Path):
    application = app_for(data_dir=data_dir, terminal_idle_seconds=0.5)
    project = await new_project(application, await local_owner(application))
    async with terminal(application, project) as shell:
        await shell.run(DETACH)
        monitor, namespace, _ = await _processes(application)
        frames, code = await shell.final()
    assert code == 4408
    assert [f["code"] for f in frames if f["type"] == "error"] == ["terminal_idle"]
    await assert_gone(monitor, namespace)


async def test_the_total_cap_closes_a_terminal_in_use(app_for, data_dir: Path):
    application = app_for(data_dir=data_dir, terminal_max_seconds=1.0)
    project = await new_project(application, await local_owner(application))
    async with terminal(application, project) as shell:

        async def keep_typing() -> None:
            while True:
                await shell.ws.send_json({"type": "input", "data": "\n"})
                await asyncio.sleep(0.1)

        typing = asyncio.create_task(keep_typing())
        try:
            frames, code = await shell.final()
        finally:
            typing.cancel()
    assert code == 4408
    assert [f["code"] for f in frames if f["type"] == "error"] == ["terminal_time_limit"]


async def test_a_shell_held_back_by_its_reader_buffers_a_bounded_amount(tmp_path: Path):
    """Nothing reads: the PTY is not read past OUTPUT_BUFFER_BYTES and the shell waits."""
    workspace = tmp_path / "a" / "ws"
    await asyncio.to_thread(workspace.mkdir, parents=True)
    shell = await open_terminal(workspace, network=False)
    try:
        await shell.write("head -c 20000000 /dev/zero | tr '\\0' a; echo; echo DONE-$((6*7))\n")
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert shell.pending_output_bytes <= OUTPUT_BUFFER_BYTES + 64 * 1024
        assert shell.pending_output_bytes >= OUTPUT_BUFFER_BYTES  # it did stop reading
        seen = ""
        while "DONE-42" not in seen[-200:]:  # read on: the shell goes on, and finishes
            text = await asyncio.wait_for(shell.read(), 20)
            assert text is not None
            seen = seen[-200:] + text
    finally:
        await shell.close()


# --- who may open one -------------------------------------------------------------------------


async def test_owner_member_viewer_and_stranger(multi):
    owner_id, owner_token = await new_user(multi)
    worker_id, worker_token = await new_user(multi)
    reader_id, reader_token = await new_user(multi)
    viewer_id, viewer_token = await new_user(multi, role="viewer")
    _, stranger_token = await new_user(multi)
    project = await new_project(multi, owner_id)
    db = await db_of(multi)
    for user_id, permissions in (
        (worker_id, ["read", "terminal"]),
        (reader_id, ["read", "write"]),
        (viewer_id, ["read", "write", "terminal"]),
    ):
        await set_member(db, project, ProjectMemberIn(user_id=user_id, permissions=permissions))

    async with terminal(multi, project, query=f"access_token={owner_token}") as shell:
        assert "owner-42" in await shell.run("echo owner-$((6*7))")
    transport = httpx.ASGITransport(app=multi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post(
            "/auth/ws-ticket", headers={"Authorization": f"Bearer {worker_token}"}
        )
    assert answer.status_code == 201, answer.text
    async with terminal(multi, project, query=f"ticket={answer.json()['ticket']}") as shell:
        assert "ticket-42" in await shell.run("echo ticket-$((6*7))")
    async with ASGIWebSocket(multi, path_of(project)) as ws:  # the auth frame
        await ws.send_json({"type": "auth", "token": worker_token})
        assert (await ws.receive_json())["type"] == "authenticated"
        shell = Shell(ws)
        await shell.ready()
        assert "member-42" in await shell.run("echo member-$((6*7))")

    for token, code, close in (
        (reader_token, "permission_denied", 4403),
        (viewer_token, "permission_denied", 4403),
        (stranger_token, "not_found", 4404),
    ):
        async with ASGIWebSocket(multi, path_of(project), query=f"access_token={token}") as ws:
            error = await ws.receive_json()
            assert (error["type"], error["code"]) == ("error", code)
            assert await ws.wait_closed() == close
    assert multi.state.terminals.open == set()

    async with ASGIWebSocket(
        multi, "/ws/projects/99999999/terminal", query=f"access_token={owner_token}"
    ) as ws:
        assert (await ws.receive_json())["code"] == "not_found"
        assert await ws.wait_closed() == 4404


async def test_a_member_whose_permission_is_withdrawn_loses_the_terminal(app_for, data_dir):
    application = multi_user(app_for, data_dir, ws_heartbeat=0.2)
    owner_id, _ = await new_user(application)
    worker_id, worker_token = await new_user(application)
    project = await new_project(application, owner_id)
    db = await db_of(application)
    member = ProjectMemberIn(user_id=worker_id, permissions=["read", "terminal"])
    await set_member(db, project, member)
    query = f"access_token={worker_token}"
    async with terminal(application, project, query=query) as shell:
        await shell.run(DETACH)
        monitor, namespace, _ = await _processes(application)
        await set_member(db, project, ProjectMemberIn(user_id=worker_id, permissions=["read"]))
        _, code = await shell.final()
    assert code == 4403
    await assert_gone(monitor, namespace)


@pytest.mark.slow
async def test_a_refreshed_token_keeps_the_terminal_open_past_the_first_one(app_for, data_dir):
    """Credentials expire with their access token (30 s here): the dashboard sends the token
    a refresh gave it, and the shell lives on; another user's token is refused."""
    application = multi_user(app_for, data_dir, access_token_ttl=30, ws_heartbeat=0.5)
    owner_id, token = await new_user(application)
    _, stranger = await new_user(application)
    project = await new_project(application, owner_id)
    sessions = (await application.state.security.services()).sessions
    async with terminal(application, project, query=f"access_token={token}") as shell:
        await shell.run("export KEPT=yes")
        await shell.ws.send_json({"type": "auth", "token": stranger})
        refused = await shell.reply()
        assert refused["type"] == "error" and "another user" in refused["message"]
        await shell.ws.send_json({"type": "auth", "token": "forged"})
        assert (await shell.reply())["type"] == "error"  # the terminal keeps its credentials
        await asyncio.sleep(20)
        fresh = await sessions.start(owner_id)
        await shell.ws.send_json({"type": "auth", "token": fresh.access.token})
        assert (await shell.reply())["type"] == "authenticated"
        await asyncio.sleep(15)  # the first token has expired
        assert "yes" in await shell.run("echo $KEPT")
        # without a renewal the socket closes with 4401 when its token expires
        _, code = await shell.final()
    assert code == 4401


async def test_an_unauthenticated_socket_closes_after_the_grace(app_for, data_dir: Path):
    application = multi_user(app_for, data_dir, ws_auth_grace=0.3)
    owner_id, _ = await new_user(application)
    project = await new_project(application, owner_id)
    async with ASGIWebSocket(application, path_of(project)) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}
        await ws.send_json({"type": "input", "data": "id\n"})
        assert (await ws.receive_json())["code"] == "unauthenticated"
        assert await ws.wait_closed() == 4401
    async with ASGIWebSocket(application, path_of(project)) as ws:
        assert await ws.wait_closed() == 4401  # said nothing: the deadline
    async with ASGIWebSocket(application, path_of(project), query="access_token=forged") as ws:
        assert (await ws.receive_json())["type"] == "error"
        assert await ws.wait_closed() == 4401
    assert getattr(application.state, "terminals", TerminalSlots()).open == set()


async def test_terminals_are_capped_per_user_and_per_project(single):
    single.state.terminals = TerminalSlots(per_user=1, per_project=5)
    owner = await local_owner(single)
    project = await new_project(single, owner)
    async with terminal(single, project):
        async with ASGIWebSocket(single, path_of(project)) as second:
            assert (await second.receive_json())["code"] == "too_many_terminals"
            assert await second.wait_closed() == 4430
    async with terminal(single, project):  # the slot was given back
        pass

    single.state.terminals = TerminalSlots(per_user=5, per_project=1)
    other = await new_project(single, owner)
    async with terminal(single, project), terminal(single, other):
        async with ASGIWebSocket(single, path_of(project)) as third:
            assert (await third.receive_json())["code"] == "too_many_terminals"
            assert await third.wait_closed() == 4430
    slots = single.state.terminals
    assert (len(slots.by_user), len(slots.by_project), slots.open) == (0, 0, set())


async def test_too_many_frames_close_the_socket(single):
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        for _ in range(400):
            await shell.ws.send_json({"type": "ping"})
        frames, code = await shell.final()
    assert code == 4429
    assert frames[-1]["code"] == "rate_limited"


async def test_the_repository_is_read_only_in_the_terminal(single):
    """The server's own git reads .git/config: a shell that could rewrite it during a git call
    of the API could slip a filter in. A .git present when the terminal opens is read-only
    there (also when it is swapped for a symlink: the folder opened is what is mounted)."""
    project = await new_project(single, await local_owner(single))

    def make_git() -> None:
        (project.directory / ".git").mkdir()
        (project.directory / ".git" / "config").write_text("[core]\n")

    await asyncio.to_thread(make_git)
    async with terminal(single, project) as shell:
        output = await shell.run(
            "echo '[filter \"x\"]' >> .git/config; echo $?; mv .git .moved; echo $?; "
            "touch fine.txt; echo $?"
        )
    assert "Read-only file system" in output or "Permission denied" in output, output
    statuses = [line for line in output.replace("\r", "").splitlines() if line.isdigit()]
    assert statuses[0] != "0" and statuses[1] != "0" and statuses[2] == "0", output
    config = await asyncio.to_thread((project.directory / ".git" / "config").read_text)
    assert config == "[core]\n"


async def test_a_shell_that_does_not_take_its_input_closes_the_terminal(single):
    """A program that stops reading (raw mode, then sleep) while the client sends a flood:
    the socket is not held waiting on the shell; it closes with 4429 and the sandbox ends."""
    project = await new_project(single, await local_owner(single))
    async with terminal(single, project) as shell:
        await shell.run("stty raw -echo")
        await shell.ws.send_json({"type": "input", "data": "sleep 1000\r"})
        for _ in range(40):
            await shell.ws.send_json({"type": "input", "data": "x" * 60_000})
        _, code = await shell.final()
    assert code == 4429
    for _ in range(100):
        if single.state.terminals.open == set():
            break
        await asyncio.sleep(0.1)
    assert single.state.terminals.open == set()
