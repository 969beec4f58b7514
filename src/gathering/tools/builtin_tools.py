"""The built-in tools, as agents see them: file tools on the agent's workspace, a calculator,
the web tools behind the egress policy, git, shell and python in the sandbox, and a read-only
SQL query on a configured database. The work is done by `gathering.tools.builtins`; this
module gives each its schema, its description for the model, its effect class and its policy
by default."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from gathering.config import Settings, get_settings
from gathering.db.database import EMBEDDED_DATABASE, Database
from gathering.tools.builtins import calculator, files, web
from gathering.tools.builtins import git as git_tool
from gathering.tools.builtins import shell as shell_tool
from gathering.tools.builtins import sql as sql_tool
from gathering.tools.context import ToolContext
from gathering.tools.egress import policy_from_settings
from gathering.tools.function import FunctionTool
from gathering.tools.sandbox import SandboxLimits
from gathering.tools.signature import function_tool

Offset = Annotated[int, Field(ge=0)]
Count = Annotated[int, Field(ge=1, le=files.MAX_LIST_LIMIT)]
Results = Annotated[int, Field(ge=1, le=files.MAX_SEARCH_RESULTS)]
WorkspacePath = Annotated[str, Field(max_length=4096)]


def _workspace(ctx: ToolContext) -> Path:
    """The call's workspace, created on first use (this runs on a tool thread)."""
    root = ctx.require_workspace()
    root.mkdir(parents=True, exist_ok=True)
    return root


def read_file(
    ctx: ToolContext, path: WorkspacePath, offset: Offset = 0, limit: Count | None = None
) -> str:
    """Read a text file of your workspace.

    Args:
        path: The file, relative to the workspace (e.g. notes/todo.md).
        offset: The first line to read, counting from 0.
        limit: How many lines to read; needed for files over 1 MiB.
    """
    return files.read_file(_workspace(ctx), path, offset, limit, deadline=ctx.deadline)


def write_file(
    ctx: ToolContext,
    path: WorkspacePath,
    content: Annotated[str, Field(max_length=files.MAX_WRITE_BYTES)],
    create_dirs: bool = True,
) -> dict[str, Any]:
    """Write a text file in your workspace, replacing it if it exists.

    Args:
        path: The file, relative to the workspace.
        content: The whole new text of the file.
        create_dirs: Create missing folders on the way.
    """
    return files.write_file(_workspace(ctx), path, content, create_dirs, deadline=ctx.deadline)


def list_files(
    ctx: ToolContext,
    path: WorkspacePath = ".",
    pattern: str | None = None,
    recursive: bool = False,
    limit: Count = 1000,
) -> list[dict[str, Any]]:
    """List the files and folders of a folder in your workspace.

    Args:
        path: The folder, relative to the workspace ("." for the workspace itself).
        pattern: Only names matching this glob (e.g. *.py).
        recursive: Include the folders beneath.
        limit: At most this many entries.
    """
    return files.list_files(_workspace(ctx), path, pattern, recursive, limit, deadline=ctx.deadline)


def search_files(
    ctx: ToolContext,
    pattern: Annotated[str, Field(min_length=1, max_length=files.MAX_PATTERN_CHARS)],
    path: WorkspacePath = ".",
    glob: str | None = None,
    ignore_case: bool = False,
    max_results: Results = 200,
) -> list[dict[str, Any]]:
    """Find the lines of files in your workspace that match a regular expression.

    Args:
        pattern: A Python regular expression.
        path: The folder to search, relative to the workspace.
        glob: Only files whose names match this glob (e.g. *.md).
        ignore_case: Match regardless of case.
        max_results: At most this many matching lines.
    """
    return files.search_files(
        _workspace(ctx), pattern, path, glob, ignore_case, max_results, deadline=ctx.deadline
    )


def apply_patch(
    ctx: ToolContext, patch: Annotated[str, Field(min_length=1, max_length=files.MAX_PATCH_BYTES)]
) -> dict[str, Any]:
    """Apply a unified diff to files in your workspace: all of it, or nothing if a part fails.

    Args:
        patch: The diff, with ---/+++ headers and @@ hunks; /dev/null adds or removes a file.
    """
    return files.apply_patch(_workspace(ctx), patch, deadline=ctx.deadline)


def calculate(
    expression: Annotated[str, Field(min_length=1, max_length=calculator.MAX_EXPRESSION_CHARS)],
) -> int | float:
    """Evaluate an arithmetic expression exactly (e.g. "2 * (3 + 4) ** 2" or "15% of 2500").

    Args:
        expression: Numbers, + - * / // % **, parentheses, abs, round, min, max, sqrt.
    """
    return calculator.evaluate(expression)


Url = Annotated[str, Field(min_length=1, max_length=8192)]


async def http_fetch(
    url: Url,
    method: Literal["GET", "POST"] = "GET",
    body: Annotated[str, Field(max_length=1024 * 1024)] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fetch a URL over HTTP or HTTPS (GET, or POST with a body) and return its status,
    headers and text. Private, loopback and cloud metadata addresses are refused.

    Args:
        url: An http:// or https:// URL.
        method: GET or POST.
        body: The request body of a POST.
        headers: Extra request headers: Accept, Accept-Language, Content-Type, Authorization.
    """
    return await web.http_fetch(method, url, body, headers, policy=policy_from_settings())


async def web_page(url: Url, format: Literal["markdown", "text"] = "markdown") -> dict[str, Any]:
    """Read a web page: its title and main text (as markdown or plain text), without the
    menus, ads and scripts around it.

    Args:
        url: An http:// or https:// URL.
        format: markdown, or plain text.
    """
    return await web.web_page(url, format, policy=policy_from_settings())


Ref = Annotated[str, Field(min_length=1, max_length=255)]
Name = Annotated[str, Field(min_length=1, max_length=255)]


async def git(
    ctx: ToolContext,
    command: Literal[
        "status", "diff", "log", "show", "add", "unstage", "commit", "branch", "checkout"
    ],
    repo: WorkspacePath = ".",
    paths: Annotated[list[WorkspacePath], Field(max_length=1000)] | None = None,
    ref: Ref | None = None,
    branch: Name | None = None,
    message: Annotated[str, Field(min_length=1, max_length=20_000)] | None = None,
    author_name: Name | None = None,
    author_email: Name | None = None,
    max_count: Annotated[int, Field(ge=1, le=1000)] | None = None,
    staged: bool = False,
    create: bool = False,
    delete: bool = False,
) -> dict[str, Any]:
    """Run a git command on a repository in your workspace (never a shell; hooks and
    repository settings that run programs are refused).

    Args:
        command: status, diff, log, show, add, unstage (take paths out of the index, keeping
            the files), commit, branch or checkout.
        repo: The repository's folder in the workspace.
        paths: Files to limit the command to (status, diff, log, show, add, unstage, commit,
            checkout).
        ref: A revision (diff and log also take a range a..b); checkout: what to switch to.
        branch: branch: the branch to create or delete; checkout: the branch to switch to.
        message: commit: the message.
        author_name: commit: the author's name.
        author_email: commit: the author's email.
        max_count: log: at most this many commits (20 by default).
        staged: diff: what is staged instead of the working tree.
        create: branch or checkout: create the branch.
        delete: branch: delete the branch.
    """
    root = await asyncio.to_thread(_workspace, ctx)
    return await git_tool.git(
        root,
        command,
        repo=repo,
        paths=paths,
        ref=ref,
        branch=branch,
        message=message,
        author_name=author_name,
        author_email=author_email,
        max_count=max_count,
        staged=staged,
        create=create,
        delete=delete,
        timeout=get_settings().tool_timeout,
    )


async def git_remote(
    ctx: ToolContext,
    command: Literal["push", "pull"],
    repo: WorkspacePath = ".",
    remote: Name | None = None,
    branch: Name | None = None,
) -> dict[str, Any]:
    """Push a branch to, or pull it (fast-forward only) from, a remote on the server's
    allow-list (GATHERING_GIT_ALLOWED_REMOTES).

    Args:
        command: push or pull.
        repo: The repository's folder in the workspace.
        remote: The remote's name (origin by default).
        branch: The branch (the current one by default).
    """
    root = await asyncio.to_thread(_workspace, ctx)
    settings = get_settings()
    return await git_tool.git(
        root,
        command,
        repo=repo,
        remote=remote,
        branch=branch,
        allowed_remotes=settings.git_allowed_remotes,
        forbidden=[settings.data_dir, settings.projects_directory],  # others' repositories
        timeout=settings.tool_timeout,
    )


async def shell(
    ctx: ToolContext,
    command: Annotated[str, Field(min_length=1, max_length=64 * 1024)],
    stdin: Annotated[str, Field(max_length=1024 * 1024)] | None = None,
) -> dict[str, Any]:
    """Run a shell command (sh) in your workspace, inside a sandbox: no network, nothing of
    the system writable but the workspace, limits on time, memory, processes and output.

    Args:
        command: The command line, e.g. "ls -la && wc -l *.txt".
        stdin: Text given to the command on its standard input.
    """
    root = await asyncio.to_thread(_workspace, ctx)
    return await shell_tool.shell(root, command, limits=_limits(ctx), stdin=stdin)


async def python(
    ctx: ToolContext, code: Annotated[str, Field(min_length=1, max_length=100 * 1024)]
) -> dict[str, Any]:
    """Run a Python program in your workspace, inside the same sandbox as shell (the standard
    library only; no network).

    Args:
        code: The program; print what you want to read.
    """
    root = await asyncio.to_thread(_workspace, ctx)
    return await shell_tool.python(root, code, limits=_limits(ctx))


async def sql_query(
    ctx: ToolContext,
    query: Annotated[str, Field(min_length=1, max_length=sql_tool.MAX_STATEMENT_CHARS)],
    max_rows: Annotated[int, Field(ge=1, le=sql_tool.MAX_ROWS)] = sql_tool.DEFAULT_ROWS,
) -> dict[str, Any]:
    """Run one read-only SQL statement (PostgreSQL) on the database the administrator set up
    for this tool, and return its columns and rows. Nothing can be changed: writes are
    refused, and the transaction is rolled back.

    Args:
        query: One statement, e.g. SELECT name, total FROM orders ORDER BY total DESC LIMIT 10.
        max_rows: At most this many rows come back; the answer says when there were more.
    """
    target = await _sql_target(get_settings(), ctx)
    return await sql_tool.run_query(query, target, max_rows=max_rows, deadline=ctx.deadline)


async def _sql_target(settings: Settings, ctx: ToolContext) -> sql_tool.SqlTarget:
    """Where sql_query connects, and the URLs of GatheRing's own database it must not read:
    DATABASE_URL (else the embedded server's) and the database the call came through."""
    own: list[str] = []
    if settings.sql_tool_url and not settings.sql_tool_allow_own_database:
        if settings.database_url:
            own.append(settings.database_url)
        else:
            own += await asyncio.to_thread(
                sql_tool.embedded_urls, settings.embedded_pgdata, EMBEDDED_DATABASE
            )
        if isinstance(ctx.db, Database) and ctx.db.is_connected:
            own.append(ctx.db.url)
    return sql_tool.SqlTarget(
        url=settings.sql_tool_url,
        own_urls=tuple(own),
        allow_own_database=settings.sql_tool_allow_own_database,
        max_seconds=settings.sql_tool_statement_timeout,
    )


def _limits(ctx: ToolContext) -> SandboxLimits:
    """The sandbox's limits, its wall time within the call's own."""
    wall = SandboxLimits().wall_seconds
    if ctx.deadline is not None:
        wall = max(min(wall, ctx.deadline - time.monotonic()), 0.1)
    return SandboxLimits(wall_seconds=wall)


def builtin_tools() -> list[FunctionTool]:
    """A fresh list of the built-in tools."""
    return [
        function_tool(read_file, effect="read", category="files"),
        function_tool(write_file, effect="write", category="files"),
        function_tool(list_files, effect="read", category="files"),
        function_tool(search_files, effect="read", category="files"),
        function_tool(apply_patch, effect="write", category="files"),
        function_tool(calculate, name="calculator", effect="read", category="math"),
        function_tool(http_fetch, effect="external", category="web"),
        function_tool(web_page, effect="read", category="web"),
        function_tool(git, effect="write", category="git"),
        function_tool(git_remote, effect="external", category="git"),
        function_tool(shell, effect="write", category="code", ask_first=True),
        function_tool(python, effect="write", category="code", ask_first=True),
        function_tool(sql_query, effect="read", category="data"),
    ]
