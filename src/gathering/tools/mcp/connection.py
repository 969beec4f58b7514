"""`McpConnection`: one live connection to one MCP server, kept up by a supervisor task.

The supervisor connects (starting a stdio server's process), lists the server's tools, then
checks it every `CHECK_SECONDS`; when the connection dies it reconnects with exponential backoff
(`BACKOFF_FIRST` doubling to `BACKOFF_MAX`, with jitter). The tools of the last listing stay
known while it reconnects, so an agent keeps them and a call waits for the server to come back
(within the call's own deadline) instead of failing at once.

A call the connection dropped mid-way is repeated after the reconnection only for a `read`
server: for `write` and `external` the outcome is unknown, and the model is told so.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import structlog
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation, Tool

from gathering import __version__
from gathering.config import get_settings
from gathering.errors import GatheringError, ToolFailedError, ToolTimeoutError
from gathering.tools.egress import EgressPolicy, check_url
from gathering.tools.mcp.http import guarded_client
from gathering.tools.mcp.servers import McpServer

log = structlog.get_logger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first reconnection; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30.0
CHECK_SECONDS = 10.0  # a connected server is checked this often
CHECK_TIMEOUT = 10.0
MAX_TOOL_PAGES = 20  # tools/list pages read from one server
MAX_TOOLS = 256  # tools taken from one server; the rest are left out (and logged)
CLOSE_ATTEMPTS, CLOSE_WAIT = 20, 0.5  # cancellations of a supervisor, and the wait after each
CLIENT_INFO = Implementation(name="gathering", version=__version__)

State = Literal["idle", "connecting", "ready", "down", "closed"]


class ConnectionLostError(Exception):
    """The connection to the server ended during a request."""


@dataclass(frozen=True)
class Health:
    """What a connection is doing, as the API and the CLI show it."""

    state: State
    tools: int
    last_error: str | None
    connected_at: float | None  # time.time() of the current connection
    reconnects: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "tools": self.tools,
            "last_error": self.last_error,
            "connected_at": self.connected_at,
            "reconnects": self.reconnects,
        }


def _describe(exc: BaseException) -> str:
    """One line about why a connection attempt or a request failed."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    text = str(exc) or type(exc).__name__
    if isinstance(exc, MCPError):
        text = exc.error.message
    return f"{type(exc).__name__}: {text}"[:300]


def _lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection itself ended (not that the request failed)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_lost(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    return isinstance(
        exc,
        (ConnectionLostError, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError),
    )


class McpConnection:
    """The connection of one process to one MCP server (see the module docstring).

    `start()` is idempotent; `close()` stops the supervisor and the server's process.
    """

    def __init__(self, server: McpServer, *, egress: EgressPolicy | None = None) -> None:
        self.server = server
        self.egress = egress
        self.state: State = "idle"
        self.tools: tuple[Tool, ...] = ()  # of the last listing (kept while reconnecting)
        self.last_error: str | None = None
        self.connected_at: float | None = None
        self.reconnects = 0
        self.listings = 0  # listings taken up: one per connection, one per change seen
        self.last_used = time.monotonic()  # when a call or an agent's turn last wanted it
        self._live: Client | None = None
        self._ready = asyncio.Event()
        self._tried = asyncio.Event()  # set once the first attempt ended, either way
        self._check = asyncio.Event()  # a request saw the connection fail: check now
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<McpConnection {self.server.name} {self.state}>"

    def health(self) -> Health:
        return Health(
            self.state, len(self.tools), self.last_error, self.connected_at, self.reconnects
        )

    def start(self) -> None:
        """Start the supervisor (connects in the background)."""
        if self._task is None and self.state != "closed":
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"mcp:{self.server.name}"
            )

    async def first_attempt(self, seconds: float) -> None:
        """Wait (at most `seconds`) until the first connection attempt ended."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._tried.wait()

    async def close(self) -> None:
        """Stop reconnecting, close the connection (and stop a stdio server's process).

        The SDK's task groups may swallow one cancellation (one already under way when a
        server died), so the supervisor is cancelled until it has ended, a bounded number of
        times; it also stops by itself once it sees the state `closed`."""
        self.state = "closed"
        task, self._task = self._task, None
        if task is None:
            return
        for _ in range(CLOSE_ATTEMPTS):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CLOSE_WAIT)
            if done:
                return
        log.error("an MCP connection did not stop", server=self.server.name)

    # --- the supervisor -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, and reconnect with backoff, until `close()`."""
        delay = BACKOFF_FIRST
        while self.state != "closed":
            self.state = "connecting"
            listed = self.listings
            try:
                await self._connected_session()
            except Exception as exc:  # an ExceptionGroup too, from the SDK's task groups
                self.last_error = _describe(exc)
                log.warning(
                    "MCP server connection ended", server=self.server.name, error=self.last_error
                )
            finally:
                self._live = None
                self._ready.clear()
                self.connected_at = None
                self._tried.set()
            if self.state == "closed":  # type: ignore[comparison-overlap]  # set by close()
                return
            if self.listings > listed:  # it had connected: start the backoff over
                delay = BACKOFF_FIRST
            self.state = "down"
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            delay = min(delay * 2, BACKOFF_MAX)
            self.reconnects += 1

    async def _client(self) -> Client:
        server = self.server
        if server.transport == "stdio":
            assert server.command is not None
            params = StdioServerParameters(
                command=server.command, args=list(server.args), env=dict(server.env) or None
            )
            return Client(params, client_info=CLIENT_INFO, cache=None)
        assert server.url is not None
        # Made in a thread: the TLS context it creates reads the CA certificates from disk.
        http = await asyncio.to_thread(guarded_client, self.egress, server.headers)
        return Client(
            streamable_http_client(server.url, http_client=http),
            client_info=CLIENT_INFO,
            cache=None,
        )

    async def _connected_session(self) -> None:
        """Connect, list the tools, serve requests until the connection fails."""
        timeout = get_settings().mcp_connect_timeout
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(timeout):
                if self.server.url is not None and self.egress is not None:
                    await check_url(self.server.url, self.egress)  # a clear error, up front
                client = await stack.enter_async_context(await self._client())
                self.tools = await _list_tools(client)
            if self.state == "closed":
                return
            self.listings += 1
            self._live = client
            self.state = "ready"
            self.last_error = None
            self.connected_at = time.time()
            self._ready.set()
            self._tried.set()
            log.info("MCP server connected", server=self.server.name, tools=len(self.tools))
            await self._watch(client)

    async def _watch(self, client: Client) -> None:
        """Check the server every `CHECK_SECONDS`, or at once when a request saw trouble, by
        listing its tools again (the 2026-07-28 protocol has no ping; a changed listing is
        taken up); return (raise) when it does not answer."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_SECONDS):
                    await self._check.wait()
            self._check.clear()
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    tools = await _list_tools(client)
            except TimeoutError:
                raise ConnectionLostError("the server did not answer in time") from None
            if tools != self.tools:
                self.tools = tools
                self.listings += 1
            if self._live is None:  # a request's trouble was not the connection's
                self._live = client
                self._ready.set()

    # --- requests -----------------------------------------------------------------------------

    async def _ready_client(self, deadline: float) -> Client:
        """The connected client, waiting for a reconnection until `deadline` (monotonic)."""
        self.start()
        if self.state == "closed":
            raise ToolFailedError(f"MCP server {self.server.name!r}: the connection is closed")
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                while self._live is None:
                    await self._ready.wait()
        except TimeoutError:
            raise ToolTimeoutError(
                f"MCP server {self.server.name!r} is not reachable"
                + (f" ({self.last_error})" if self.last_error else ""),
                hint="it is reconnected automatically; check that the server runs "
                "(GET /mcp/servers shows its state), then try again",
            ) from None
        assert self._live is not None
        return self._live

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, deadline: float
    ) -> CallToolResult:
        """Call the server's `tool`; a dropped connection is retried once the server is back
        only when the server's effect is `read` (see the module docstring)."""
        self.last_used = time.monotonic()
        repeated = False
        while True:
            client = await self._ready_client(deadline)
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    return await client.call_tool(tool, dict(arguments))
            except TimeoutError:
                raise ToolTimeoutError(
                    f"MCP server {self.server.name!r} did not answer the call of {tool!r} in time",
                    hint="raise the tool timeout (GATHERING_TOOL_TIMEOUT), or give it less work",
                ) from None
            except GatheringError:
                raise
            except Exception as exc:
                if not _lost(exc):
                    raise ToolFailedError(
                        f"MCP server {self.server.name!r} refused the call of {tool!r}: "
                        f"{_describe(exc)}"
                    ) from None
                self._lost_connection(client)
                if self.server.effect == "read" and not repeated:
                    repeated = True  # once: a call that keeps losing it is not retried forever
                    continue
                if self.server.effect == "read":
                    raise ToolFailedError(
                        f"the connection to MCP server {self.server.name!r} was lost during "
                        f"the call of {tool!r}, twice",
                        hint="the server is being reconnected; try again later",
                    ) from None
                raise ToolFailedError(
                    f"the connection to MCP server {self.server.name!r} was lost during "
                    f"the call of {tool!r}: its outcome is unknown, so it was not repeated",
                    hint="check whether it took effect before calling it again; the "
                    "server is being reconnected",
                ) from None

    def _lost_connection(self, client: Client) -> None:
        """A request saw the connection end: forget the client, have the supervisor check."""
        if self._live is client:
            self._live = None
            self._ready.clear()
        self._check.set()


def _loop_time(deadline: float) -> float:
    """A `time.monotonic()` deadline on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


async def _list_tools(client: Client) -> tuple[Tool, ...]:
    """The server's tools (at most `MAX_TOOLS`, from at most `MAX_TOOL_PAGES` pages)."""
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None or len(tools) >= MAX_TOOLS:
            break
    if len(tools) > MAX_TOOLS:
        log.warning("an MCP server lists too many tools", kept=MAX_TOOLS, listed=len(tools))
    _skip_output_validation(client, tools)
    return tuple(tools[:MAX_TOOLS])


def _skip_output_validation(client: Client, tools: list[Tool]) -> None:
    """Have the SDK treat every listed tool as one without an output schema: it would check
    structured results with the pure-Python `jsonschema` on the event loop, where a server's
    backtracking `pattern` could stall the whole process. The model reads a result's text."""
    schemas: dict[str, Any] = client.session._tool_output_schemas
    for tool in tools:
        schemas[tool.name] = None
    client.session._tool_output_validators.clear()
