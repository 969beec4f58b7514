"""The `shell` and `python` tools: a command or a program run in the OS sandbox.

`shell(workspace, command)` runs `/bin/sh -c command` and `python(workspace, code)` runs
`/usr/bin/python3 -I -c code` (the system's Python, never the server's virtualenv), both
inside `gathering.tools.sandbox`: the workspace at /workspace (the working folder), no network,
a read-only system, rlimits, a wall-clock kill. The sandbox is the boundary: no command is
screened by words. Both return a JSON-ready dict:

    {"exit_code": 0, "stdout": "...", "stderr": "", "timed_out": False, "truncated": False}

`exit_code` is None when the run was stopped (time or output limit); a command ended by a
signal N has 128 + N, as in a shell. Without bubblewrap they raise `FeatureUnavailableError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from gathering.errors import InvalidInputError
from gathering.tools.sandbox import SandboxLimits, SandboxResult, run_sandboxed

MAX_COMMAND_BYTES: Final = 64 * 1024  # a shell command, in UTF-8
MAX_CODE_BYTES: Final = 100 * 1024  # a Python program, in UTF-8 (Linux takes 128 KiB per argument)
MAX_STDIN_BYTES: Final = 1024 * 1024
SHELL: Final = "/bin/sh"
PYTHON: Final = "/usr/bin/python3"


def _checked_text(what: str, text: object, limit: int, *, hint: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"the {what} must be text")
    if not text.strip() and what != "input":
        raise InvalidInputError(f"the {what} is empty")
    if "\x00" in text:
        raise InvalidInputError(f"the {what} contains a NUL character")
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidInputError(f"the {what} is longer than {limit} bytes", hint=hint)
    return text


def _reply(result: SandboxResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
    }


async def shell(
    workspace: Path,
    command: str,
    *,
    limits: SandboxLimits = SandboxLimits(),
    stdin: str | None = None,
) -> dict[str, Any]:
    """Run `command` with `/bin/sh -c` in the sandbox, in `workspace`; `stdin` is its input."""
    text = _checked_text(
        "command",
        command,
        MAX_COMMAND_BYTES,
        hint="write a long script to a file in the workspace, then run that file",
    )
    if stdin is not None:
        _checked_text("input", stdin, MAX_STDIN_BYTES, hint="write the input to a file instead")
    result = await run_sandboxed([SHELL, "-c", text], workspace, limits=limits, stdin=stdin)
    return _reply(result)


async def python(
    workspace: Path, code: str, *, limits: SandboxLimits = SandboxLimits()
) -> dict[str, Any]:
    """Run the Python program `code` (`python3 -I -c`) in the sandbox, in `workspace`."""
    text = _checked_text(
        "code",
        code,
        MAX_CODE_BYTES,
        hint="write the program to a .py file in the workspace, then run it with the shell",
    )
    result = await run_sandboxed([PYTHON, "-I", "-c", text], workspace, limits=limits)
    return _reply(result)
