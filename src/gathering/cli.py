"""The `gathering` command line."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gathering import __version__
from gathering.config import Settings, get_settings
from gathering.db import Database, Migration, MigrationStatus, discover_migrations, redact_url
from gathering.errors import GatheringError, StartupError
from gathering.observability import configure_logging

T = TypeVar("T")

app = typer.Typer(
    name="gathering",
    help="GatheRing: a collaborative multi-agent AI framework and server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: apply and inspect migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)


def fail(error: GatheringError) -> NoReturn:
    """Print `error` as one clear message (and its hint) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
    if error.hint:
        err_console.print(f"[dim]hint:[/] {error.hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn `GatheringError`s into a message and exit code 1, never a traceback."""
    try:
        yield
    except GatheringError as exc:
        fail(exc)


def settings_or_exit() -> Settings:
    """The settings, or a clear message per invalid one and exit code 1."""
    with reported_errors():
        settings = get_settings()
    configure_logging(settings)
    return settings


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from a sync command, reporting our errors cleanly."""

    async def runner() -> T:
        return await work()

    with reported_errors():
        return asyncio.run(runner())


async def _migrate(settings: Settings) -> tuple[str, list[Migration]]:
    async with Database(settings=settings, min_size=0, max_size=1) as db:
        return redact_url(db.url), await db.run_migrations()


async def _status(settings: Settings) -> tuple[str, MigrationStatus]:
    async with Database(settings=settings, min_size=0, max_size=1) as db:
        return redact_url(db.url), await db.migration_status()


def check_port_free(host: str, port: int) -> None:
    """Raise `StartupError` when `host:port` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use",
                    hint="stop the other process or choose another port with --port",
                ) from None
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="check --host (use 127.0.0.1 for this machine only)",
            ) from None


def _exit_cleanly(signum: int, frame: object) -> None:
    sys.exit(0)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000]")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes")] = False,
) -> None:
    """Run the API server (with the embedded database unless DATABASE_URL is set)."""
    settings = settings_or_exit()
    host = host or settings.host
    port = port or settings.port
    with reported_errors():
        check_port_free(host, port)
    with console.status("Preparing the database (first start initialises it)…"):
        url, applied = run_async(lambda: _migrate(settings))
    console.print(f"database [bold]{url}[/] ready ({len(applied)} migration(s) applied)")
    console.print(f"GatheRing {__version__} on http://{host}:{port}  (docs: /docs)")

    import uvicorn

    # uvicorn re-raises the exit signal it caught under the handler it found installed:
    # make that handler a clean exit, so a graceful SIGTERM shutdown exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if reload:
        uvicorn.run(
            "gathering.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            reload=True,
            log_config=None,
        )
        return
    from gathering.api.app import create_app
    from gathering.api.draining import DrainingServer

    application = create_app(settings=settings)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )
    DrainingServer(config, application.state.gathering.drain, settings.shutdown_timeout).run()


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    settings = settings_or_exit()
    with console.status("Applying migrations…"):
        url, applied = run_async(lambda: _migrate(settings))
    for migration in applied:
        console.print(f"applied [bold]{migration.filename}[/]")
    console.print(f"{url}: schema is current ({len(applied)} applied now)")


@db_app.command("status")
def db_status() -> None:
    """Show which migrations the database has."""
    settings = settings_or_exit()
    url, status = run_async(lambda: _status(settings))
    pending = {m.version for m in status.pending}
    table = Table(title=f"migrations of {url}")
    table.add_column("version", justify="right")
    table.add_column("name")
    table.add_column("state")
    for migration in discover_migrations():
        if migration.filename in status.changed:
            state = "[red]changed after apply[/]"
        elif migration.version in pending:
            state = "[yellow]pending[/]"
        else:
            state = "[green]applied[/]"
        table.add_row(f"{migration.version:04d}", migration.name, state)
    for version in status.unknown:
        table.add_row(f"{version:04d}", "?", "[red]unknown to this release[/]")
    console.print(table)
    console.print(f"pgvector: {'installed' if status.vector else 'not installed'}")
    console.print(status.problem() or "schema is current")


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"gathering {__version__}")


def main() -> None:
    """Entry point of the `gathering` script and `python -m gathering`."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
