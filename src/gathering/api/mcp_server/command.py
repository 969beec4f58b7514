"""`gathering mcp serve`: GatheRing as an MCP server, over stdio or streamable HTTP.

The command builds the server with the API's security, so it lives with the API and is
registered on the `mcp` group of `gathering.cli` (as `gathering serve` is on the app). The
SDK and the server are imported when the command runs, not when the command line starts.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from gathering import __version__, cli
from gathering.config import Settings, ensure_bind_allowed
from gathering.errors import AuthenticationError, InvalidInputError

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from gathering.auth.principal import Principal

DEFAULT_PORT = 8765  # not the API's 8000: both may run on one machine

Transport = Literal["stdio", "http"]


def _exit_cleanly(signum: int, frame: object) -> None:
    sys.exit(0)


@cli.mcp_app.command("serve")
def serve(
    transport: Annotated[
        Transport,
        typer.Option(
            help="stdio: an MCP client starts this command and talks over its stdin/stdout; "
            "http: listen for clients (streamable HTTP at /mcp)"
        ),
    ] = "stdio",
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind, with --transport http (default 127.0.0.1)"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help=f"Port, with --transport http (default {DEFAULT_PORT})"
        ),
    ] = None,
) -> None:
    """Serve GatheRing to MCP clients: chat with agents, search knowledge, recall memories.

    For Claude Desktop, IDEs and other agents. Multi-user mode (GATHERING_AUTH=required):
    over HTTP each request needs `Authorization: Bearer <API key or access token>`; over
    stdio the server acts for the user of the API key in GATHERING_API_KEY.
    """
    if transport == "stdio":
        if host is not None or port is not None:
            cli.fail(
                InvalidInputError(
                    "--host and --port are for --transport http; stdio talks over stdin/stdout",
                    hint="leave them out, or add --transport http",
                )
            )
        settings = cli.settings_or_exit()
        credential = os.environ.get("GATHERING_API_KEY")
        cli.run_async(lambda: _serve_stdio(settings, credential))
        return
    settings = cli.settings_or_exit(server=True)
    host = host or settings.host
    port = port or DEFAULT_PORT
    with cli.reported_errors():
        ensure_bind_allowed(settings, host)  # single-user mode (no login) stays on loopback
        settings = settings.model_copy(update={"host": host})  # the Host allow-list follows
        cli.check_port_free(host, port)
    signal.signal(signal.SIGTERM, _exit_cleanly)  # uvicorn re-raises it once it has stopped
    cli.run_async(lambda: _serve_http(settings, host, port))


async def _serve_stdio(settings: Settings, credential: str | None) -> None:
    from gathering.api.mcp_server.runtime import API_KEY_VARIABLE, McpRuntime
    from gathering.api.mcp_server.tools import build_server

    runtime = McpRuntime(settings)
    await runtime.start()
    try:
        principal = await runtime.stdio_principal(credential)

        async def caller_of(ctx: Context) -> Principal:
            # Checked again at each call: a key revoked (or a user disabled) since the start
            # stops working at once, as it does on the API.
            try:
                return await runtime.principal_for(credential)
            except AuthenticationError:
                raise AuthenticationError(
                    f"the API key in {API_KEY_VARIABLE} no longer works: revoked, expired, or "
                    "its user disabled",
                    hint="create a new key (POST /auth/api-keys), put it in the MCP client's "
                    "configuration of this server and restart it",
                ) from None

        who = principal.email if settings.auth_required else "the local owner (single-user mode)"
        source = f" (the API key in {API_KEY_VARIABLE})" if settings.auth_required else ""
        cli.err_console.print(
            f"GatheRing {__version__} MCP server on stdio, acting for {who}{source}",
            highlight=False,
            soft_wrap=True,
        )
        await build_server(runtime, caller_of).run_stdio_async()
    finally:
        await runtime.stop()


async def _serve_http(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from gathering.api.mcp_server.http_app import MCP_PATH, http_app, http_caller
    from gathering.api.mcp_server.runtime import McpRuntime
    from gathering.api.mcp_server.tools import build_server

    runtime = McpRuntime(settings)
    with cli.console.status("Preparing the database (first start initialises it)…"):
        await runtime.start()
    try:
        app = http_app(build_server(runtime, http_caller), runtime)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
        )
        shown = f"[{host}]" if ":" in host else host
        auth = (
            "each request needs `Authorization: Bearer <API key or access token>`"
            if settings.auth_required
            else "single-user mode: no login, this machine only"
        )
        cli.console.print(
            f"GatheRing {__version__} MCP server on http://{shown}:{port}{MCP_PATH}  ({auth})",
            highlight=False,
            soft_wrap=True,
        )
        await uvicorn.Server(config).serve()
    finally:
        await runtime.stop()
