"""The OS sandbox for untrusted commands: bubblewrap namespaces, rlimits, a wall-clock kill.

`run_sandboxed(argv, workspace)` runs `argv` in a fresh set of namespaces (user, mount, pid,
network, IPC, UTS, cgroup) and returns a `SandboxResult`; it never runs anything unsandboxed.
Inside, the command sees only:

- `/usr` read-only, with `/bin`, `/sbin`, `/lib` and `/lib64` as the merged-usr symlinks;
- an `/etc` of its own: `/etc/alternatives` and `/etc/ld.so.cache` read-only (so `awk` and
  the dynamic linker work) and generated `passwd`, `group` and `hosts` files;
- a new `/proc` of its own pid namespace (no host process is visible), a minimal `/dev`;
- a `/tmp` (and `/dev/shm`) of its own, in memory, of at most `SandboxLimits.tmp_bytes`;
- the workspace, read-write, at `/workspace`, which is the working directory;
- no network (an own loopback only), and an environment of `PATH`, `HOME=/tmp`, `TMPDIR` and
  `LANG` alone: none of the server's variables.

It runs as uid and gid 65534 with no capabilities and `no_new_privs` (setuid programs do not
raise it), and cannot create user namespaces of its own (a common first step of kernel
exploits). On the host its
processes belong to an unprivileged uid too, never to root: when the server runs as root, the
sandbox's uid maps to host uid `host_uid` (65534 unless given), so the kernel applies
`RLIMIT_NPROC` to it (the kernel exempts host root from that limit, which would let a fork bomb
exhaust the machine's pids); the workspace folder, when root owns it, is handed to that uid
(its top folder only) so the command can create files there. Files the server wrote as root
stay root's: the command can read and replace them (rename), not rewrite them in place. When
the server is not root the sandbox's processes belong to the server's own uid on the host.

Limits (`SandboxLimits`) are rlimits of the sandbox's pid 1, set with prlimit(2) while
bubblewrap holds it back (`--block-fd`) before the command starts, so that every process
inside inherits them and none can raise them: CPU seconds, address space, file size, open
files and processes (and no core files). The process count is per sandbox: the kernel counts
it per user namespace, and each run has its own. A wall-clock timeout, output beyond
`max_output_bytes` or the caller's cancellation kill bubblewrap's process group: its pid 1
dies, and with it the kernel kills every process of the pid namespace, including those that
called `setsid`, `nohup` or forked twice. When the command exits, the same happens to
anything it left running.

As root, three util-linux programs help: `setpriv` (the drop to uid 65534 inside) and
`nsenter` with coreutils' `tee` (nested user namespaces forbidden, which bubblewrap's own
`--disable-userns` cannot do once we write the uid map ourselves).

`prepare_sandbox(argv, workspace, network=..., terminal=...)` gives the same sandbox to a
caller that starts bubblewrap itself (a project's terminal runs it on a PTY): with `network`
it shares the host's network (and reads its resolver and certificate files), with `terminal`
it keeps its controlling terminal (no `--new-session`), which must be a PTY of its own; the
server's git adds host folders bound at their own path (`outside`: a local remote) and, as
root, CAP_DAC_OVERRIDE (`override_permissions`) to write the server's files in the workspace.

`check_sandbox()` (async) and `sandbox_available()` say whether a sandbox can start here;
without bubblewrap, or where user namespaces are not allowed, every entry point raises
`FeatureUnavailableError` with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from gathering.errors import FeatureUnavailableError, InvalidInputError, NotFoundError

SANDBOX_UID: Final = 65534  # the uid and gid the command has inside the sandbox ("nobody")
SANDBOX_GID: Final = 65534
WORKSPACE_MOUNT: Final = "/workspace"
INSTALL_HINT: Final = "install bubblewrap: sudo apt-get install bubblewrap"
MIN_BWRAP_VERSION: Final = (0, 8)  # --disable-userns, --size
SETPRIV: Final = "/usr/bin/setpriv"  # util-linux: drops to the sandbox uid (server as root)
NSENTER: Final = "/usr/bin/nsenter"  # util-linux: forbids nested user namespaces (as root)
TEE: Final = "/usr/bin/tee"  # coreutils: writes that setting inside the sandbox's namespace
SANDBOX_TMP: Final = "/tmp"  # noqa: S108 - the sandbox's own in-memory folder, not the host's
SANDBOX_SHM: Final = "/dev/shm"  # noqa: S108 - likewise
SANDBOX_ENV: Final = {
    "PATH": "/usr/bin:/bin",
    "HOME": SANDBOX_TMP,
    "TMPDIR": SANDBOX_TMP,
    "LANG": "C.UTF-8",
}
OUTPUT_CUT_MARKER: Final = "\n[output cut: more than {limit} bytes; the command was stopped]"
MAX_FILE_DATA: Final = 60 * 1024  # of a file added to the sandbox (`files`): a pipe's worth
MAX_ARGUMENT_BYTES: Final = 128 * 1024 - 1  # Linux refuses a longer single argument (E2BIG)
SETUP_SECONDS: Final = 10.0  # bubblewrap's own namespace set-up, before the command starts
DRAIN_SECONDS: Final = 2.0  # reading what is left in the pipes once the sandbox is gone

_HOST_ENV: Final = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bubblewrap's own, on the host
_READ_CHUNK: Final = 65536
_VERSION = re.compile(rb"(\d+)\.(\d+)(?:\.(\d+))?")
_NAMESPACE_HINT: Final = (
    "bubblewrap needs user namespaces: allow them (sudo sysctl -w "
    "kernel.unprivileged_userns_clone=1 or user.max_user_namespaces=10000; on Ubuntu 24.04 "
    "the AppArmor profile of bwrap), or run the server outside a container that forbids them"
)
_PASSWD: Final = (
    "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
    f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/tmp:/bin/sh\n"
)
_GROUP: Final = f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\n"
_HOSTS: Final = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
_GENERATED_ETC: Final = frozenset({"/etc/passwd", "/etc/group", "/etc/hosts"})
# The top folders of the sandbox's own layout, where no host folder may be bound.
_SANDBOX_TOPS: Final = frozenset(
    {"", "usr", "bin", "sbin", "lib", "lib64", "etc", "proc", "dev", WORKSPACE_MOUNT.strip("/")}
)
# With the network on: name resolution and the certificate authorities, read-only.
_NETWORK_ETC: Final = (
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)


@dataclass(frozen=True)
class SandboxLimits:
    """The resource limits of one sandboxed run.

    `cpu_seconds`, `address_space_bytes`, `max_file_bytes` and `max_open_files` are rlimits of
    each process inside; `max_processes` counts the processes and threads of this sandbox
    alone (not of other sandboxes); `tmp_bytes` bounds each in-memory folder (`/tmp`, `/dev/shm`);
    `wall_seconds` and `max_output_bytes` (stdout and stderr together) end the whole run.
    """

    cpu_seconds: int = 30
    address_space_bytes: int = 1024 * 1024 * 1024
    max_processes: int = 64
    max_file_bytes: int = 64 * 1024 * 1024
    wall_seconds: float = 60.0
    max_output_bytes: int = 1024 * 1024
    max_open_files: int = 256
    tmp_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "cpu_seconds",
            "address_space_bytes",
            "max_processes",
            "max_file_bytes",
            "max_output_bytes",
            "max_open_files",
            "tmp_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"sandbox limit {name} must be a whole number >= 1")
        if not isinstance(self.wall_seconds, int | float) or not self.wall_seconds > 0:
            raise InvalidInputError("sandbox limit wall_seconds must be a number > 0")


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended.

    `exit_code` is the command's exit status; a command ended by a signal N (an rlimit's
    SIGKILL or SIGXFSZ, say) reports 128 + N, as a shell does. When the run was stopped from
    outside (`timed_out`, `killed_for_output`, or the caller cancelled) `exit_code` is None
    and `signal` is the signal that stopped it. `stdout` and `stderr` are decoded as UTF-8
    (invalid bytes replaced); the stream that passed the output limit ends with a marker.
    """

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed_for_output: bool
    duration: float

    @property
    def truncated(self) -> bool:
        """Whether output was cut (the run was stopped for it)."""
        return self.killed_for_output


@dataclass(frozen=True)
class _Bubblewrap:
    path: str
    version: tuple[int, ...]


_checked_bubblewraps: dict[str, _Bubblewrap] = {}
_working_sandboxes: set[str] = set()


async def _bubblewrap(bwrap: str) -> _Bubblewrap:
    """The bubblewrap named `bwrap` (a command or a path) once it is known to be usable:
    installed, recent enough, with util-linux's helpers beside it."""
    known = _checked_bubblewraps.get(bwrap)
    if known is not None:
        return known
    path = await asyncio.to_thread(shutil.which, bwrap)
    if path is None:
        raise FeatureUnavailableError(
            f"the sandbox needs bubblewrap, and {bwrap!r} was not found; untrusted code "
            "never runs unsandboxed",
            hint=INSTALL_HINT,
        )
    process = await asyncio.create_subprocess_exec(
        path,
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_HOST_ENV,
    )
    output, _ = await process.communicate()
    found = _VERSION.search(output)
    version = tuple(int(part) for part in found.groups() if part) if found else (0,)
    if process.returncode != 0 or version < MIN_BWRAP_VERSION:
        shown = ".".join(map(str, version)) if found else "unknown"
        raise FeatureUnavailableError(
            f"the sandbox needs bubblewrap {'.'.join(map(str, MIN_BWRAP_VERSION))} or later; "
            f"{path} is version {shown}",
            hint=INSTALL_HINT + " (from a release that ships 0.8 or later, e.g. Debian 12)",
        )
    helpers = [SETPRIV, NSENTER, TEE] if os.geteuid() == 0 else []
    missing = [
        helper
        for helper, present in zip(
            helpers,
            await asyncio.gather(
                *(asyncio.to_thread(os.access, helper, os.X_OK) for helper in helpers)
            ),
            strict=True,
        )
        if not present
    ]
    if missing:
        raise FeatureUnavailableError(
            f"the sandbox needs {' and '.join(missing)}, which is missing",
            hint="install util-linux: sudo apt-get install util-linux",
        )
    checked = _Bubblewrap(path, version)
    _checked_bubblewraps[bwrap] = checked
    return checked


def _workspace_folder(workspace: Path, owner: tuple[int, int] | None) -> str:
    """The real path of the workspace folder, checked; blocking (a worker thread runs it).

    With `owner` (the server runs as root), a workspace folder that root owns is handed to
    the sandbox's host uid, so that the command may create files in it."""
    path = os.path.realpath(workspace)
    if len(Path(path).parts) < 3:
        raise InvalidInputError(
            f"the sandbox workspace {str(workspace)!r} is {path!r}, a top-level folder",
            hint="give each workspace a folder of its own, e.g. <data dir>/workspaces/<name>",
        )
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"the sandbox workspace {path!r} does not exist") from None
    except NotADirectoryError:
        raise InvalidInputError(f"the sandbox workspace {path!r} is not a folder") from None
    try:
        if owner is not None and os.fstat(descriptor).st_uid == 0:
            os.fchown(descriptor, *owner)
    finally:
        os.close(descriptor)
    return path


def _data_pipe(text: str | bytes) -> int:
    """The read end of a pipe holding `text` (bubblewrap copies it into a file); at most
    `MAX_FILE_DATA` bytes, which an empty pipe takes at once."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > MAX_FILE_DATA:
        raise InvalidInputError(f"a file given to the sandbox is over {MAX_FILE_DATA} bytes")
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


@dataclass
class _Descriptors:
    """The pipes between us and bubblewrap: ours to read or write, and the ends it gets."""

    status: int = -1  # we read bubblewrap's JSON status (the command's exit code)
    info: int = -1  # we read the pid of the sandbox's pid 1
    block: int = -1  # we write one byte once the uid map is written (server as root)
    start: int = -1  # we write one byte to let the command start, its rlimits set
    passed: list[int] = field(default_factory=list)  # the ends bubblewrap inherits

    def close_passed(self) -> None:
        for descriptor in self.passed:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self.passed.clear()

    def close(self) -> None:
        self.close_passed()
        for name in ("status", "info", "block", "start"):
            descriptor = getattr(self, name)
            if descriptor >= 0:
                with contextlib.suppress(OSError):
                    os.close(descriptor)
                setattr(self, name, -1)


def _pipe_to_bubblewrap(descriptors: _Descriptors, *, bubblewrap_reads: bool) -> tuple[int, int]:
    """A pipe: (our end, bubblewrap's end); bubblewrap's end is recorded to pass on."""
    read_end, write_end = os.pipe()
    ours, theirs = (write_end, read_end) if bubblewrap_reads else (read_end, write_end)
    descriptors.passed.append(theirs)
    return ours, theirs


def _set_rlimits(pid: int, limits: SandboxLimits) -> None:
    """Set the rlimits of the sandbox's pid 1, which every process of the sandbox inherits;
    it waits (bubblewrap's `--block-fd`) until we let the command start."""
    for kind, value in (
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.address_space_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_FSIZE, limits.max_file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.prlimit(pid, kind, (value, value))


def _read_only_folders(
    workspace: str, names: Sequence[str], descriptors: _Descriptors
) -> list[tuple[str, int]]:
    """Each of `names` (folders at the top of the workspace) that is a real folder, opened
    without following a symlink: bubblewrap binds what the descriptor holds, so a symlink
    swapped in after this look is never what it mounts."""
    found: list[tuple[str, int]] = []
    if not names:
        return found
    root = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise InvalidInputError(f"{name!r} is not a folder name of the workspace")
            try:
                flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                descriptor = os.open(name, flags, dir_fd=root)
            except OSError:  # missing, a file, or a symlink: nothing to protect there
                continue
            descriptors.passed.append(descriptor)
            found.append((name, descriptor))
    finally:
        os.close(root)
    return found


@dataclass(frozen=True)
class SharedFolder:
    """A host folder the sandbox sees at `path` (absolute): the folder `descriptor` holds (an
    open O_PATH descriptor, the caller's to close), else the one at `path` when the sandbox is
    prepared; read-only unless `writable`."""

    path: str
    writable: bool = False
    descriptor: int | None = None


def _outside_folders(
    folders: Sequence[SharedFolder], descriptors: _Descriptors
) -> list[tuple[int, str, bool]]:
    """Each of `folders` opened (or its descriptor copied): the sandbox binds what the
    descriptor holds, never a path looked up again later."""
    found: list[tuple[int, str, bool]] = []
    for folder in folders:
        path = folder.path
        if not os.path.isabs(path) or ".." in path.split("/") or "\x00" in path:
            raise InvalidInputError(f"{path!r} is not an absolute folder path to share")
        target = "/" + os.path.normpath(path).lstrip("/")  # "//tmp" is "/tmp"
        top = target.split("/")[1]
        if top in _SANDBOX_TOPS or target == SANDBOX_TMP:
            raise InvalidInputError(
                f"{path!r} cannot be shared with the sandbox: it is where the sandbox has {top}",
                hint="move it to a folder outside /usr, /etc, /proc, /dev and /workspace",
            )
        try:
            if folder.descriptor is not None:
                descriptor = os.dup(folder.descriptor)
            else:
                descriptor = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise NotFoundError(f"the folder {path!r} cannot be shared: {exc.strerror}") from None
        descriptors.passed.append(descriptor)
        found.append((descriptor, target, folder.writable))
    return found


def _bubblewrap_argv(
    program: str,
    workspace: str,
    command: Sequence[str],
    limits: SandboxLimits,
    descriptors: _Descriptors,
    *,
    as_root: bool,
    network: bool = False,
    terminal: bool = False,
    env: Mapping[str, str] | None = None,
    read_only: Sequence[str] = (),
    outside: Sequence[tuple[int, str, bool]] = (),
    override_permissions: bool = False,
    files: Mapping[str, str | bytes] | None = None,
) -> list[str]:
    """The whole command line: bubblewrap's options, then (when the server is root) setpriv,
    which drops to the sandbox uid, then the command."""
    descriptors.status, status = _pipe_to_bubblewrap(descriptors, bubblewrap_reads=False)
    descriptors.info, info = _pipe_to_bubblewrap(descriptors, bubblewrap_reads=False)
    descriptors.start, start = _pipe_to_bubblewrap(descriptors, bubblewrap_reads=True)
    argv = [program, "--unshare-all", "--unshare-user", "--die-with-parent"]
    if network:
        argv.append("--share-net")
    if not terminal:
        # A session of its own, without a controlling terminal: nothing inside can push
        # keystrokes (TIOCSTI) into a terminal of the server's. A terminal sandbox keeps the
        # PTY it was started on (its own, never the server's) for job control and Ctrl-C.
        argv.append("--new-session")
    argv += ["--hostname", "sandbox", "--json-status-fd", str(status)]
    argv += ["--info-fd", str(info), "--block-fd", str(start)]
    if as_root:
        # The server is root: bubblewrap would map the sandbox's uid to host root, whom the
        # kernel exempts from RLIMIT_NPROC. Instead we write the uid map ourselves (0 -> 0 for
        # bubblewrap's own set-up, 65534 -> host_uid for the command) while it waits on
        # `block`, and setpriv drops to 65534 before the command runs.
        descriptors.block, block = _pipe_to_bubblewrap(descriptors, bubblewrap_reads=True)
        argv += ["--userns-block-fd", str(block)]
        argv += ["--uid", "0", "--gid", "0", "--cap-drop", "ALL"]
        for capability in ("SETUID", "SETGID", "SETPCAP", "DAC_READ_SEARCH"):  # setpriv's
            argv += ["--cap-add", f"CAP_{capability}"]
        if override_permissions:
            argv += ["--cap-add", "CAP_DAC_OVERRIDE"]
    else:
        argv += ["--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "sbin", "lib", "lib64"):
        argv += ["--symlink", f"usr/{link}", f"/{link}"]
    argv += ["--dir", "/etc"]
    for system_file in (
        "/etc/alternatives",
        "/etc/ld.so.cache",
        *(_NETWORK_ETC if network else ()),
    ):
        argv += ["--ro-bind-try", system_file, system_file]
    generated: dict[str, str | bytes] = {
        "/etc/passwd": _PASSWD,
        "/etc/group": _GROUP,
        "/etc/hosts": _HOSTS,
    }
    generated.update(files or {})
    for target, text in generated.items():
        if target.startswith("/etc/"):
            argv += _data_file(text, target, descriptors)
    if not override_permissions:
        # With the capability, the root-only files of a /proc (kernel memory maps, slab
        # details) would open to the command: it gets no /proc at all.
        argv += ["--proc", "/proc"]
    argv += ["--dev", "/dev"]
    for memory_folder in (SANDBOX_TMP, SANDBOX_SHM):
        argv += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", memory_folder]
    argv += ["--bind", workspace, WORKSPACE_MOUNT]
    for name, descriptor in _read_only_folders(workspace, read_only, descriptors):
        argv += ["--ro-bind-fd", str(descriptor), f"{WORKSPACE_MOUNT}/{name}"]
    made = {"/", SANDBOX_TMP}
    for descriptor, target, writable in outside:
        # Folders bubblewrap makes for a mount point are 0700 root's: open them to the command
        # (git's access(2) checks go without its capability).
        for parent in reversed(Path(target).parents):
            if str(parent) not in made:
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--bind-fd" if writable else "--ro-bind-fd", str(descriptor), target]
    for target, text in generated.items():
        if target.startswith(WORKSPACE_MOUNT + "/"):  # over a file of the workspace
            argv += _data_file(text, target, descriptors)
    argv += ["--chdir", WORKSPACE_MOUNT]
    argv += ["--remount-ro", "/", "--clearenv"]
    for name, value in {**SANDBOX_ENV, **(env or {})}.items():
        argv += ["--setenv", name, value]
    argv.append("--")
    if as_root:
        argv += [SETPRIV, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups"]
        kept = ",+dac_override" if override_permissions else ""
        argv += [f"--bounding-set=-all{kept}", f"--inh-caps=-all{kept}"]
        if override_permissions:
            # access(2) drops the effective capabilities of a process that is not uid 0,
            # unless this bit is set: git checks folders with it before it opens them.
            argv.append("--securebits=+no_setuid_fixup")
        argv += [f"--ambient-caps=-all{kept}", "--"]
    return [*argv, *command]


def _data_file(text: str | bytes, target: str, descriptors: _Descriptors) -> list[str]:
    """bubblewrap's options that put a read-only file holding `text` at `target`."""
    data = _data_pipe(text)
    descriptors.passed.append(data)
    return ["--perms", "0444", "--ro-bind-data", str(data), target]


def _checked_command(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str) or not argv:
        raise InvalidInputError("the sandboxed command must be a non-empty list of arguments")
    command = list(argv)
    for argument in command:
        if not isinstance(argument, str):
            raise InvalidInputError("each argument of the sandboxed command must be text")
        if "\x00" in argument:
            raise InvalidInputError("an argument of the sandboxed command contains a NUL")
        try:
            encoded = os.fsencode(argument)
        except UnicodeEncodeError:
            raise InvalidInputError(
                "an argument of the sandboxed command is not valid Unicode text"
            ) from None
        if len(encoded) > MAX_ARGUMENT_BYTES:
            raise InvalidInputError(
                f"an argument of the sandboxed command is longer than {MAX_ARGUMENT_BYTES} bytes",
                hint="write long programs to a file in the workspace and run that file",
            )
    return command


async def _read_to_end(descriptor: int) -> bytes:
    """All that a pipe gives until its writers close it (our end is closed after)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    pipe: IO[bytes] = os.fdopen(descriptor, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    try:
        return await reader.read()
    finally:
        transport.close()


def _json_documents(data: bytes) -> list[dict[str, object]]:
    """The JSON objects bubblewrap wrote one after the other on a status pipe."""
    decoder, text, position = json.JSONDecoder(), data.decode(errors="replace"), 0
    found: list[dict[str, object]] = []
    while True:
        start = text.find("{", position)
        if start < 0:
            return found
        try:
            document, position = decoder.raw_decode(text, start)
        except ValueError:
            return found
        if isinstance(document, dict):
            found.append(document)


def _adopt(pid: int, monitor: int, host_ids: tuple[int, int] | None) -> int | None:
    """Check that `pid` is the child of our bubblewrap (`monitor`), the sandbox's pid 1; with
    `host_ids` (server as root) map its new user namespace, 0 -> 0 for bubblewrap's own set-up
    and the sandbox's 65534 -> `host_ids`, and return an open descriptor of that namespace
    (ours to close). Blocking (a worker thread runs it).

    The child waits for us, so its pid cannot have been reused unless it was killed from
    outside; the namespace is opened before its parent is checked, and a map can only be
    written once, to a namespace just made."""
    namespace = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC) if host_ids else None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        if parent != monitor:
            raise ProcessLookupError(pid)
        if host_ids is not None:
            for kind, host_id, inside in (
                ("uid", host_ids[0], SANDBOX_UID),
                ("gid", host_ids[1], SANDBOX_GID),
            ):
                with open(f"/proc/{pid}/{kind}_map", "w", encoding="ascii") as id_map:
                    id_map.write(f"0 0 1\n{inside} {host_id} 1\n")
    except BaseException:
        if namespace is not None:
            os.close(namespace)
        raise
    return namespace


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL bubblewrap's process group: its monitor and the sandbox's pid 1, whose death
    makes the kernel kill every other process of the sandbox's pid namespace."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


class _Output:
    """stdout and stderr, read as they come, with one byte budget for both together."""

    def __init__(self, process: asyncio.subprocess.Process, limit: int) -> None:
        self.process = process
        self.limit = limit
        self.left = limit
        self.cut_in: str | None = None  # the stream that passed the limit
        self.data = {"stdout": bytearray(), "stderr": bytearray()}

    async def drain(self, name: str, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        sink = self.data[name]
        while chunk := await stream.read(_READ_CHUNK):
            if self.cut_in is not None:
                continue  # the sandbox is being killed; read on to the end of the pipe
            if len(chunk) > self.left:
                sink += chunk[: self.left]
                self.left = 0
                self.cut_in = name
                _kill(self.process)
            else:
                sink += chunk
                self.left -= len(chunk)

    def text(self, name: str) -> str:
        text = self.data[name].decode("utf-8", errors="replace")
        if self.cut_in == name:
            text += OUTPUT_CUT_MARKER.format(limit=self.limit)
        return text


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stream.write(data)
            await stream.drain()
    stream.close()


async def run_sandboxed(
    argv: Sequence[str],
    workspace: Path,
    *,
    limits: SandboxLimits = SandboxLimits(),
    stdin: str | None = None,
    network: bool = False,
    bwrap: str = "bwrap",
    host_uid: int = SANDBOX_UID,
    host_gid: int = SANDBOX_GID,
) -> SandboxResult:
    """Run `argv` (a program path and its arguments; no host shell) in the sandbox, with
    `workspace` read-write at /workspace, and return how it ended.

    `stdin` is written to the command's standard input (closed after; empty when None).
    `network=True` is refused: the egress allow-list does not reach inside the sandbox yet.
    `bwrap` names bubblewrap (a command on PATH or a path). `host_uid`/`host_gid` are the host
    identity of the sandbox's processes when the server runs as root (ignored otherwise).

    Raises `FeatureUnavailableError` when no sandbox can start here (bubblewrap missing or too
    old, user namespaces not allowed), `InvalidInputError`/`NotFoundError` for a bad command
    or workspace. Cancelling the call kills the sandbox.
    """
    if network:
        raise FeatureUnavailableError(
            "network access from the sandbox is not available yet: the egress allow-list "
            "does not reach inside it",
            hint="run the command without network, or use the web tools for HTTP requests",
        )
    stdin_data = stdin.encode("utf-8", "replace") if stdin is not None else None
    launch = await prepare_sandbox(
        argv, workspace, limits=limits, bwrap=bwrap, host_uid=host_uid, host_gid=host_gid
    )
    descriptors = launch.descriptors
    try:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=launch.env,
            cwd="/",
            pass_fds=launch.pass_fds,
            start_new_session=True,
        )
    except BaseException:
        launch.close()
        raise
    launch.close_passed()
    try:
        return await _supervise(process, descriptors, limits, stdin_data, started, launch.host_ids)
    finally:
        _kill(process)
        await process.wait()
        launch.close()


@dataclass
class SandboxLaunch:
    """A sandbox ready to start, for a caller that starts bubblewrap itself (on a PTY, say).

    Run `argv` on the host with the environment `env`, from `/`, as the leader of a new
    session, letting it inherit the descriptors `pass_fds` (made inheritable); then call
    `close_passed()`, and `await start(pid)` with the pid of that process: it sets the
    sandbox's rlimits and lets the command run (False when bubblewrap ended first: `failure`
    turns its stderr into the error). Bubblewrap's exit status is the command's (128 + N for
    a signal N). `close()` closes every descriptor, once the process has ended; it is
    idempotent. Killing the process group of `pid` kills the whole sandbox.
    """

    argv: list[str]
    env: dict[str, str]
    limits: SandboxLimits
    host_ids: tuple[int, int] | None
    descriptors: _Descriptors

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return tuple(self.descriptors.passed)

    def close_passed(self) -> None:
        self.descriptors.close_passed()

    async def start(self, pid: int) -> bool:
        return await _start_command(self.descriptors, pid, self.limits, self.host_ids)

    def failure(self, said: bytes) -> FeatureUnavailableError:
        """The error for a sandbox that ended before its command started, from what
        bubblewrap said (its stderr)."""
        return _sandbox_failed(said)

    def close(self) -> None:
        self.descriptors.close()


async def prepare_sandbox(
    argv: Sequence[str],
    workspace: Path,
    *,
    limits: SandboxLimits = SandboxLimits(),
    network: bool = False,
    terminal: bool = False,
    env: Mapping[str, str] | None = None,
    bwrap: str = "bwrap",
    host_uid: int = SANDBOX_UID,
    host_gid: int = SANDBOX_GID,
    read_only: Sequence[str] = (),
    outside: Sequence[SharedFolder] = (),
    override_permissions: bool = False,
    files: Mapping[str, str | bytes] | None = None,
) -> SandboxLaunch:
    """The command line and descriptors that run `argv` in the sandbox, with `workspace`
    read-write at /workspace (`run_sandboxed` runs it; see `SandboxLaunch` to run it yourself).

    `network=True` shares the host's network (no egress policy applies: the caller decides);
    `terminal=True` keeps the controlling terminal the sandbox is started on, which must be a
    PTY of its own (job control, Ctrl-C); `env` adds variables to `SANDBOX_ENV`;
    `read_only` names folders at the top of the workspace mounted read-only (those that are
    real folders when the sandbox is prepared); `outside` lists host folders (`SharedFolder`)
    bound at their own path; `files` adds read-only files (a path in `/etc`, or in
    /workspace over a file there -> its text). `override_permissions` (the server runs as
    root) lets the command keep one capability, CAP_DAC_OVERRIDE, so that it can write the
    files the server wrote as root in the workspace (the server's own git does); such a
    command gets no /proc, and its workspace folder keeps its owner. `limits`' `wall_seconds`
    and `max_output_bytes` are the caller's to apply. Raises as `run_sandboxed`.
    """
    command = _checked_command(argv)
    if host_uid < 1 or host_gid < 1:
        raise InvalidInputError("the sandbox's host uid and gid must not be root's (0)")
    for name, value in (env or {}).items():
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise InvalidInputError(f"the sandbox variable {name!r} is not a valid one")
    for path in files or {}:
        in_etc = re.fullmatch(r"/etc/[A-Za-z0-9._-]+", path) and path not in _GENERATED_ETC
        in_workspace = path.startswith(WORKSPACE_MOUNT + "/") and ".." not in path.split("/")
        if not (in_etc or in_workspace) or "\x00" in path:
            raise InvalidInputError(f"{path!r} is not a file the sandbox may add")
    found = await _bubblewrap(bwrap)
    as_root = os.geteuid() == 0
    host_ids = (host_uid, host_gid) if as_root else None
    give_away = None if override_permissions else host_ids  # the capability writes anyway
    folder = await asyncio.to_thread(_workspace_folder, Path(workspace), give_away)
    descriptors = _Descriptors()
    try:
        full_argv = _bubblewrap_argv(
            found.path,
            folder,
            command,
            limits,
            descriptors,
            as_root=as_root,
            network=network,
            terminal=terminal,
            env=env,
            read_only=read_only,
            outside=await asyncio.to_thread(_outside_folders, outside, descriptors),
            override_permissions=override_permissions,
            files=files,
        )
        for descriptor in descriptors.passed:
            os.set_inheritable(descriptor, True)
    except BaseException:
        descriptors.close()
        raise
    return SandboxLaunch(full_argv, dict(_HOST_ENV), limits, host_ids, descriptors)


async def _supervise(
    process: asyncio.subprocess.Process,
    descriptors: _Descriptors,
    limits: SandboxLimits,
    stdin_data: bytes | None,
    started: float,
    host_ids: tuple[int, int] | None,
) -> SandboxResult:
    """Wait for the run to end (or stop it), reading its output; then say how it ended."""
    output = _Output(process, limits.max_output_bytes)
    readers = [
        asyncio.create_task(output.drain("stdout", process.stdout)),
        asyncio.create_task(output.drain("stderr", process.stderr)),
    ]
    status_descriptor, descriptors.status = descriptors.status, -1
    status_task = asyncio.create_task(_read_to_end(status_descriptor))
    feeder = asyncio.create_task(_feed(process.stdin, stdin_data or b""))
    tasks = [*readers, status_task, feeder]
    timed_out = False
    try:
        if not await _start_command(descriptors, process.pid, limits, host_ids):
            await process.wait()
            await asyncio.wait(readers, timeout=DRAIN_SECONDS)
            raise _sandbox_failed(output.data["stderr"])
        try:
            remaining = limits.wall_seconds - (time.monotonic() - started)
            async with asyncio.timeout(max(remaining, 0)):
                await process.wait()
        except TimeoutError:
            timed_out = True
            _kill(process)
            await process.wait()
        # The sandbox is gone, so its pipes close: take what they still hold, boundedly.
        await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    duration = time.monotonic() - started
    finished = status_task.done() and not status_task.cancelled()
    status = _json_documents(status_task.result()) if finished else []
    exit_codes = [code for doc in status if isinstance(code := doc.get("exit-code"), int)]
    returncode = process.returncode
    exit_code: int | None = None
    stop_signal: int | None = None
    if returncode is not None and returncode < 0:  # bubblewrap itself was killed
        stop_signal = -returncode
    elif timed_out or output.cut_in is not None or returncode is None:
        stop_signal = int(signal.SIGKILL)
    elif exit_codes:
        exit_code = exit_codes[0]
    else:  # bubblewrap ended before the command started
        raise _sandbox_failed(output.data["stderr"])
    return SandboxResult(
        exit_code=exit_code,
        signal=stop_signal,
        stdout=output.text("stdout"),
        stderr=output.text("stderr"),
        timed_out=timed_out,
        killed_for_output=output.cut_in is not None,
        duration=duration,
    )


async def _start_command(
    descriptors: _Descriptors,
    monitor: int,
    limits: SandboxLimits,
    host_ids: tuple[int, int] | None,
) -> bool:
    """Read the sandbox's pid 1 from bubblewrap; when the server is root, map its user
    namespace and forbid nested ones (while bubblewrap mounts the sandbox's folders); set
    its rlimits; then let the command start. False when bubblewrap ended before that."""
    info_descriptor, descriptors.info = descriptors.info, -1
    try:
        async with asyncio.timeout(SETUP_SECONDS):
            info = _json_documents(await _read_to_end(info_descriptor))
    except TimeoutError:
        raise FeatureUnavailableError(
            f"bubblewrap did not set up the sandbox within {SETUP_SECONDS:g} seconds",
            hint="check the machine's load, then `bwrap --version`",
        ) from None
    pid = info[0].get("child-pid") if info else None
    if not isinstance(pid, int):
        return False
    try:
        namespace = await asyncio.to_thread(_adopt, pid, monitor, host_ids)
    except OSError:  # bubblewrap's child ended meanwhile: its stderr says why
        return False
    try:
        if namespace is not None:
            try:
                _release(descriptors, "block")
                await _forbid_nested_user_namespaces(namespace)
            finally:
                os.close(namespace)
        _set_rlimits(pid, limits)
        _release(descriptors, "start")
    except (ProcessLookupError, BrokenPipeError):  # bubblewrap ended meanwhile (a mount failed)
        return False
    return True


def _release(descriptors: _Descriptors, name: str) -> None:
    """Write the byte bubblewrap waits for on one of its blocking pipes, and close it."""
    descriptor = getattr(descriptors, name)
    setattr(descriptors, name, -1)
    try:
        os.set_blocking(descriptor, False)  # one byte into an empty pipe
        os.write(descriptor, b"1")
    finally:
        os.close(descriptor)


async def _forbid_nested_user_namespaces(namespace: int) -> None:
    """Set `user.max_user_namespaces` to 0 in the sandbox's user namespace (bubblewrap's
    `--disable-userns`, which cannot be combined with writing the uid map ourselves): the
    command cannot create namespaces of its own, a frequent first step of kernel exploits.
    The setting is per user namespace, so it is written by a process that entered it."""
    process = await asyncio.create_subprocess_exec(
        NSENTER,
        f"--user=/proc/self/fd/{namespace}",
        "--",
        TEE,
        "/proc/sys/user/max_user_namespaces",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_HOST_ENV,
        pass_fds=[namespace],
    )
    _, error = await process.communicate(b"0\n")
    if process.returncode != 0:
        raise FeatureUnavailableError(
            "the sandbox could not forbid nested user namespaces: "
            + error.decode(errors="replace").strip(),
            hint="run the server as a user other than root, or report this with `uname -r`",
        )


def _sandbox_failed(stderr: bytes | bytearray) -> FeatureUnavailableError:
    """The error for a bubblewrap that ended before the command started, with its words."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    said = next((line for line in lines if line.startswith("bwrap:")), lines[-1] if lines else "")
    about_namespaces = any(word in said for word in ("namespace", "uid map", "gid map"))
    return FeatureUnavailableError(
        f"the sandbox could not start: {said.strip() or 'bubblewrap failed'}",
        hint=_NAMESPACE_HINT
        if about_namespaces
        else "check that `bwrap --version` works and that the workspace folder is readable",
    )


async def check_sandbox(*, bwrap: str = "bwrap") -> None:
    """Start one empty sandbox; `FeatureUnavailableError` (with the fix as its hint) unless it
    works. Remembers a success for the rest of the process."""
    if bwrap in _working_sandboxes:
        return
    workspace = await asyncio.to_thread(tempfile.mkdtemp, prefix="gathering-sandbox-check-")
    try:
        result = await run_sandboxed(
            ["/bin/true"], Path(workspace), bwrap=bwrap, limits=SandboxLimits(wall_seconds=30)
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, workspace, True)
    if result.exit_code != 0:
        raise FeatureUnavailableError(
            f"a test sandbox ended with exit code {result.exit_code}: {result.stderr.strip()}",
            hint=_NAMESPACE_HINT,
        )
    _working_sandboxes.add(bwrap)


def sandbox_available(*, bwrap: str = "bwrap") -> bool:
    """Whether sandboxed tools can run here (`check_sandbox` succeeds). Blocks while it starts
    a test sandbox (tens of milliseconds, once per process): from async code, await
    `check_sandbox()` instead."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, check_sandbox(bwrap=bwrap)).result()
        except FeatureUnavailableError:
            return False
    return True
