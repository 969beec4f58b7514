"""A project's terminal: an interactive shell on a PTY, inside the OS sandbox.

    terminal = await open_project_terminal(project, settings, cols=80, rows=24)
    await terminal.write("ls\\n")
    text = await terminal.read()        # decoded output; None once every process has ended
    terminal.resize(cols=120, rows=40)
    code = await terminal.wait()        # the shell's exit code, once it exited by itself
    await terminal.close()              # kills the shell and every process of the sandbox

The shell (bash, else sh) runs in the sandbox of the `shell` tool (`gathering.tools.sandbox`:
uid 65534 in a user namespace, read-only system, no host process visible, rlimits) with the
project's directory read-write at /workspace, and the network off unless the project's
`settings.allow_network` is true (then it shares the host's network). Unlike the tool's
sandbox, it keeps its PTY as controlling terminal (job control, Ctrl-C, SIGWINCH); the PTY is
its own. It never starts on a directory that holds the server's data directory, its embedded
database or the projects root, and without bubblewrap it refuses (`FeatureUnavailableError`).

Nothing blocks the event loop: bubblewrap is started on the PTY in a worker thread (a fork
and an exec), the PTY is read and written through the loop's `add_reader`/`add_writer` on the
non-blocking master, and its exit is seen through a pidfd. Output is decoded as UTF-8
incrementally (a character split between two reads is never split in two), invalid bytes
replaced. At most OUTPUT_BUFFER_BYTES of output wait for `read()`; past that the PTY is not
read, so the shell blocks on its next write (a slow reader holds the shell back instead of
growing memory). Input waits likewise while more than INPUT_BUFFER_BYTES are unwritten.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import os
import signal
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
from ptyprocess import PtyProcess, PtyProcessError  # type: ignore[import-untyped]

from gathering.config import Settings
from gathering.errors import InvalidInputError, PermissionDeniedError
from gathering.projects.store import ProjectRecord
from gathering.tools.sandbox import SandboxLaunch, SandboxLimits, prepare_sandbox

log = structlog.get_logger(__name__)

# Every process of the sandbox inherits these (the project's builds and tests run here too);
# the terminal's own idle and total caps (settings) end it, so wall_seconds is not used.
TERMINAL_LIMITS: Final = SandboxLimits(
    cpu_seconds=3600,
    address_space_bytes=4 * 1024**3,
    max_processes=256,
    max_file_bytes=1024**3,
    max_open_files=1024,
    tmp_bytes=256 * 1024**2,
)
DEFAULT_COLS: Final = 80
DEFAULT_ROWS: Final = 24
MAX_COLS: Final = 1000
MAX_ROWS: Final = 1000
OUTPUT_BUFFER_BYTES: Final = 256 * 1024  # read from the PTY, not yet taken by `read()`
INPUT_BUFFER_BYTES: Final = 256 * 1024  # given to `write()`, not yet taken by the PTY
MAX_READ_CHARS: Final = 32 * 1024  # one `read()` joins chunks up to about this many characters
START_SECONDS: Final = 10.0  # to see bubblewrap's reason when it could not start
KILL_SECONDS: Final = 10.0  # for the kernel to end a killed sandbox

_READ_CHUNK: Final = 16 * 1024
_WRITE_CHUNK: Final = 4096
# The shells, as the sandbox sees them (it mounts the host's /usr; /bin is /usr/bin there).
_BASH: Final = ("/usr/bin/bash", "--noprofile", "--norc", "-i")
_SH: Final = ("/usr/bin/sh", "-i")
_TERMINAL_ENV: Final = {"TERM": "xterm-256color", "COLORTERM": "truecolor"}


class Terminal:
    """One shell on a PTY in the sandbox (made by `open_terminal`)."""

    def __init__(self, process: PtyProcess, launch: SandboxLaunch) -> None:
        self._process = process
        self._launch = launch
        self.pid: int = process.pid  # bubblewrap's, the leader of the sandbox's process group
        self._fd: int = process.fd
        self._loop = asyncio.get_running_loop()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._output: deque[tuple[str, int]] = deque()  # decoded text, and its bytes
        self._buffered = 0
        self._output_changed = asyncio.Event()
        self._reading = False
        self._end_of_output = False
        self._input = bytearray()
        self._input_room = asyncio.Event()
        self._input_room.set()
        self._writing = False
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._closed = False
        self._pidfd = os.pidfd_open(self.pid)  # Linux 5.3; bubblewrap 0.8 needs newer ones
        os.set_blocking(self._fd, False)
        os.set_inheritable(self._fd, False)
        self._loop.add_reader(self._pidfd, self._on_exit)
        self._start_reading()

    # --- output ---------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._end_of_output and not self._closed:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process that held the terminal is gone
            data = b""
        if data:
            text = self._decoder.decode(data)
            self._buffered += len(data)
            if self._buffered >= OUTPUT_BUFFER_BYTES:
                self._stop_reading()  # the reader is behind: hold the shell back
        else:
            text = self._decoder.decode(b"", final=True)
            self._end_of_output = True
            self._stop_reading()
        if text or data:
            self._output.append((text, len(data)))
        self._output_changed.set()

    async def read(self) -> str | None:
        """The output that came since the last call (waiting for some); None once the
        terminal has no process left and everything was read."""
        while True:
            while not self._output:
                if self._end_of_output or self._closed:
                    return None
                self._output_changed.clear()
                await self._output_changed.wait()
            parts: list[str] = []
            size = 0
            while self._output and (not parts or size + len(self._output[0][0]) <= MAX_READ_CHARS):
                text, taken = self._output.popleft()
                parts.append(text)
                size += len(text)
                self._buffered -= taken
            if self._buffered < OUTPUT_BUFFER_BYTES // 2:
                self._start_reading()
            if size:  # else only the first bytes of a character came: wait for the rest
                return "".join(parts)

    @property
    def pending_output_bytes(self) -> int:
        """Bytes read from the PTY that `read()` has not given yet."""
        return self._buffered

    def output_so_far(self) -> str:
        """Every output not yet read, at once (what bubblewrap said when it failed)."""
        text = "".join(text for text, _ in self._output)
        self._output.clear()
        self._buffered = 0
        return text

    # --- input ----------------------------------------------------------------------------

    async def write(self, data: str) -> None:
        """Type `data` into the terminal; waits while too much input is unwritten (the shell
        is not reading it). Input to a terminal that has ended is dropped."""
        if self._closed or self._end_of_output:
            return
        self._input += data.encode("utf-8", errors="replace")
        self._flush_input()
        while len(self._input) > INPUT_BUFFER_BYTES and not self._closed:
            self._input_room.clear()
            await self._input_room.wait()

    def _flush_input(self) -> None:
        while self._input and not self._closed:
            try:
                written = os.write(self._fd, self._input[:_WRITE_CHUNK])
            except BlockingIOError:
                break
            except OSError:  # the terminal is gone: nobody reads this input any more
                self._input.clear()
                break
            del self._input[:written]
        waiting = bool(self._input) and not self._closed
        if waiting and not self._writing:
            self._loop.add_writer(self._fd, self._flush_input)
            self._writing = True
        elif not waiting and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        if len(self._input) <= INPUT_BUFFER_BYTES or self._closed:
            self._input_room.set()

    def resize(self, *, cols: int, rows: int) -> None:
        """Set the terminal's size; its foreground programs get SIGWINCH."""
        _check_size(cols, rows)
        if not self._closed:
            self._process.setwinsize(rows, cols)

    # --- end ------------------------------------------------------------------------------

    def _on_exit(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        try:
            self._process.isalive()  # reaps it (WNOHANG) and keeps its status
        except PtyProcessError:  # reaped elsewhere: no status to keep
            log.warning("a terminal's bubblewrap was reaped elsewhere", pid=self.pid)
        if not self._exited.done():
            self._exited.set_result(None)
        self._output_changed.set()

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code (128 + N when a signal N ended it); None while it runs."""
        if not self._exited.done():
            return None
        if self._process.exitstatus is not None:
            return int(self._process.exitstatus)
        if self._process.signalstatus is not None:
            return 128 + int(self._process.signalstatus)
        return None

    async def wait(self) -> int | None:
        """Wait until bubblewrap has exited; the shell's exit code (see `exit_code`)."""
        await asyncio.shield(self._exited)
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the sandbox's process group (bubblewrap and its pid 1, whose death ends
        every process of the sandbox's pid namespace). Does not wait; `close()` does."""
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Kill the sandbox, wait for it to end and release the PTY; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._input.clear()
        self._input_room.set()
        self._output_changed.set()
        self.kill()
        try:
            async with asyncio.timeout(KILL_SECONDS):
                await asyncio.shield(self._exited)
        except TimeoutError:
            log.error("a killed terminal sandbox did not end", pid=self.pid)
        finally:
            if self._pidfd >= 0:
                self._loop.remove_reader(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = -1
            self._launch.close()
            # Closes the PTY and reaps bubblewrap, at once: it has exited.
            self._process.delayafterclose = 0.0
            await asyncio.to_thread(self._process.close, True)


def _check_size(cols: int, rows: int) -> None:
    for name, value, most in (("cols", cols, MAX_COLS), ("rows", rows, MAX_ROWS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise InvalidInputError(f"{name} must be a whole number from 1 to {most}")


def _default_signals() -> None:
    """In the child, before bubblewrap starts: the signals Python ignores (SIGPIPE, SIGXFSZ)
    back to their defaults, as `subprocess` does, so that `yes | head` and the file-size
    rlimit work as in any shell."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)


def _shell() -> tuple[tuple[str, ...], dict[str, str]]:
    """The shell's command line and variables: bash when the system has it, else sh.
    Blocking (a worker thread runs it)."""
    if os.access(_BASH[0], os.X_OK):
        return _BASH, {**_TERMINAL_ENV, "PS1": r"\w\$ "}
    return _SH, {**_TERMINAL_ENV, "PS1": "$ "}


def _kill_started(process: PtyProcess, launch: SandboxLaunch) -> None:
    """End a bubblewrap started on a PTY that no `Terminal` took: kill its process group,
    close its descriptors, reap it in a worker thread."""
    launch.close()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    asyncio.get_running_loop().run_in_executor(None, process.close, True)


def _kill_spawned(spawned: asyncio.Future[PtyProcess], launch: SandboxLaunch) -> None:
    """For a start cancelled while the thread spawned bubblewrap: end what it started."""
    if spawned.cancelled() or spawned.exception() is not None:
        launch.close()
    else:
        _kill_started(spawned.result(), launch)


async def open_terminal(
    directory: Path,
    *,
    network: bool,
    cols: int = DEFAULT_COLS,
    rows: int = DEFAULT_ROWS,
    bwrap: str = "bwrap",
) -> Terminal:
    """Start a shell in the sandbox with `directory` read-write at /workspace, on a PTY of
    `cols` x `rows`. Raises `FeatureUnavailableError` when no sandbox can start here."""
    _check_size(cols, rows)
    argv, env = await asyncio.to_thread(_shell)
    launch = await prepare_sandbox(
        argv,
        directory,
        limits=TERMINAL_LIMITS,
        network=network,
        terminal=True,
        env=env,
        bwrap=bwrap,
        # The server's own git (outside the sandbox) reads .git/config: a shell that could
        # rewrite it while the server's git runs could slip a filter in. Read-only here.
        read_only=(".git",),
    )
    spawn = functools.partial(
        PtyProcess.spawn,
        launch.argv,
        cwd="/",
        env=launch.env,
        dimensions=(rows, cols),
        pass_fds=launch.pass_fds,
        preexec_fn=_default_signals,
    )
    # In the loop's default executor: bubblewrap's --die-with-parent watches the thread that
    # forked it, and those threads live as long as the event loop (so does the terminal).
    spawned: asyncio.Future[PtyProcess] = asyncio.get_running_loop().run_in_executor(None, spawn)
    try:
        process = await asyncio.shield(spawned)
    except asyncio.CancelledError:
        spawned.add_done_callback(lambda done: _kill_spawned(done, launch))
        raise
    except BaseException:
        launch.close()
        raise
    launch.close_passed()
    try:
        terminal = Terminal(process, launch)
    except BaseException:
        _kill_started(process, launch)
        raise
    try:
        if not await launch.start(process.pid):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_SECONDS):
                    await terminal.wait()
            raise launch.failure(terminal.output_so_far().encode())
    except BaseException:
        await terminal.close()
        raise
    return terminal


def _holds(directory: Path, inner: Sequence[Path]) -> Path | None:
    """The first of `inner` that is `directory` or lies below it (real paths); blocking."""
    real = Path(os.path.realpath(directory))
    for path in inner:
        candidate = Path(os.path.realpath(path))
        if candidate == real or candidate.is_relative_to(real):
            return path
    return None


async def open_project_terminal(
    project: ProjectRecord,
    settings: Settings,
    *,
    cols: int = DEFAULT_COLS,
    rows: int = DEFAULT_ROWS,
) -> Terminal:
    """A terminal in `project`'s directory, with the network its settings allow; refused
    (`PermissionDeniedError`) when that directory holds the server's data directory, its
    embedded database or the folder of every project (GATHERING_PROJECTS_ROOT)."""
    inner = [settings.data_dir, settings.embedded_pgdata, settings.projects_directory]
    if await asyncio.to_thread(_holds, project.directory, inner) is not None:
        raise PermissionDeniedError(
            f"project {project.name!r} holds the server's own data; no terminal opens there",
            hint="register a directory of its own as the project",
        )
    return await open_terminal(
        project.directory, network=project.settings.allow_network, cols=cols, rows=rows
    )
