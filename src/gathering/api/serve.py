"""`gathering serve`: the API server under uvicorn, with a draining shutdown; and `gathering
openapi`, its schema.

The commands build the app, so it lives with the API; `gathering.cli` holds the rest of the
command line and stays below this layer. `main` is the `gathering` script and
`python -m gathering`: the whole command line, `serve` included.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from uvicorn.supervisors import ChangeReload

from gathering import cli
from gathering.api.draining import DrainingServer
from gathering.api.mcp_server import command as _mcp_command  # noqa: F401 - `mcp serve`
from gathering.api.routers.ws import MAX_FRAME_CHARS
from gathering.config import Settings

app = cli.app


def _exit_cleanly(signum: int, frame: object) -> None:
    sys.exit(0)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000]")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes")] = False,
) -> None:
    """Run the API server (with the embedded database unless DATABASE_URL is set)."""
    settings, host, port = cli.prepare_to_serve(host, port)
    # uvicorn re-raises the exit signal it caught under the handler it found installed:
    # make that handler a clean exit, so a graceful SIGTERM shutdown exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if reload:
        _serve_reloading(settings, host, port)
        return
    # Imported here: `gathering.api.app` builds its module-level app from the environment's
    # settings on import, which must not happen before the CLI can report bad settings.
    from gathering.api.app import create_app

    application = create_app(settings=settings)
    config = uvicorn.Config(application, **_server_options(settings, host, port))
    DrainingServer(config, application.state.gathering.drain, settings.shutdown_timeout).run()


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file, not stdout")
    ] = None,
) -> None:
    """Print the server's OpenAPI schema (JSON), as `GET /openapi.json` serves it; the
    dashboard's typed client is generated from it (`make dashboard-client`)."""
    settings = cli.settings_or_exit()
    from gathering.api.app import create_app

    document = json.dumps(create_app(settings=settings).openapi(), indent=2, ensure_ascii=False)
    if output is None:
        typer.echo(document)
    else:
        output.write_text(document + "\n", encoding="utf-8")


def _server_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for `serve`, with or without --reload."""
    return {
        "host": host,
        "port": port,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout),
        # uvicorn reads a whole frame before the app sees it: never more than the largest
        # frame the app accepts (MAX_FRAME_CHARS characters, 4 bytes each at most in UTF-8).
        "ws_max_size": 4 * MAX_FRAME_CHARS,
    }


def _serve_reloading(settings: Settings, host: str, port: int) -> None:
    """`serve --reload`: uvicorn rebuilds the app in a subprocess on every change. The child
    reads its settings from the environment, so the bind host and port go there (the Host
    allow-list includes the bind host), and its server drains on the signal like `serve`."""
    os.environ["GATHERING_HOST"], os.environ["GATHERING_PORT"] = host, str(port)
    config = uvicorn.Config(
        "gathering.api.app:create_app",
        factory=True,
        reload=True,
        **_server_options(settings, host, port),
    )
    server = DrainingServer(config, None, settings.shutdown_timeout)
    ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()


def main() -> None:
    """Entry point of the `gathering` script and `python -m gathering`."""
    cli.main()
