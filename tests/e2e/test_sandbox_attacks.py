"""Escape attempts against the OS sandbox of the `shell` and `python` tools: each must fail.

Real processes, no mocks: the commands are those an untrusted agent would try. Each test is
bounded by the sandbox's own wall timeout (seconds) and checks afterwards that nothing it
started is still running on the host.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from gathering.tools.builtins.shell import python, shell
from gathering.tools.sandbox import SANDBOX_UID, SandboxLimits, check_sandbox

pytestmark = pytest.mark.slow

SHORT = SandboxLimits(wall_seconds=15)
THIS_FILE = Path(__file__).resolve()  # the project's source tree, not to be seen inside


@pytest.fixture(autouse=True, scope="module")
async def _bubblewrap_works() -> None:
    """Fail (never skip) every test here at once, with the fix, when no sandbox can start."""
    await check_sandbox()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A server data folder outside the workspace, with a signing key the sandbox must not
    read (the real one, $GATHERING_DATA_DIR, is tried as well)."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    (folder / "signing.key").write_text("SIGNING-KEY-" + secrets.token_hex(16))
    return folder


def _sandbox_processes(marker: str) -> list[str]:
    """Host processes left by a sandbox: uid 65534 running a sleep of this test, or any
    process whose command line holds `marker`. Blocking: read /proc in a thread."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), "")
        if marker in cmdline or (uid == str(SANDBOX_UID) and marker.split("-")[-1] in cmdline):
            found.append(f"{entry}: {cmdline.strip()}")
    return found


async def _assert_nothing_left(marker: str) -> None:
    """Nothing the sandbox started survives it (the kernel's pid-namespace teardown is
    asynchronous: give it a moment)."""
    left: list[str] = []
    for _ in range(40):
        left = await asyncio.to_thread(_sandbox_processes, marker)
        if not left:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox processes survived: {left}")


@pytest.fixture
def marker() -> str:
    """A word that appears in the command line of every process a test starts; its last part
    is also a sleep length, so a bare `sleep N` can be found."""
    return f"sandboxmark-{secrets.token_hex(4)}-{700 + secrets.randbelow(200)}"


# --- reading the server's secrets ------------------------------------------------------------


async def test_the_data_dir_and_its_signing_key_are_invisible(
    workspace: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await asyncio.to_thread((data_dir / "signing.key").read_text)
    real_data_dir = os.environ["GATHERING_DATA_DIR"]  # this session's, set by tests/conftest.py
    monkeypatch.setenv("GATHERING_DATA_DIR", str(data_dir))  # as a server pointed at it
    here = THIS_FILE
    reply = await shell(
        workspace,
        f"cat {data_dir}/signing.key; ls -la {data_dir} {real_data_dir} $GATHERING_DATA_DIR; "
        f"cat {here}; ls /work /root /home /var /run /srv /opt /mnt; "
        "cat /proc/1/root/etc/shadow; ls /proc/1/cwd/; "
        f"find / -xdev -name signing.key -not -path '/proc/*' 2>/dev/null; echo end",
        limits=SHORT,
    )
    assert reply["stdout"].endswith("end\n"), reply
    assert key not in reply["stdout"] + reply["stderr"]
    assert "No such file or directory" in reply["stderr"]
    assert "signing.key" not in reply["stdout"]
    assert str(data_dir) not in reply["stdout"]  # nor its path, through the environment
    code = await python(
        workspace,
        f"import os\nfor p in ({str(data_dir)!r}, {real_data_dir!r}, {str(here.parent)!r}):\n"
        "    print(p, os.path.exists(p))",
        limits=SHORT,
    )
    assert code["stdout"].split()[1::2] == ["False", "False", "False"], code


async def test_etc_shadow_and_the_host_etc_are_invisible(workspace: Path) -> None:
    reply = await shell(workspace, "cat /etc/shadow; cat /etc/gshadow; ls -A /etc", limits=SHORT)
    assert reply["stdout"].split() == ["alternatives", "group", "hosts", "ld.so.cache", "passwd"]
    assert "/etc/shadow: No such file or directory" in reply["stderr"]
    users = await shell(workspace, "cut -d: -f1 /etc/passwd", limits=SHORT)
    assert users["stdout"].split() == ["root", "sandbox"]
    host_users = await asyncio.to_thread(Path("/etc/passwd").read_text)
    assert len(host_users.splitlines()) > 2  # the host has more: they stay outside


async def test_another_process_environment_is_out_of_reach(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ENV-SECRET-" + secrets.token_hex(8)
    monkeypatch.setenv("GATHERING_SECRET_KEY", secret)
    server_pid = os.getpid()
    reply = await shell(
        workspace,
        f"cat /proc/{server_pid}/environ; cat /proc/{os.getppid()}/environ; "
        "for p in /proc/[0-9]*; do cat $p/environ; done 2>/dev/null; "
        "echo; ls -d /proc/[0-9]* | wc -l",
        limits=SHORT,
    )
    assert secret not in reply["stdout"] + reply["stderr"]
    assert f"/proc/{server_pid}/environ: No such file or directory" in reply["stderr"]
    # Only the sandbox's own processes exist in its pid namespace (pid 1, the shell, ls, wc).
    assert int(reply["stdout"].split()[-1]) <= 5, reply


# --- writing outside the workspace -----------------------------------------------------------


async def test_nothing_outside_the_workspace_can_be_written(workspace: Path, marker: str) -> None:
    host_tmp = Path("/tmp") / marker
    reply = await shell(
        workspace,
        f"for p in /{marker} /usr/{marker} /etc/{marker} /bin/{marker} /proc/{marker}"
        f" {workspace.parent}/{marker}; do touch $p && echo WROTE $p; done; "
        f"echo inside > /tmp/{marker} && cat /tmp/{marker}; "
        "mount -t tmpfs none /usr 2>&1; mount -o remount,rw /usr 2>&1; echo end",
        limits=SHORT,
    )
    assert "WROTE" not in reply["stdout"], reply
    assert reply["stdout"].startswith("inside\n")  # its own /tmp, in memory
    assert reply["stdout"].endswith("end\n")
    assert "Read-only file system" in reply["stderr"]
    for path in (
        host_tmp,
        Path("/") / marker,
        Path("/usr") / marker,
        workspace.parent / marker,
    ):
        assert not await asyncio.to_thread(path.exists), path


async def test_the_disk_cannot_be_filled_past_the_file_limit(workspace: Path) -> None:
    limit = 1024 * 1024
    limits = SandboxLimits(max_file_bytes=limit, tmp_bytes=limit, wall_seconds=15)
    reply = await shell(
        workspace,
        "dd if=/dev/zero of=big.bin bs=64k count=100; echo dd=$?; "
        "dd if=/dev/zero of=/tmp/a bs=64k count=10; dd if=/dev/zero of=/tmp/b bs=64k count=10;"
        " echo tmp=$?",
        limits=limits,
    )
    size = (await asyncio.to_thread((workspace / "big.bin").stat)).st_size
    assert size <= limit, size
    assert "dd=153" in reply["stdout"]  # SIGXFSZ (25) ended dd
    assert "No space left on device" in reply["stderr"]  # /tmp is bounded too
    code = await python(
        workspace, "open('py.bin', 'wb').write(b'0' * (4 * 1024 * 1024))", limits=limits
    )
    assert "File too large" in code["stderr"]
    assert (await asyncio.to_thread((workspace / "py.bin").stat)).st_size <= limit


# --- the network and local services --------------------------------------------------------


@pytest.fixture
async def tcp_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A real TCP server on 127.0.0.1 (a random port); the list records each connection."""
    connections: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.write(b"HOST-SERVICE-SECRET\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, connections


async def test_a_tcp_server_of_the_host_cannot_be_reached(
    workspace: Path, tcp_server: tuple[int, list[str]]
) -> None:
    port, connections = tcp_server
    probe = (
        "import socket\n"
        f"for host in ('127.0.0.1', 'localhost', {socket.gethostname()!r}, '10.0.2.2', '1.1.1.1'):\n"
        "    try:\n"
        f"        s = socket.create_connection((host, {port}), timeout=1)\n"
        "        print('CONNECTED', host, s.recv(100))\n"
        "    except OSError as exc:\n"
        "        print('refused', host, type(exc).__name__)\n"
        "print(sorted(n for _, n in socket.if_nameindex()))"
    )
    reply = await python(workspace, probe, limits=SHORT)
    assert "CONNECTED" not in reply["stdout"], reply
    assert reply["stdout"].count("refused") == 5
    assert reply["stdout"].splitlines()[-1] == "['lo']"
    assert connections == []
    # The same server answers from the host: the test would have seen a connection.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readline() == b"HOST-SERVICE-SECRET\n"
    writer.close()


async def test_the_postgresql_socket_cannot_be_reached(
    workspace: Path, migrated_database_url: str
) -> None:
    settings = conninfo_to_dict(migrated_database_url)
    host, port = str(settings.get("host") or "/var/run/postgresql"), settings.get("port") or 5432
    if host.startswith("/"):
        socket_path = Path(host) / f".s.PGSQL.{port}"
        assert await asyncio.to_thread(socket_path.exists), socket_path  # it is there
        probe = (
            "import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(socket_path)!r}); print('CONNECTED')\n"
            "except OSError as exc:\n    print('refused', type(exc).__name__)"
        )
    else:  # a server on TCP (GATHERING_TEST_DATABASE_URL)
        probe = (
            f"import socket\ntry:\n    socket.create_connection(({host!r}, {port}), timeout=2)\n"
            "    print('CONNECTED')\nexcept OSError as exc:\n    print('refused', type(exc).__name__)"
        )
    reply = await python(workspace, probe, limits=SHORT)
    assert reply["stdout"].startswith("refused"), reply
    listing = await shell(workspace, f"ls -la {host} /var/run/postgresql /run", limits=SHORT)
    assert ".s.PGSQL" not in listing["stdout"]


# --- processes ------------------------------------------------------------------------------


async def test_a_fork_bomb_ends_and_the_host_stays_healthy(workspace: Path, marker: str) -> None:
    limits = SandboxLimits(max_processes=32, wall_seconds=2)
    started = time.monotonic()
    reply = await shell(
        workspace, f"bomb() {{ bomb | bomb & }}; bomb; sleep 60 # {marker}", limits=limits
    )
    bomb = await python(
        workspace,
        f"import os, time  # {marker}\nwhile True:\n    try:\n        os.fork()\n"
        "    except OSError:\n        time.sleep(0.01)",
        limits=limits,
    )
    assert time.monotonic() - started < 15  # each ended by its wall timeout, or sooner
    assert bomb["timed_out"], bomb
    assert reply["timed_out"] or "fork" in reply["stderr"].lower(), reply
    await _assert_nothing_left(marker)
    # The host still starts processes, and the sandbox still works.
    process = await asyncio.create_subprocess_exec("/bin/true")
    assert await process.wait() == 0
    after = await shell(workspace, "echo healthy", limits=SHORT)
    assert after["stdout"] == "healthy\n"


async def test_detached_processes_do_not_survive_the_timeout(workspace: Path, marker: str) -> None:
    seconds = marker.rsplit("-", 1)[-1]
    command = (
        f"setsid sh -c 'sleep {seconds}; : {marker}' & "
        f"nohup sh -c 'sleep {seconds}; : {marker}' >/dev/null 2>&1 & "
        f"(sh -c 'sleep {seconds}; : {marker}' &) ; "
        f"setsid -f sleep {seconds}; "
        f"sleep {seconds}"
    )
    reply = await shell(workspace, command, limits=SandboxLimits(wall_seconds=1.5))
    assert reply["timed_out"]
    await _assert_nothing_left(marker)


async def test_processes_left_behind_by_a_finished_command_are_killed(
    workspace: Path, marker: str
) -> None:
    seconds = marker.rsplit("-", 1)[-1]
    reply = await shell(
        workspace,
        f"setsid -f sh -c 'sleep {seconds}; : {marker}'; "
        f"nohup sh -c 'sleep {seconds}; : {marker}' >/dev/null 2>&1 & echo left",
        limits=SHORT,
    )
    assert (reply["exit_code"], reply["stdout"], reply["timed_out"]) == (0, "left\n", False)
    await _assert_nothing_left(marker)


async def test_nothing_survives_a_cancelled_call(workspace: Path, marker: str) -> None:
    seconds = marker.rsplit("-", 1)[-1]
    task = asyncio.create_task(
        shell(workspace, f"setsid -f sleep {seconds}; sleep {seconds} # {marker}", limits=SHORT)
    )
    for _ in range(100):
        if await asyncio.to_thread(_sandbox_processes, marker):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_nothing_left(marker)


async def test_host_processes_cannot_be_signalled_or_traced(workspace: Path) -> None:
    reply = await shell(
        workspace,
        f"kill -0 {os.getpid()}; echo kill=$?; kill -9 1; echo init=$?; "
        "cat /proc/1/status | grep -E '^Uid'",
        limits=SHORT,
    )
    assert "kill=1" in reply["stdout"], reply  # no such process in its namespace
    assert "init=1" in reply["stdout"]
    assert reply["exit_code"] == 0


async def test_no_user_namespace_of_its_own_and_no_setuid_root(workspace: Path) -> None:
    """Nested user namespaces would give the command root (and capabilities) over namespaces
    of its own, a common first step of kernel exploits; setuid programs must not raise it."""
    reply = await shell(
        workspace,
        "unshare -U true; echo user=$?; unshare -rm true; echo root=$?; "
        "mount -t tmpfs none /workspace; echo mount=$?; su -c id root; echo su=$?",
        limits=SHORT,
    )
    codes = dict(line.split("=") for line in reply["stdout"].split())
    assert all(code != "0" for code in codes.values()), reply
    assert "No space left on device" in reply["stderr"]  # user.max_user_namespaces is 0
