"""The `gathering` command line."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

import pydantic
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gathering import __version__
from gathering.agents import Agent, AgentRecord, PostgresAgentStore, ToolStarted, TurnResult
from gathering.config import Settings, ensure_bind_allowed, get_settings, redact_credentials
from gathering.db import Database, Migration, MigrationStatus, discover_migrations, redact_url
from gathering.errors import GatheringError, InvalidInputError, NotFoundError, StartupError
from gathering.llm import TextDelta
from gathering.observability import configure_logging

if TYPE_CHECKING:
    from gathering.catalog.models import ModelRow
    from gathering.jobs import JobInfo, JobQueue, JobWorker
    from gathering.pipelines import Problem
    from gathering.pipelines.runs import RunRecord
    from gathering.tools.approvals import Approval

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
    """Print `error` as one clear message (and its hint) and exit non-zero. URL passwords are
    blanked (the message may quote a setting), and brackets print as written, not as markup."""
    message = escape(redact_credentials(error.message))
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if error.hint:
        hint = escape(redact_credentials(error.hint))
        err_console.print(f"[dim]hint:[/] {hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn `GatheringError`s (and values a model refuses) into a message and exit code 1,
    never a traceback."""
    try:
        yield
    except GatheringError as exc:
        fail(exc)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "value"
        fail(InvalidInputError(f"{where}: {first['msg']}"))


def settings_or_exit(*, server: bool = False) -> Settings:
    """The settings, or a clear message per invalid one and exit code 1.

    Commands other than `serve` log warnings and errors only, unless GATHERING_LOG_LEVEL
    asks for more: their own output says what they did.
    """
    with reported_errors():
        settings = get_settings()
    if not server and "GATHERING_LOG_LEVEL" not in os.environ:
        settings = settings.model_copy(update={"log_level": "WARNING"})
    configure_logging(settings)
    return settings


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from a sync command, reporting our errors cleanly."""

    async def runner() -> T:
        from gathering.tools.mcp import close_mcp_hub

        try:
            return await work()
        finally:
            await close_mcp_hub()  # stdio MCP servers the command started stop with it

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


def prepare_to_serve(host: str | None, port: int | None) -> tuple[Settings, str, int]:
    """What `gathering serve` does before it listens: check the address, bring the database
    up to date, create the first administrator; return the settings, host and port to serve.

    The command itself lives with the API (`gathering.api.serve`), which builds the app.
    """
    settings = settings_or_exit(server=True)
    host = host or settings.host
    port = port or settings.port
    with reported_errors():
        ensure_bind_allowed(settings, host)  # single-user mode (no login) stays on loopback
        settings = settings.model_copy(update={"host": host})  # the Host allow-list follows
        check_port_free(host, port)
    with console.status("Preparing the database (first start initialises it)…"):
        if settings.auto_migrate:
            url, applied = run_async(lambda: _migrate(settings))
            console.print(f"database [bold]{url}[/] ready ({len(applied)} migration(s) applied)")
        else:
            url, status = run_async(lambda: _status(settings))
            console.print(f"database [bold]{url}[/]: {status.problem() or 'schema is current'}")
    _announce_first_admin(settings)
    console.print(f"GatheRing {__version__} on http://{host}:{port}  (docs: /docs)")
    return settings, host, port


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


# --- users: accounts of multi-user mode --------------------------------------------------------

users_app = typer.Typer(help="Accounts (for GATHERING_AUTH=required).", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _announce_first_admin(settings: Settings) -> None:
    """On the first start without accounts, create the admin and show a generated password once."""
    from gathering.auth import admin

    created = run_async(lambda: admin.ensure_first_admin(settings))
    if created is None:
        return
    if created.generated_password is None:
        console.print(f"created administrator [bold]{created.user.email}[/]")
        return
    console.print(
        f"created administrator [bold]{created.user.email}[/] with password "
        f"[bold]{created.generated_password}[/]\n"
        "  (shown only now; change it with `gathering users reset-password`)",
        highlight=False,
    )


def _new_password(password: str | None, generate: bool) -> tuple[str, bool]:
    """The password to set: given, generated (then printed once), or typed at a hidden prompt."""
    from gathering.auth.passwords import check_password_policy, generate_password

    if generate:
        return generate_password(), True
    if password is None:
        password = str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    with reported_errors():
        check_password_policy(password)
    return password, False


PasswordOption = Annotated[
    str | None,
    typer.Option(help="The password (prompted, hidden, when omitted)", show_default=False),
]
GenerateOption = Annotated[
    bool, typer.Option("--generate-password", help="Generate a password and print it once")
]
RoleChoice = Literal["admin", "member", "viewer"]  # gathering.auth.users.Role, imported lazily
RoleOption = Annotated[RoleChoice, typer.Option(help="admin, member, or viewer (read-only)")]


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The account's email address")],
    password: PasswordOption = None,
    generate: GenerateOption = False,
    is_admin: Annotated[bool, typer.Option("--admin", help="Short for --role admin")] = False,
    role: RoleOption = "member",
) -> None:
    """Create an account."""
    from gathering.auth import admin

    settings = settings_or_exit()
    secret, generated = _new_password(password, generate)
    chosen = "admin" if is_admin else role
    user = run_async(lambda: admin.create_user(settings, email, secret, role=chosen))
    kind = "administrator" if user.role == "admin" else user.role
    console.print(f"created {kind} [bold]{user.email}[/] (id {user.id})")
    if generated:
        console.print(f"password: [bold]{secret}[/]  (shown only now)", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List the accounts."""
    from gathering.auth import admin

    settings = settings_or_exit()
    users = run_async(lambda: admin.list_users(settings))
    table = Table(title="users")
    for column in ("id", "email", "role", "state", "created", "last login"):
        table.add_column(column)
    for user in users:
        table.add_row(
            str(user.id),
            user.email,
            user.role,
            "active" if user.is_active else "[red]disabled[/]",
            f"{user.created_at:%Y-%m-%d %H:%M}",
            f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never",
        )
    console.print(table)


@users_app.command("disable")
def users_disable(email: Annotated[str, typer.Argument(help="The account's email")]) -> None:
    """Disable an account: its sessions end and its API keys are revoked."""
    from gathering.auth import admin

    settings = settings_or_exit()
    change = run_async(lambda: admin.set_user_active(settings, email, active=False))
    console.print(
        f"disabled [bold]{change.user.email}[/]; {change.sessions_revoked} session(s) ended,"
        f" {change.api_keys_revoked} API key(s) revoked"
    )


@users_app.command("enable")
def users_enable(email: Annotated[str, typer.Argument(help="The account's email")]) -> None:
    """Enable a disabled account."""
    from gathering.auth import admin

    settings = settings_or_exit()
    change = run_async(lambda: admin.set_user_active(settings, email, active=True))
    console.print(f"enabled [bold]{change.user.email}[/]")


@users_app.command("reset-password")
def users_reset_password(
    email: Annotated[str, typer.Argument(help="The account's email")],
    password: PasswordOption = None,
    generate: GenerateOption = False,
) -> None:
    """Set a new password; every session of the account ends, its API keys are revoked."""
    from gathering.auth import admin

    settings = settings_or_exit()
    secret, generated = _new_password(password, generate)
    change = run_async(lambda: admin.reset_password(settings, email, secret))
    console.print(
        f"password of [bold]{change.user.email}[/] changed; {change.sessions_revoked}"
        f" session(s) ended, {change.api_keys_revoked} API key(s) revoked"
    )
    if generated:
        console.print(f"password: [bold]{secret}[/]  (shown only now)", highlight=False)


@users_app.command("role")
def users_role(
    email: Annotated[str, typer.Argument(help="The account's email")],
    role: Annotated[RoleChoice, typer.Argument(help="admin, member, or viewer (read-only)")],
) -> None:
    """Change an account's role (admin, member, viewer); it applies to the next request."""
    from gathering.auth import admin

    settings = settings_or_exit()
    change = run_async(lambda: admin.set_user_role(settings, email, role))
    console.print(f"[bold]{change.user.email}[/] is now {change.user.role}")


agents_app = typer.Typer(help="Agents: list, create, delete.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


@asynccontextmanager
async def _agent_store(settings: Settings) -> AsyncIterator[PostgresAgentStore]:
    async with Database(settings=settings, min_size=0, max_size=2) as db:
        if settings.auto_migrate:
            await db.run_migrations()
        yield PostgresAgentStore(db)


OwnerOption = Annotated[
    str | None,
    typer.Option(
        "--owner",
        help="Email of the agent's owner; multi-user mode needs it to name or create an agent",
    ),
]


async def _owner_id(
    settings: Settings, store: PostgresAgentStore, owner: str | None, ref: str | None
) -> int | None:
    """The owner to act for (None: any owner). In multi-user mode names are per owner, so an
    agent named (not numbered) or created without `--owner` is refused, never guessed."""
    from gathering.auth.users import UserStore

    if owner is not None:
        return (await UserStore(store.db).require_by_email(owner)).id
    if not settings.auth_required or (ref is not None and ref.isdigit()):
        return None
    what = f"agent {ref!r}" if ref is not None else "a new agent"
    raise InvalidInputError(
        f"multi-user mode: whose {what}? Agent names are per owner",
        hint="add --owner EMAIL (`gathering users list` shows them), or give the agent's id",
    )


@agents_app.command("list")
def agents_list(owner: OwnerOption = None) -> None:
    """List agents (every owner's, or one owner's with --owner)."""
    settings = settings_or_exit()

    async def work() -> tuple[list[AgentRecord], dict[int, str]]:
        from gathering.auth.users import UserStore

        async with _agent_store(settings) as store:
            owner_id = await _owner_id(settings, store, owner, "") if owner else None
            users = await UserStore(store.db).list_users()
            return await store.list_agents(owner_id=owner_id), {u.id: u.email for u in users}

    records, emails = run_async(work)
    table = Table(title=f"{len(records)} agent(s)")
    for column in ("id", "name", "provider", "model", "role", "owner"):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record.id),
            escape(record.name),
            record.provider,
            record.model,
            escape(str(record.persona.get("role", ""))),
            escape(emails.get(record.owner_id or 0, "")) if settings.auth_required else "you",
        )
    console.print(table)


@agents_app.command("create")
def agents_create(
    name: Annotated[str, typer.Argument(help="The agent's name")],
    provider: Annotated[
        str | None, typer.Option(help="LLM provider [default: local unless an API key is set]")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model [default: the provider's]")] = None,
    role: Annotated[str, typer.Option(help="Persona role, e.g. 'code reviewer'")] = "",
    persona: Annotated[
        str | None,
        typer.Option(
            "--persona", help="Copy this persona of the library (`gathering personas list`)"
        ),
    ] = None,
    owner: OwnerOption = None,
) -> None:
    """Create an agent (its provider and model: the given ones, else the defaults, which
    `gathering settings` can change)."""
    settings = settings_or_exit()

    async def work() -> AgentRecord:
        from gathering.catalog.personas import Persona, get_persona
        from gathering.catalog.settings import default_model_of, default_provider

        async with _agent_store(settings) as store:
            chosen = provider or await default_provider(store.db)
            identity = (await get_persona(store.db, persona)).persona if persona else Persona()
            if role:
                identity = Persona.model_validate({**identity.model_dump(), "role": role})
            agent = Agent(
                name, chosen, model or await default_model_of(store.db, chosen), persona=identity
            )
            agent.owner_id = await _owner_id(settings, store, owner, None)
            return await store.create_agent(agent.record())

    record = run_async(work)
    console.print(
        f"created agent [bold]{record.name}[/] (id {record.id}, {record.provider}/{record.model})"
    )


@agents_app.command("delete")
def agents_delete(
    agent: Annotated[str, typer.Argument(help="Agent id or name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    owner: OwnerOption = None,
) -> None:
    """Delete an agent with its sessions, messages and workspace files."""
    settings = settings_or_exit()
    if not yes and not typer.confirm(f"Delete agent {agent!r} and all its conversations?"):
        raise typer.Exit(code=1)

    async def work() -> AgentRecord:
        from gathering.tools.agent_tools import remove_workspace

        async with _agent_store(settings) as store:
            owner_id = await _owner_id(settings, store, owner, agent)
            record = await store.load_agent(agent, owner_id=owner_id)
            assert record.id is not None
            await store.delete_agent(record.id)
            await remove_workspace(record.id, record.created_at)
            return record

    record = run_async(work)
    console.print(f"deleted agent [bold]{record.name}[/] (id {record.id})")


providers_app = typer.Typer(
    help="Model providers of the catalog (keys stored encrypted): list, add, remove, test.",
    no_args_is_help=True,
)
app.add_typer(providers_app, name="providers")
models_app = typer.Typer(
    help="Models of the catalog: context windows, max output, prices (shipped and overridden).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@asynccontextmanager
async def _catalog_db(settings: Settings) -> AsyncIterator[Database]:
    async with Database(settings=settings, min_size=0, max_size=2) as db:
        if settings.auto_migrate:
            await db.run_migrations()
        yield db


@providers_app.command("list")
def providers_list() -> None:
    """List the configured providers (keys masked; the environment's key wins)."""
    from gathering.catalog.providers import ProviderRecord, list_providers

    settings = settings_or_exit()

    async def work() -> list[ProviderRecord]:
        async with _catalog_db(settings) as db:
            return await list_providers(db)

    records = run_async(work)
    table = Table(title=f"{len(records)} provider(s)")
    for column in ("id", "name", "kind", "base_url", "key", "key source"):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record.id),
            record.name,
            record.kind,
            escape(record.base_url or ""),
            escape(record.key_mask or ""),
            record.key_source or "",
        )
    console.print(table)


@providers_app.command("add")
def providers_add(
    name: Annotated[str, typer.Argument(help="A unique name; agents naming it use this entry")],
    kind: Annotated[
        str, typer.Option(help="anthropic, openai, openai-compatible, ollama or local")
    ],
    base_url: Annotated[str | None, typer.Option(help="The server's address")] = None,
    key_stdin: Annotated[
        bool,
        typer.Option(
            "--key-stdin",
            help="Read the API key from standard input (never give it as an argument)",
        ),
    ] = False,
) -> None:
    """Add a provider; its key is stored encrypted with a key derived from the server's secret."""
    from functools import partial

    from gathering.auth.accounts import CLI_ACTOR
    from gathering.catalog.providers import ProviderRecord, add_provider
    from gathering.tools.egress import check_model_endpoint

    settings = settings_or_exit()
    key = sys.stdin.readline().strip() if key_stdin else None
    if key_stdin and not key:
        fail(InvalidInputError("--key-stdin: standard input held no key"))

    async def work() -> ProviderRecord:
        async with _catalog_db(settings) as db:
            return await add_provider(
                db,
                CLI_ACTOR,
                name,
                kind,
                base_url=base_url,
                key=key,
                check_address=partial(check_model_endpoint, resolve=False),
            )

    record = run_async(work)
    shown = f", key {record.key_mask}" if record.key_mask else ""
    console.print(f"added provider [bold]{record.name}[/] (id {record.id}, {record.kind}{shown})")


@providers_app.command("remove")
def providers_remove(
    name: Annotated[str, typer.Argument(help="The provider's name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Remove a provider and its stored key."""
    from gathering.auth.accounts import CLI_ACTOR
    from gathering.catalog.providers import ProviderRecord, provider_named, remove_provider

    settings = settings_or_exit()
    if not yes and not typer.confirm(f"Remove provider {name!r} and its key?"):
        raise typer.Exit(code=1)

    async def work() -> ProviderRecord:
        async with _catalog_db(settings) as db:
            record = await provider_named(db, name)
            return await remove_provider(db, CLI_ACTOR, record.id)

    record = run_async(work)
    console.print(f"removed provider [bold]{record.name}[/] (id {record.id})")


@providers_app.command("test")
def providers_test(
    name: Annotated[str, typer.Argument(help="The provider's name")],
    model: Annotated[str | None, typer.Option(help="The model [default: the kind's]")] = None,
) -> None:
    """Make one minimal call to a provider: its latency, or the error (exit code 1)."""
    from gathering.catalog.providers import ProviderTestResult, provider_named, run_provider_test
    from gathering.tools.egress import check_model_endpoint, model_endpoint_addresses

    settings = settings_or_exit()

    async def work() -> ProviderTestResult:
        async with _catalog_db(settings) as db:
            record = await provider_named(db, name)
            return await run_provider_test(
                db,
                record.id,
                model,
                check_address=check_model_endpoint,
                pin=model_endpoint_addresses,
            )

    result = run_async(work)
    if result.ok:
        console.print(f"ok: {name} answered with {result.model} in {result.latency_ms:.0f} ms")
        return
    error = result.error or {}
    err_console.print(
        f"[bold red]failed:[/] {escape(str(error.get('message')))} ({error.get('code')})",
        highlight=False,
        soft_wrap=True,
    )
    if error.get("hint"):
        err_console.print(f"[dim]hint:[/] {escape(str(error['hint']))}", highlight=False)
    raise typer.Exit(code=1)


def _money(value: float | None) -> str:
    """A price as given: 123456.789 stays whole, 0.1 + 0.2 reads 0.3."""
    return "" if value is None else f"{value:.12g}"


def _tokens(count: int | None) -> str:
    """A token count, short: 200000 as "200k", 1000000 as "1M", 8192 as is."""
    if not count:
        return ""
    for size, unit in ((1_000_000, "M"), (1000, "k")):
        if count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


@models_app.command("list")
def models_list(
    provider: Annotated[
        str | None, typer.Option(help="Only this provider kind or configured provider")
    ] = None,
) -> None:
    """List the models, a table per provider: the shipped prices (genai-prices' dated data)
    merged with admins' overrides."""
    from gathering.catalog.models import list_models
    from gathering.llm.pricing import PRICES_SOURCE

    settings = settings_or_exit()

    async def work() -> list[ModelRow]:
        async with _catalog_db(settings) as db:
            return await list_models(db, provider)

    rows = run_async(work)
    if not rows and provider is not None:
        fail(
            NotFoundError(
                f"no models of provider {provider!r}",
                hint="name a provider kind (anthropic, openai, ...) or a configured provider "
                "(`gathering providers list`); `gathering models list` lists them all",
            )
        )
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"{len(rows)} model(s), USD per 1M tokens; shipped: {PRICES_SOURCE}, {now}")
    for name in dict.fromkeys(row.provider for row in rows):  # one table per provider
        console.print(_models_table(name, [row for row in rows if row.provider == name]))


def _models_table(provider: str, rows: list[ModelRow]) -> Table:
    """A provider's models: the names whole when they fit, the numbers never cut."""
    table = Table(
        title=f"{escape(provider)}: {len(rows)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,  # no column rules, no edges: room for the names in 80 columns
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("model", overflow="fold")  # a name too long folds, whole
    for column in ("context", "max out", "input", "output", "cached", "source"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            escape(row.model),
            _tokens(row.context_window),
            _tokens(row.max_output),
            _money(row.input_per_million),
            _money(row.output_per_million),
            _money(row.cached_input_per_million),
            row.source,
        )
    return table


@models_app.command("price")
def models_price(
    provider: Annotated[str, typer.Argument(help="A provider kind or a configured provider")],
    model: Annotated[str, typer.Argument(help="The model")],
    input_price: Annotated[
        float | None, typer.Option("--input", help="Set: USD per million input tokens")
    ] = None,
    output_price: Annotated[
        float | None, typer.Option("--output", help="Set: USD per million output tokens")
    ] = None,
    cached_price: Annotated[
        float | None, typer.Option("--cached", help="Set: USD per million cached input tokens")
    ] = None,
    context_window: Annotated[int | None, typer.Option(help="Set: the context window")] = None,
    max_output: Annotated[int | None, typer.Option(help="Set: most tokens of one reply")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the override: back to the shipped values")
    ] = False,
) -> None:
    """Show the price and limits a model is charged and budgeted at; with --input/--output
    (and --cached, --context-window, --max-output) store an override; --reset removes it."""
    from gathering.auth.accounts import CLI_ACTOR
    from gathering.catalog.models import (
        ModelLimits,
        ModelPrice,
        ModelValues,
        model_limits,
        model_price,
        remove_model_override,
        set_model_override,
    )

    settings = settings_or_exit()
    values = ModelValues(context_window, max_output, input_price, output_price, cached_price)
    changing = values != ModelValues()
    if reset and changing:
        fail(InvalidInputError("--reset removes the override: give it alone"))

    async def work() -> tuple[ModelPrice | None, ModelLimits | None]:
        async with _catalog_db(settings) as db:
            if reset:
                await remove_model_override(db, CLI_ACTOR, provider, model)
            elif changing:
                await set_model_override(db, CLI_ACTOR, provider, model, values)
            return await model_price(db, provider, model), await model_limits(db, provider, model)

    price, limits = run_async(work)
    if price is None:
        console.print(f"{escape(provider)}/{escape(model)}: unpriced (no override, not shipped)")
    else:
        cached = _money(price.cached_input_per_million) or "as input"
        console.print(
            f"{escape(provider)}/{escape(model)}: input {_money(price.input_per_million)}, "
            f"output {_money(price.output_per_million)}, cached input {cached} (USD per million "
            "tokens)"
        )
    if limits is not None:
        most = limits.max_output or "unknown"
        console.print(
            f"context window {limits.context_window} ({limits.source}), max output {most}"
        )


personas_app = typer.Typer(
    help="The personas library: built-in and stored personas to make agents from.",
    no_args_is_help=True,
)
app.add_typer(personas_app, name="personas")


@personas_app.command("list")
def personas_list() -> None:
    """List the library: the built-in personas, then the stored ones."""
    settings = settings_or_exit()

    async def work() -> tuple[list[Any], dict[int, str]]:
        from gathering.auth.users import UserStore
        from gathering.catalog.personas import list_personas

        async with _agent_store(settings) as store:
            users = await UserStore(store.db).list_users()
            return await list_personas(store.db), {u.id: u.email for u in users}

    found, emails = run_async(work)
    table = Table(title=f"{len(found)} persona(s)")
    for column in ("name", "role", "owner", "description"):
        table.add_column(column)
    for entry in found:
        owner = "built in" if entry.builtin else emails.get(entry.owner_id or 0, "you")
        table.add_row(
            escape(entry.name),
            escape(entry.persona.role),
            escape(owner if settings.auth_required or entry.builtin else "you"),
            escape(entry.description),
        )
    console.print(table)


@personas_app.command("show")
def personas_show(name: Annotated[str, typer.Argument(help="The persona's name")]) -> None:
    """Show one persona with its base prompt."""
    settings = settings_or_exit()

    async def work() -> Any:
        from gathering.catalog.personas import get_persona

        async with _agent_store(settings) as store:
            return await get_persona(store.db, name)

    entry = run_async(work)
    persona = entry.persona
    console.print(f"[bold]{escape(entry.name)}[/]" + (" (built in)" if entry.builtin else ""))
    for label, value in (
        ("description", entry.description),
        ("role", persona.role),
        ("traits", ", ".join(persona.traits)),
        ("specializations", ", ".join(persona.specializations)),
        ("style", persona.communication_style),
        ("language", persona.language),
    ):
        if value:
            console.print(f"{label}: {escape(value)}")
    if persona.base_prompt:
        console.print()
        console.print(escape(persona.base_prompt), highlight=False)


@personas_app.command("create")
def personas_create(
    name: Annotated[str, typer.Argument(help="The new persona's name (lower case)")],
    base: Annotated[
        str | None, typer.Option("--from", help="Start from a copy of this persona")
    ] = None,
    role: Annotated[str | None, typer.Option(help="Its role, e.g. 'code reviewer'")] = None,
    description: Annotated[str | None, typer.Option(help="What it is for")] = None,
    prompt_file: Annotated[
        str | None, typer.Option("--prompt-file", help="A text file holding its base prompt")
    ] = None,
    owner: OwnerOption = None,
) -> None:
    """Store a persona in the library (owned by --owner in multi-user mode)."""
    settings = settings_or_exit()
    prompt = None
    if prompt_file is not None:
        try:
            with open(prompt_file, encoding="utf-8") as file:
                prompt = file.read(20_001)
        except OSError as exc:
            fail(InvalidInputError(f"cannot read {prompt_file}: {exc.strerror or exc}"))

    async def work() -> Any:
        from gathering.auth.users import UserStore
        from gathering.catalog.personas import Persona, create_persona, get_persona

        async with _agent_store(settings) as store:
            fields: dict[str, Any] = {}
            text = ""
            if base is not None:
                template = await get_persona(store.db, base)
                fields, text = template.persona.model_dump(), template.description
            fields.update({k: v for k, v in (("role", role), ("base_prompt", prompt)) if v})
            users = UserStore(store.db)
            if owner is not None:
                owner_id = (await users.require_by_email(owner)).id
            elif settings.auth_required:
                raise InvalidInputError(
                    "multi-user mode: whose persona is it?",
                    hint="add --owner EMAIL (`gathering users list` shows them)",
                )
            else:
                owner_id = (await users.local_owner()).id
            persona = Persona.model_validate(fields)
            return await create_persona(
                store.db, owner_id, name, persona, text if description is None else description
            )

    entry = run_async(work)
    console.print(f"created persona [bold]{escape(entry.name)}[/] (id {entry.id})")


@personas_app.command("delete")
def personas_delete(
    name: Annotated[str, typer.Argument(help="The persona's name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete a stored persona; agents made from it keep their copy."""
    settings = settings_or_exit()
    if not yes and not typer.confirm(f"Delete persona {name!r}?"):
        raise typer.Exit(code=1)

    async def work() -> Any:
        from gathering.catalog.personas import Editor, delete_persona

        async with _agent_store(settings) as store:
            # The command line runs on the server, with its database: an administrator's.
            return await delete_persona(store.db, name, Editor(0, is_admin=True))

    entry = run_async(work)
    console.print(f"deleted persona [bold]{escape(entry.name)}[/]")


settings_app = typer.Typer(
    help="Run-time settings stored in the database (environment variables win over them).",
    no_args_is_help=True,
)
app.add_typer(settings_app, name="settings")


def _setting_line(current: Any) -> str:
    shown = "(unset)" if current.shown is None else json.dumps(current.shown)
    fixed = "" if current.changeable else f" — set by {current.spec.env_var}"
    return f"{current.spec.name} = {escape(shown)} [dim]({current.source}{fixed})[/]"


@settings_app.command("list")
def settings_list() -> None:
    """List the settings: value (secrets masked), where it comes from, whether it can change."""
    settings = settings_or_exit()

    async def work() -> list[Any]:
        from gathering.catalog.settings import list_settings

        async with _agent_store(settings) as store:
            return await list_settings(store.db)

    found = run_async(work)
    table = Table(title=f"{len(found)} setting(s)")
    for column in ("name", "value", "source", "changeable", "description"):
        table.add_column(column)
    for current in found:
        table.add_row(
            current.spec.name,
            escape("(unset)" if current.shown is None else json.dumps(current.shown)),
            current.source,
            "yes" if current.changeable else f"no ({current.spec.env_var})",
            escape(current.spec.description),
        )
    console.print(table)


@settings_app.command("get")
def settings_get(name: Annotated[str, typer.Argument(help="The setting's name")]) -> None:
    """Show one setting (a secret masked)."""
    settings = settings_or_exit()

    async def work() -> Any:
        from gathering.catalog.settings import get_setting

        async with _agent_store(settings) as store:
            return await get_setting(store.db, name)

    console.print(_setting_line(run_async(work)))


@settings_app.command("set")
def settings_set(
    name: Annotated[str, typer.Argument(help="The setting's name")],
    value: Annotated[
        str, typer.Argument(help="Its new value; - reads it from standard input (for secrets)")
    ],
) -> None:
    """Store a setting's value (validated and audited); every instance uses it from its next
    read, without a restart."""
    settings = settings_or_exit()
    if value == "-":
        value = sys.stdin.read(4096).strip()

    async def work() -> Any:
        from gathering.auth.accounts import Actor
        from gathering.catalog.settings import store_setting

        async with _agent_store(settings) as store:
            editor = Actor(None, "cli", via="cli")
            return await store_setting(store.db, name, value, editor, from_text=True)

    console.print(_setting_line(run_async(work)))


@settings_app.command("unset")
def settings_unset(name: Annotated[str, typer.Argument(help="The setting's name")]) -> None:
    """Drop a setting's stored value: back to its default (audited)."""
    settings = settings_or_exit()

    async def work() -> Any:
        from gathering.auth.accounts import Actor
        from gathering.catalog.settings import reset_setting

        async with _agent_store(settings) as store:
            return await reset_setting(store.db, name, Actor(None, "cli", via="cli"))

    console.print(_setting_line(run_async(work)))


@app.command()
def chat(
    agent: Annotated[str, typer.Argument(help="Agent id or name")],
    new_session: Annotated[bool, typer.Option(help="Start a fresh conversation")] = False,
    owner: OwnerOption = None,
) -> None:
    """Talk with an agent; replies stream as they are written. Ctrl-D or /exit quits."""
    settings = settings_or_exit()

    async def work() -> None:
        async with _agent_store(settings) as store:
            owner_id = await _owner_id(settings, store, owner, agent)
            talker = await Agent.load(agent, store=store, owner_id=owner_id)
            if new_session:
                await talker.new_session()
            console.print(
                f"[bold]{talker.name}[/] ({talker.provider}/{talker.model}) — /exit to quit"
            )
            while True:
                try:
                    line = await asyncio.to_thread(console.input, "[bold cyan]you>[/] ")
                except EOFError:
                    break
                if line.strip() in ("/exit", "/quit"):
                    break
                if line.strip():
                    await _stream_reply(talker, line)

    run_async(work)


async def _stream_reply(talker: Agent, line: str) -> None:
    status = console.status(f"{talker.name} is thinking…")
    status.start()
    started = False
    try:
        async for event in talker.stream(line):
            if not started:
                status.stop()
                console.print(f"[bold]{talker.name}>[/] ", end="")
                started = True
            if isinstance(event, TextDelta):
                console.print(event.text, end="", highlight=False, soft_wrap=True)
            elif isinstance(event, ToolStarted):
                console.print(f"\n[dim]→ {event.call.name}({dict(event.call.arguments)})[/]")
            elif isinstance(event, TurnResult) and event.outcome != "completed":
                console.print(f"\n[yellow]{event.text}[/]", end="")
        console.print()
    finally:
        status.stop()


tools_app = typer.Typer(
    help="Tools: list them, enable them for agents, run one.", no_args_is_help=True
)
app.add_typer(tools_app, name="tools")
AgentOption = Annotated[str, typer.Option("--agent", help="Agent id or name")]


async def _tools_agent(
    settings: Settings, store: PostgresAgentStore, agent: str, owner: str | None
) -> AgentRecord:
    owner_id = await _owner_id(settings, store, owner, agent)
    return await store.load_agent(agent, owner_id=owner_id)


@tools_app.command("list")
def tools_list(
    agent: Annotated[
        str | None, typer.Option("--agent", help="Show which tools this agent has")
    ] = None,
    owner: OwnerOption = None,
) -> None:
    """List the tools (built in, from plugins and from the MCP servers the agent sees), with
    their effect."""
    from gathering.tools import FunctionTool, loaded_registry
    from gathering.tools.agent_tools import tool_settings
    from gathering.tools.mcp import registry_for

    settings = settings_or_exit()

    async def work() -> tuple[list[FunctionTool], dict[str, dict[str, object]] | None]:
        if agent is None:
            return (await loaded_registry()).list(), None
        async with _agent_store(settings) as store:
            record = await _tools_agent(settings, store, agent, owner)
            assert record.id is not None
            with err_console.status("listing the tools of MCP servers…"):
                tools = await registry_for(store.db, record.owner_id, record.id)
            return tools.list(), await tool_settings(store.db, record.id)

    tools, enabled = run_async(work)
    table = Table(title=f"{len(tools)} tool(s)")
    columns = ["name", "effect", "category", "plugin", "description"]
    for column in columns + (["enabled"] if enabled is not None else []):
        table.add_column(column)
    for item in tools:
        row = [
            item.name,
            item.effect,
            item.category,
            item.plugin or "",
            escape(item.spec.description.splitlines()[0]),
        ]
        if enabled is not None:
            row.append("yes" if (enabled.get(item.name) or {}).get("enabled") else "no")
        table.add_row(*row)
    console.print(table)


def _set_tool(name: str, agent: str, owner: str | None, changes: dict[str, object]) -> None:
    from gathering.tools.agent_tools import change_agent_tool
    from gathering.tools.mcp import registry_for

    settings = settings_or_exit()

    async def work() -> tuple[AgentRecord, dict[str, object]]:
        async with _agent_store(settings) as store:
            record = await _tools_agent(settings, store, agent, owner)
            assert record.id is not None
            tools = await registry_for(store.db, record.owner_id, record.id)
            tool = tools.require(name)
            return record, await change_agent_tool(store.db, record.id, tool, changes)

    record, setting = run_async(work)
    state = "enabled" if setting["enabled"] else "disabled"
    policy = setting["policy"] or "the tool's default"
    console.print(
        f"[bold]{name}[/] is {state} for agent {escape(record.name)} (id {record.id}), "
        f"policy: {policy}"
    )


@tools_app.command("enable")
def tools_enable(
    name: Annotated[str, typer.Argument(help="The tool")],
    agent: AgentOption,
    owner: OwnerOption = None,
) -> None:
    """Let an agent use a tool (from its next turn)."""
    _set_tool(name, agent, owner, {"enabled": True})


@tools_app.command("disable")
def tools_disable(
    name: Annotated[str, typer.Argument(help="The tool")],
    agent: AgentOption,
    owner: OwnerOption = None,
) -> None:
    """Take a tool away from an agent (from its next turn)."""
    _set_tool(name, agent, owner, {"enabled": False})


@tools_app.command("policy")
def tools_policy(
    name: Annotated[str, typer.Argument(help="The tool")],
    policy: Annotated[
        Literal["allow", "ask", "deny", "default"],
        typer.Argument(help="allow, ask (a person approves each call), deny, or default"),
    ],
    agent: AgentOption,
    owner: OwnerOption = None,
) -> None:
    """Set how an agent's calls of a tool run: allowed, after a person's approval, or never."""
    _set_tool(name, agent, owner, {"policy": None if policy == "default" else policy})


@tools_app.command("invoke")
def tools_invoke(
    name: Annotated[str, typer.Argument(help="The tool")],
    agent: AgentOption,
    arguments: Annotated[
        str,
        typer.Option("--args", help='The arguments as a JSON object, e.g. \'{"path": "a.md"}\''),
    ] = "{}",
    owner: OwnerOption = None,
) -> None:
    """Run a tool once in an agent's workspace, as the agent's own call would run."""
    from gathering.tools.agent_tools import Invocation, invoke_for_agent
    from gathering.tools.mcp import registry_for

    settings = settings_or_exit()
    try:
        values = json.loads(arguments)
    except json.JSONDecodeError as exc:
        fail(
            InvalidInputError(
                f"--args is not JSON: {exc}", hint="give an object: --args '{\"x\": 1}'"
            )
        )
    if not isinstance(values, dict):
        fail(InvalidInputError("--args must be a JSON object", hint="e.g. --args '{\"x\": 1}'"))

    async def work() -> Invocation:
        async with _agent_store(settings) as store:
            record = await _tools_agent(settings, store, agent, owner)
            assert record.id is not None
            tools = await registry_for(store.db, record.owner_id, record.id)
            with err_console.status(f"running {name}…"):
                return await invoke_for_agent(
                    store.db,
                    tools,
                    record.id,
                    record.owner_id,
                    name,
                    values,
                    created_at=record.created_at,
                )

    call = run_async(work)
    if call.error is not None:
        fail(call.error)
    typer.echo(call.output)


approvals_app = typer.Typer(
    help="Tool calls waiting for a person: list, approve, deny.", no_args_is_help=True
)
app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def approvals_list(
    state: Annotated[
        Literal["pending", "approved", "denied", "expired"] | None,
        typer.Option(help="Only approvals in this state [default: every state]"),
    ] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """List approvals, newest first (pending ones by default)."""
    from gathering.tools.approvals import list_approvals

    settings = settings_or_exit()

    async def work() -> list[Approval]:
        async with Database(settings=settings, min_size=0, max_size=1) as db:
            return await list_approvals(db, state=state, limit=limit)

    found = run_async(work)
    table = Table(title=f"{len(found)} approval(s)")
    for column in ("id", "state", "agent", "tool", "arguments", "requested", "expires"):
        table.add_column(column)
    for approval in found:
        arguments = json.dumps(dict(approval.arguments), ensure_ascii=False)
        table.add_row(
            str(approval.id),
            approval.state,
            str(approval.agent_id),
            approval.tool_name,
            escape(arguments if len(arguments) <= 80 else arguments[:79] + "…"),
            f"{approval.requested_at:%Y-%m-%d %H:%M}",
            f"{approval.expires_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _answer(approval_id: int, approve: bool, comment: str | None) -> None:
    from gathering.agents.approval_resumer import approval_events
    from gathering.events.outbox import write
    from gathering.tools.approvals import decide

    settings = settings_or_exit()

    async def work() -> Approval:
        async with Database(settings=settings, min_size=0, max_size=2) as db:
            async with db.transaction() as tx:
                answered = await decide(tx, approval_id, approve=approve, by=None, comment=comment)
                await write(tx, approval_events("approval.decided", answered))
            return answered

    answered = run_async(work)
    console.print(
        f"approval {answered.id} {answered.state}: {answered.tool_name} for agent "
        f"{answered.agent_id}; a running server goes on with it within seconds"
    )


CommentOption = Annotated[str | None, typer.Option(help="Why (the agent is told, if denied)")]


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[int, typer.Argument(help="The approval's id")],
    comment: CommentOption = None,
) -> None:
    """Approve a waiting tool call: it runs, and the agent's turn goes on."""
    _answer(approval_id, True, comment)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[int, typer.Argument(help="The approval's id")],
    comment: CommentOption = None,
) -> None:
    """Deny a waiting tool call: it does not run, and the agent is told why."""
    _answer(approval_id, False, comment)


mcp_app = typer.Typer(
    help="MCP (Model Context Protocol): servers whose tools agents use (list, add, remove), "
    "and GatheRing as a server to MCP clients (serve).",
    no_args_is_help=True,
)
app.add_typer(mcp_app, name="mcp")
# `gathering mcp serve` builds its server with the API's security, so it is registered from
# the API layer (gathering.api.mcp_server.command), as `gathering serve` is.


async def _mcp_owner(
    settings: Settings, store: PostgresAgentStore, owner: str | None, agent: str | None
) -> tuple[int, int | None]:
    """Whose MCP servers (the agent's owner, `--owner`, or the local owner) and which agent's."""
    from gathering.agents.retrieval import local_owner_id
    from gathering.auth.users import UserStore

    if agent is not None:
        record = await _tools_agent(settings, store, agent, owner)
        assert record.owner_id is not None
        return record.owner_id, record.id
    if owner is not None:
        return (await UserStore(store.db).require_by_email(owner)).id, None
    if settings.auth_required:
        raise InvalidInputError(
            "multi-user mode: whose MCP servers? Each user has their own",
            hint="add --owner EMAIL (`gathering users list` shows them) or --agent",
        )
    return await local_owner_id(store.db), None


McpAgentOption = Annotated[
    str | None, typer.Option("--agent", help="Only this agent (id or name); default: all")
]


@mcp_app.command("list")
def mcp_list(owner: OwnerOption = None) -> None:
    """List the MCP servers (the config file's and the owner's), connecting to each."""
    from gathering.tools.mcp import mcp_hub
    from gathering.tools.mcp.servers import McpServer, visible_servers

    settings = settings_or_exit()

    async def work() -> list[tuple[McpServer, dict[str, object], int]]:
        async with _agent_store(settings) as store:
            owner_id, _ = await _mcp_owner(settings, store, owner, None)
            servers = await visible_servers(store.db, owner_id, every_agent=True)
            hub = mcp_hub()
            with err_console.status(f"connecting to {len(servers)} MCP server(s)…"):
                connections = await hub.connections_for(servers)
            return [(c.server, c.health().to_dict(), len(hub.tools_of(c)[0])) for c in connections]

    rows = run_async(work)
    table = Table(title=f"{len(rows)} MCP server(s)")
    for column in ("name", "source", "target", "effect", "agent", "state", "tools", "error"):
        table.add_column(column)
    for server, health, tools in rows:
        target = server.url or " ".join([server.command or "", *server.args])
        table.add_row(
            server.name,
            server.source,
            escape(target),
            server.effect,
            str(server.agent_id or "all"),
            str(health["state"]),
            str(tools),
            escape(str(health["last_error"] or "")),
        )
    console.print(table)


@mcp_app.command("add")
def mcp_add(
    name: Annotated[str, typer.Argument(help="Its tools are named <name>__<tool>")],
    url: Annotated[str | None, typer.Option("--url", help="A streamable-HTTP server")] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="A stdio server's program (runs on this host)")
    ] = None,
    args: Annotated[
        list[str] | None, typer.Option("--arg", help="An argument of --command (repeatable)")
    ] = None,
    effect: Annotated[
        Literal["read", "write", "external"],
        typer.Option("--effect", help="The effect class of its tools (external: asked first)"),
    ] = "external",
    agent: McpAgentOption = None,
    owner: OwnerOption = None,
) -> None:
    """Add an MCP server: --url for streamable HTTP, or --command (with --arg ...) for stdio."""
    from gathering.tools.mcp.servers import McpServer, add_server

    settings = settings_or_exit()
    if (url is None) == (command is None):
        fail(InvalidInputError("give --url or --command (one of them)"))

    async def work() -> McpServer:
        async with _agent_store(settings) as store:
            owner_id, agent_id = await _mcp_owner(settings, store, owner, agent)
            server = McpServer(
                name=name,
                transport="http" if url is not None else "stdio",
                url=url,
                command=command,
                args=tuple(args or ()),
                effect=effect,
                agent_id=agent_id,
            )
            return await add_server(store.db, server, owner_id)

    server = run_async(work)
    console.print(
        f"MCP server [bold]{server.name}[/] added; its tools ({server.name}__<tool>) are listed "
        f"by `gathering tools list --agent ...`, and enabled per agent"
    )


@mcp_app.command("remove")
def mcp_remove(
    name: Annotated[str, typer.Argument(help="The server")], owner: OwnerOption = None
) -> None:
    """Remove one of the owner's MCP servers (agents lose its tools from their next turn)."""
    from gathering.tools.mcp.servers import remove_server

    settings = settings_or_exit()

    async def work() -> None:
        async with _agent_store(settings) as store:
            owner_id, _ = await _mcp_owner(settings, store, owner, None)
            await remove_server(store.db, owner_id, name)

    run_async(work)
    console.print(f"MCP server [bold]{name}[/] removed")


pipelines_app = typer.Typer(
    help="Pipelines: store definitions from JSON or YAML files, each save a version; check "
    "and export them (docs/pipelines.md).",
    no_args_is_help=True,
)
app.add_typer(pipelines_app, name="pipelines")

PipelineFile = Annotated[str, typer.Argument(help="A definition file: .json, .yaml or .yml")]
PipelineOwnerOption = Annotated[
    str | None,
    typer.Option(
        "--owner",
        help="Email of the pipelines' owner; multi-user mode needs it (names are per owner)",
    ),
]
DEFINITION_SUFFIXES = (".json", ".yaml", ".yml")


def _read_definition(file: str) -> dict[str, object]:
    """The document in `file`, read as JSON or YAML by its extension."""
    import pathlib

    import yaml

    path = pathlib.Path(file)
    suffix = path.suffix.lower()
    if suffix not in DEFINITION_SUFFIXES:
        raise InvalidInputError(
            f"{file}: a definition file ends in .json, .yaml or .yml",
            hint="rename it, e.g. pipeline.yaml (docs/pipelines.md shows the format)",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{file} is not UTF-8 text", hint="save it as UTF-8") from None
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {file}: {exc.strerror or exc}", hint="check the path"
        ) from None
    try:
        document = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{file} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint="fix the JSON there (or write the definition as YAML, in a .yaml file)",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "it cannot be read"
        raise InvalidInputError(
            f"{file} is not valid YAML: {problem}{where}", hint="fix the YAML there"
        ) from None
    if not isinstance(document, dict):
        raise InvalidInputError(
            f"{file} holds no pipeline definition: it must be one object (a mapping)",
            hint="write {name, nodes: [...], edges: [...]} (docs/pipelines.md)",
        )
    return document


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        console.print(
            f"[bold red]{escape(problem.path or '(document)')}[/]: {escape(problem.message)} "
            f"[dim]({problem.code})[/]",
            highlight=False,
            soft_wrap=True,
        )


async def _pipelines_owner(
    settings: Settings, store: PostgresAgentStore, owner: str | None, what: str = "pipelines"
) -> int:
    """Whose `what` (pipelines, circles, ...): `--owner`'s, or the local owner's in
    single-user mode."""
    from gathering.agents.retrieval import local_owner_id
    from gathering.auth.users import UserStore

    if owner is not None:
        return (await UserStore(store.db).require_by_email(owner)).id
    if settings.auth_required:
        raise InvalidInputError(
            f"multi-user mode: whose {what}? Each user has their own",
            hint="add --owner EMAIL (`gathering users list` shows them)",
        )
    return await local_owner_id(store.db)


@pipelines_app.command("list")
def pipelines_list(owner: PipelineOwnerOption = None) -> None:
    """List pipelines (every owner's, or one owner's with --owner)."""
    from gathering.auth.users import UserStore
    from gathering.pipelines import PipelineRecord, list_pipelines
    from gathering.pipelines.store import MAX_LIST

    settings = settings_or_exit()

    async def work() -> tuple[list[PipelineRecord], dict[int, str]]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner) if owner else None
            records: list[PipelineRecord] = []
            while page := await list_pipelines(
                store.db, owner_id=owner_id, limit=MAX_LIST, offset=len(records)
            ):
                records += page
            users = await UserStore(store.db).list_users()
            return records, {user.id: user.email for user in users}

    records, emails = run_async(work)
    table = Table(title=f"{len(records)} pipeline(s)")
    for column in ("id", "name", "version", "nodes", "updated", "owner"):
        table.add_column(column)
    for record in records:
        nodes = record.document.get("nodes")
        table.add_row(
            str(record.id),
            escape(record.name),
            str(record.version),
            str(len(nodes) if isinstance(nodes, list) else 0),
            record.updated_at.strftime("%Y-%m-%d %H:%M"),
            escape(emails.get(record.owner_id, "")) if settings.auth_required else "you",
        )
    console.print(table)


@pipelines_app.command("apply")
def pipelines_apply(file: PipelineFile, owner: PipelineOwnerOption = None) -> None:
    """Store the definition in FILE: a new pipeline, or a new version of the owner's pipeline
    of that name (none when nothing changed)."""
    from gathering.pipelines import PipelineRecord, Problem, apply_pipeline
    from gathering.pipelines.store import Applied

    settings = settings_or_exit()
    with reported_errors():
        document = _read_definition(file)

    async def work() -> tuple[PipelineRecord, Applied]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            try:
                return await apply_pipeline(store.db, document, owner_id=owner_id, by=owner_id)
            except InvalidInputError as exc:
                problems = exc.details.get("problems")
                if not problems:
                    raise
                _print_problems([Problem(**problem) for problem in problems])
                raise InvalidInputError(
                    f"{file}: {len(problems)} problem(s), nothing was saved",
                    hint="fix each one at its path, then apply again",
                ) from None

    record, done = run_async(work)
    name = escape(record.name)
    if done == "created":
        console.print(f"created pipeline [bold]{name}[/] (id {record.id}, version 1)")
    elif done == "updated":
        console.print(f"pipeline [bold]{name}[/]: saved version {record.version} (id {record.id})")
    else:
        console.print(f"pipeline [bold]{name}[/] unchanged (version {record.version})")


@pipelines_app.command("validate")
def pipelines_validate(file: PipelineFile) -> None:
    """Check the definition in FILE without saving it: each problem with its path. Exits 1
    when it is not valid."""
    from gathering.pipelines import parse_definition, validate

    with reported_errors():
        definition = parse_definition(_read_definition(file))
    problems = validate(definition)
    if problems:
        _print_problems(problems)
        fail(
            InvalidInputError(
                f"{file}: pipeline {definition.name!r} has {len(problems)} problem(s)",
                hint="fix each one at its path (docs/pipelines.md lists the checks)",
            )
        )
    console.print(
        f"{escape(file)}: pipeline [bold]{escape(definition.name)}[/] is valid "
        f"({len(definition.nodes)} nodes, {len(definition.edges)} edges)",
        highlight=False,
        soft_wrap=True,
    )


RunIdArgument = Annotated[int, typer.Argument(min=1, help="The run's id")]
FollowOption = Annotated[
    bool, typer.Option("--follow", "-f", help="Show the nodes live until the run ends")
]
_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "waiting": "magenta",
    "waiting_approval": "magenta",
    "waiting_budget": "magenta",
    "paused": "yellow",
    "done": "green",
    "active": "cyan",
    "skipped": "dim",
    "completed": "green",
    "in_progress": "cyan",
    "offered": "blue",
    "in_review": "magenta",
    "changes_requested": "yellow",
    "blocked": "dim",
    "archived": "dim",
}


def _styled(status: str) -> str:
    """`status` as markup in its colour (pending, queued: none)."""
    return f"[{_STATUS_STYLE.get(status, 'none')}]{status}[/]"


def _run_table(run: RunRecord, graph_order: list[str]) -> Table:
    """A run's nodes in execution order: status, attempts, time taken, output or error."""
    table = Table(
        title=f"run {run.id} (pipeline {run.pipeline_id} v{run.version}): {_styled(run.status)}"
    )
    for column in ("node", "status", "attempt", "seconds", "output / error"):
        table.add_column(column, overflow="fold")
    for node_id in graph_order:
        node = run.nodes.get(node_id)
        if node is None:
            continue
        took = (
            f"{(node.finished_at - node.started_at).total_seconds():.2f}"
            if node.started_at and node.finished_at
            else ""
        )
        shown = node.error.get("message", "") if node.error else node.output
        text = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)
        text = (text or "")[:120] + ("…" if text and len(text) > 120 else "")
        cell = _styled(node.status)
        table.add_row(escape(node_id), cell, str(node.attempt), took, escape(text))
    return table


async def _follow_run(db: Database, run_id: int) -> RunRecord:
    """Show run `run_id` live (redrawn on each of its events, or every 2 s) until it ends."""
    from rich.live import Live

    from gathering.events import EventBus
    from gathering.pipelines.executor import graph_of
    from gathering.pipelines.runs import get_run

    run = await get_run(db, run_id)
    order = (await graph_of(db, run.pipeline_id, run.version)).order
    changed = asyncio.Event()
    bus = EventBus(db, poll_interval=1.0)
    await bus.start()
    subscription = bus.subscribe(
        ["pipeline_run.*", "pipeline_node.*"],
        lambda event: changed.set() if event.data.get("run_id") == run_id else None,
        subjects=[f"pipeline:{run.pipeline_id}"],
    )
    try:
        with Live(_run_table(run, order), console=console, refresh_per_second=8) as live:
            while run.status == "running":
                try:
                    await asyncio.wait_for(changed.wait(), timeout=2.0)
                except TimeoutError:
                    pass
                changed.clear()
                run = await get_run(db, run_id)
                live.update(_run_table(run, order))
    finally:
        subscription.unsubscribe()
        await bus.close(grace=1)
    return run


async def _with_a_worker(settings: Settings, db: Database, follow: bool) -> JobWorker | None:
    """A worker in this process while it follows a run, when no other worker is alive; else
    None (and, not following, a warning that the run waits for one)."""
    from gathering.events import EventBus
    from gathering.jobs import JobQueue, JobServices, JobWorker

    queue = await JobQueue(db).open()
    if await queue.live_workers(settings.job_stalled_after):
        await queue.close()
        return None
    if not follow:
        await queue.close()
        err_console.print(
            "[yellow]no worker is running:[/] the run waits for `gathering serve` or "
            "`gathering worker` (or add --follow to run it from here)"
        )
        return None
    bus = EventBus(db, poll_interval=1.0)
    await bus.start()
    worker = JobWorker.from_settings(queue, JobServices(db, bus), settings)
    await worker.start()
    err_console.print("[dim]no worker is running: this command runs the jobs itself[/]")
    return worker


async def _stop_worker(worker: JobWorker | None) -> None:
    if worker is not None:
        await worker.stop()
        if worker.services.bus is not None:
            await worker.services.bus.close(grace=1)
        await worker.queue.close()


def _run_input(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"--input is not JSON: {exc.msg}", hint='e.g. --input \'{"topic": "tides"}\''
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            "--input must be a JSON object", hint='e.g. --input \'{"topic": "tides"}\''
        )
    return value


def _finish(run: RunRecord, follow: bool) -> None:
    if not follow:
        console.print(f"run [bold]{run.id}[/] started: `gathering pipelines runs` follows it")
        return
    if run.status != "succeeded":
        error = run.error or {}
        err_console.print(
            f"[red]run {run.id} {run.status}:[/] {escape(str(error.get('message', '')))}"
        )
        raise typer.Exit(code=1)


@pipelines_app.command("run")
def pipelines_run(
    name: Annotated[str, typer.Argument(help="The pipeline's name")],
    input_json: Annotated[
        str | None, typer.Option("--input", help="The run's input, a JSON object")
    ] = None,
    follow: FollowOption = False,
    owner: PipelineOwnerOption = None,
) -> None:
    """Start a run of a pipeline's current version; --follow shows its nodes live."""
    from gathering.pipelines import pipeline_named
    from gathering.pipelines.executor import Executor

    settings = settings_or_exit()
    with reported_errors():
        run_input = _run_input(input_json)

    async def work() -> RunRecord:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            record = await pipeline_named(store.db, owner_id, name)
            worker = await _with_a_worker(settings, store.db, follow)
            try:
                run = await Executor(store.db, None).start_run(
                    record.id, record.version, owner_id, run_input
                )
                return await _follow_run(store.db, run.id) if follow else run
            finally:
                await _stop_worker(worker)

    _finish(run_async(work), follow)


@pipelines_app.command("runs")
def pipelines_runs(
    name: Annotated[str, typer.Argument(help="The pipeline's name")],
    owner: PipelineOwnerOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000, help="At most this many")] = 20,
) -> None:
    """A pipeline's runs, newest first."""
    from gathering.pipelines import pipeline_named
    from gathering.pipelines.runs import list_runs

    settings = settings_or_exit()

    async def work() -> list[RunRecord]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            record = await pipeline_named(store.db, owner_id, name)
            return await list_runs(store.db, record.id, limit=limit)

    runs = run_async(work)
    table = Table(title=f"{len(runs)} run(s) of {escape(name)}")
    for column in ("id", "version", "status", "trigger", "from", "started", "finished", "error"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            str(run.version),
            _styled(run.status),
            run.trigger,
            f"{run.relation} of {run.parent_run_id}" if run.parent_run_id else "",
            run.created_at.isoformat(timespec="seconds"),
            run.finished_at.isoformat(timespec="seconds") if run.finished_at else "",
            escape(str((run.error or {}).get("message", "")))[:80],
        )
    console.print(table)


@pipelines_app.command("show")
def pipelines_show(run_id: RunIdArgument, follow: FollowOption = False) -> None:
    """One run's nodes: status, attempts, time taken, output or error."""
    from gathering.pipelines.executor import graph_of
    from gathering.pipelines.runs import get_run

    settings = settings_or_exit()

    async def work() -> None:
        async with Database(settings=settings, min_size=0, max_size=2) as db:
            if follow:  # the live table is the answer
                await _follow_run(db, run_id)
                return
            run = await get_run(db, run_id)
            order = (await graph_of(db, run.pipeline_id, run.version)).order
        console.print(_run_table(run, order))

    run_async(work)


@pipelines_app.command("cancel")
def pipelines_cancel(run_id: RunIdArgument) -> None:
    """Cancel a run: queued nodes never run, running ones stop within a second."""
    from gathering.pipelines.executor import Executor

    settings = settings_or_exit()

    async def work() -> RunRecord:
        async with Database(settings=settings, min_size=0, max_size=2) as db:
            return await Executor(db, None).cancel_run(
                run_id, reason="cancelled from the command line"
            )

    run = run_async(work)
    console.print(f"run [bold]{run.id}[/] cancelled")


def _answer_node(run_id: int, node_id: str, action: str, comment: str) -> RunRecord:
    from gathering.pipelines.executor import Executor

    settings = settings_or_exit()

    async def work() -> RunRecord:
        async with Database(settings=settings, min_size=0, max_size=2) as db:
            return await Executor(db, None).resolve(run_id, node_id, action, comment=comment)

    return run_async(work)


NodeArgument = Annotated[str, typer.Argument(help="The waiting node's id")]
AnswerComment = Annotated[str, typer.Option("--comment", "-m", help="Why (kept with the answer)")]


@pipelines_app.command("approve")
def pipelines_approve(
    run_id: RunIdArgument, node: NodeArgument, comment: AnswerComment = ""
) -> None:
    """Approve a run's approval node: the run goes on (from any process, any time)."""
    run = _answer_node(run_id, node, "approve", comment)
    console.print(f"node [bold]{escape(node)}[/] of run {run.id} approved: the run goes on")


@pipelines_app.command("deny")
def pipelines_deny(run_id: RunIdArgument, node: NodeArgument, comment: AnswerComment = "") -> None:
    """Deny a run's approval node: the node fails (approval_denied), and so does the run."""
    run = _answer_node(run_id, node, "deny", comment)
    console.print(f"node [bold]{escape(node)}[/] of run {run.id} denied: the run is {run.status}")


class NodeAnswer(StrEnum):
    """How a node that waits for a decision (not an approval) is answered."""

    RETRY = "retry"
    SKIP = "skip"


@pipelines_app.command("resolve")
def pipelines_resolve(
    run_id: RunIdArgument,
    node: NodeArgument,
    action: Annotated[
        NodeAnswer,
        typer.Argument(help="retry: run the node again; skip: go on without its output"),
    ],
) -> None:
    """Answer a node that waits for a decision: one a budget refused (raise the budget first:
    `gathering budgets set`) or one whose outcome is unknown after an interruption."""
    run = _answer_node(run_id, node, action.value, "")
    done = "queued to run again" if action is NodeAnswer.RETRY else "skipped"
    console.print(f"node [bold]{escape(node)}[/] of run {run.id} {done}: the run is {run.status}")


@pipelines_app.command("retry")
def pipelines_retry(run_id: RunIdArgument, follow: FollowOption = False) -> None:
    """Retry a failed or cancelled run from where it stopped (a new run, linked to it)."""
    from gathering.pipelines.executor import Executor

    settings = settings_or_exit()

    async def work() -> RunRecord:
        async with Database(settings=settings, min_size=0, max_size=4) as db:
            worker = await _with_a_worker(settings, db, follow)
            try:
                run = await Executor(db, None).retry_run(run_id)
                return await _follow_run(db, run.id) if follow else run
            finally:
                await _stop_worker(worker)

    _finish(run_async(work), follow)


@pipelines_app.command("export")
def pipelines_export(
    name: Annotated[str, typer.Argument(help="The pipeline's name")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="This version [default: the current]")
    ] = None,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML instead of JSON")] = False,
    owner: PipelineOwnerOption = None,
) -> None:
    """Print a pipeline's definition (JSON, or YAML), as `apply` takes it back."""
    import yaml

    from gathering.errors import NotFoundError
    from gathering.pipelines import get_version, pipeline_named

    settings = settings_or_exit()

    async def work() -> dict[str, object]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            record = await pipeline_named(store.db, owner_id, name)
            if version is None or version == record.version:
                return record.document
            try:
                found = await get_version(store.db, record.id, version)
            except NotFoundError:
                raise NotFoundError(
                    f"pipeline {name!r} has no version {version}",
                    hint=f"its versions are 1 to {record.version}",
                ) from None
            assert found.document is not None
            return found.document

    document = run_async(work)
    if as_yaml:
        typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", min=1, help="Jobs at once (GATHERING_WORKER_CONCURRENCY)"
        ),
    ] = None,
    queues: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Run only this queue's jobs (repeat)")
    ] = None,
) -> None:
    """Run jobs (pipeline nodes, ...) until SIGTERM or Ctrl-C; then finish the running ones
    within the shutdown timeout. Run as many as you like, on any machine, on one database."""
    import signal

    from gathering.circles.jobs import offers_duty
    from gathering.jobs.process import run_worker_process
    from gathering.pipelines.jobs import deadlines_duty
    from gathering.scheduler.jobs import scheduler_duty

    settings = settings_or_exit(server=True)
    workers = concurrency or settings.worker_concurrency

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def ready(queue: object) -> None:
            names = ", ".join(queues) if queues else "all queues"
            console.print(f"worker ready: {workers} at once, {names}; Ctrl-C stops it")

        await run_worker_process(
            settings,
            stop,
            concurrency=workers,
            queues=queues or None,
            on_ready=ready,
            duties=[deadlines_duty, scheduler_duty, offers_duty],
        )

    run_async(work)
    console.print("worker stopped")


jobs_app = typer.Typer(
    help="Jobs: see, retry and cancel the job queue's work.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")


@asynccontextmanager
async def _job_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    from gathering.jobs import JobQueue

    async with Database(settings=settings, min_size=0, max_size=2) as db, JobQueue(db) as queue:
        yield queue


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option(help="todo, doing, succeeded, failed, cancelled, aborted")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue")] = None,
    task: Annotated[
        str | None, typer.Option(help="Only this task (e.g. pipelines:run_node)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many")] = 50,
) -> None:
    """List jobs, newest first."""
    settings = settings_or_exit()

    async def work() -> tuple[list[JobInfo], dict[str, int]]:
        async with _job_queue(settings) as jobs:
            found = await jobs.list_jobs(status=status, queue=queue, task=task, limit=limit)
            return found, await jobs.counts()

    found, counts = run_async(work)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items())) or "none"
    table = Table(title=f"jobs: {summary}")
    for column in ("id", "task", "queue", "status", "attempts", "scheduled", "updated"):
        table.add_column(column)
    for job in found:
        table.add_row(
            str(job.id),
            escape(job.task),
            escape(job.queue),
            job.status,
            str(job.attempts),
            job.scheduled_at.isoformat(timespec="seconds") if job.scheduled_at else "",
            job.updated_at.isoformat(timespec="seconds") if job.updated_at else "",
        )
    console.print(table)


@jobs_app.command("retry")
def jobs_retry(job_id: Annotated[int, typer.Argument(help="A failed job's id")]) -> None:
    """Queue a failed job again, now."""
    settings = settings_or_exit()

    async def work() -> JobInfo:
        async with _job_queue(settings) as jobs:
            return await jobs.retry(job_id)

    job = run_async(work)
    console.print(f"job {job.id} ({escape(job.task)}) queued again: {job.status}")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[int, typer.Argument(help="A queued or running job's id")],
) -> None:
    """Cancel a queued job, or stop a running one (its worker stops it within a second)."""
    settings = settings_or_exit()

    async def work() -> JobInfo:
        async with _job_queue(settings) as jobs:
            return await jobs.cancel(job_id)

    job = run_async(work)
    console.print(
        f"job {job.id} ({escape(job.task)}): {job.status}"
        + (" (its worker is stopping it)" if job.status == "doing" else "")
    )


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
) -> None:
    """Check this machine for what GatheRing needs; each problem comes with its fix.

    Exits non-zero only for what stops `make run`: Python too old, no disk space, or a
    database that cannot start or answer.
    """
    from gathering import doctor as checks

    settings = settings_or_exit()
    with err_console.status("checking…") as status:
        results = checks.run_checks(
            settings, on_start=lambda name: status.update(f"checking {name}…")
        )
    if as_json:
        typer.echo(json.dumps(checks.as_json(results), indent=2))
    else:
        console.print(checks.report(results), highlight=False)
    if checks.blocked(results):
        raise typer.Exit(code=1)


schedules_app = typer.Typer(
    help="Schedules: when something runs (cron, interval, once, an event) and what (a pipeline "
    "run, a notification, an API call); the server claims each slot once (docs/scheduler.md).",
    no_args_is_help=True,
)
app.add_typer(schedules_app, name="schedules")
ScheduleName = Annotated[str, typer.Argument(help="The schedule's name")]


def _on_schedule(name: str, owner: str | None, act: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `act(db, schedule)` on the owner's schedule `name`."""
    from gathering.scheduler import schedule_named

    settings = settings_or_exit()

    async def work() -> T:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            found = await schedule_named(store.db, owner_id, name)
            if found is None:
                raise NotFoundError(
                    f"no schedule named {name!r}", hint="`gathering schedules list` shows them"
                )
            return await act(store.db, found)

    return run_async(work)


def _when(instant: datetime | None) -> str:
    return instant.isoformat(timespec="seconds") if instant else ""


@schedules_app.command("list")
def schedules_list(owner: PipelineOwnerOption = None) -> None:
    """List schedules (every owner's, or one owner's with --owner)."""
    from gathering.scheduler import ScheduleRecord, list_schedules

    settings = settings_or_exit()

    async def work() -> list[ScheduleRecord]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner) if owner else None
            found: list[ScheduleRecord] = []
            while page := await list_schedules(store.db, owner_id, limit=500, offset=len(found)):
                found += page
            return found

    records = run_async(work)
    table = Table(title=f"{len(records)} schedule(s)")
    for column in ("id", "name", "when", "action", "status", "next run", "runs"):
        table.add_column(column)
    for record in records:
        spec = record.spec
        if spec.kind == "cron":
            when = f"{spec.cron} ({spec.timezone})"
        elif spec.kind == "interval":
            when = f"every {spec.every_seconds:g}s"
        else:
            when = _when(spec.at)
        table.add_row(
            str(record.id),
            escape(record.name),
            escape(when),
            spec.action,
            record.status,
            _when(record.next_run_at),
            str(record.executions),
        )
    console.print(table)


@schedules_app.command("apply")
def schedules_apply(file: PipelineFile, owner: PipelineOwnerOption = None) -> None:
    """Store the schedule in FILE (`name` and its definition, JSON or YAML): a new one, or a
    change of the owner's schedule of that name."""
    from gathering.scheduler import ScheduleRecord, apply_schedule

    settings = settings_or_exit()
    with reported_errors():
        document = _read_definition(file)

    async def work() -> tuple[ScheduleRecord, bool]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            return await apply_schedule(store.db, owner_id, document)

    record, created = run_async(work)
    done = "created" if created else "changed"
    console.print(
        f"{done} schedule [bold]{escape(record.name)}[/] (id {record.id}, {record.status}); "
        f"next run: {_when(record.next_run_at) or 'none'}"
    )


@schedules_app.command("show")
def schedules_show(
    name: ScheduleName,
    owner: PipelineOwnerOption = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="Next instants to show")] = 5,
) -> None:
    """A schedule's definition, status and next instants."""
    from gathering.scheduler import preview
    from gathering.scheduler.definition import load_zone

    async def show(db: Database, record: Any) -> tuple[Any, list[datetime]]:
        if record.spec.kind == "event":  # no instants known beforehand
            return record, []
        await load_zone(record.spec.timezone)
        return record, preview(record.spec, record.anchor, datetime.now(UTC), count)

    schedule, instants = _on_schedule(name, owner, show)
    console.print(f"[bold]{escape(schedule.name)}[/] (id {schedule.id}): {schedule.status}")
    spec = schedule.spec.model_dump(mode="json", exclude_none=True)
    console.print_json(json.dumps(spec))
    if schedule.spec.kind == "event":
        console.print(f"next: on each {escape(schedule.spec.event_type or '')} event")
    else:
        console.print("next: " + (", ".join(_when(t) for t in instants) or "none"))


def _schedule_command(verb: str, summary: str) -> None:
    """`gathering schedules VERB NAME`: pause, resume or delete."""

    def command(name: ScheduleName, owner: PipelineOwnerOption = None) -> None:
        from gathering import scheduler

        act = {
            "pause": scheduler.pause_schedule,
            "resume": scheduler.resume_schedule,
            "delete": scheduler.delete_schedule,
        }[verb]
        _on_schedule(name, owner, lambda db, record: act(db, record.id))
        console.print(f"schedule [bold]{escape(name)}[/]: {verb}d")

    command.__doc__ = summary
    schedules_app.command(verb)(command)


_schedule_command("pause", "Claim no slot of the schedule until it is resumed.")
_schedule_command(
    "resume", "Claim slots again, from the next instant (the missed ones are not run)."
)
_schedule_command("delete", "Delete the schedule and its runs (the pipeline runs are kept).")


@schedules_app.command("trigger")
def schedules_trigger(name: ScheduleName, owner: PipelineOwnerOption = None) -> None:
    """Run the schedule now, outside its slots (a worker runs it)."""
    from gathering.scheduler import Scheduler

    run = _on_schedule(name, owner, lambda db, record: Scheduler(db, None).trigger(record))
    console.print(f"run {run.id} of [bold]{escape(name)}[/]: {run.status}")


@schedules_app.command("runs")
def schedules_runs(
    name: ScheduleName,
    owner: PipelineOwnerOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000, help="At most this many")] = 20,
) -> None:
    """A schedule's runs, newest first."""
    from gathering.scheduler import list_schedule_runs

    runs = _on_schedule(
        name, owner, lambda db, record: list_schedule_runs(db, record.id, limit=limit)
    )
    table = Table(title=f"{len(runs)} run(s) of {escape(name)}")
    for column in ("id", "slot", "trigger", "status", "attempt", "pipeline run", "error"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            _when(run.slot_time),
            run.trigger,
            _styled(run.status),
            str(run.attempt),
            str(run.pipeline_run_id or ""),
            escape(str((run.error or {}).get("message", "")))[:80],
        )
    console.print(table)


tasks_app = typer.Typer(
    help="Background agent tasks: an agent works on a goal on its own, step by step, within "
    "budgets; any worker runs it and takes it over if its worker dies (docs/tasks.md).",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")
TaskIdArgument = Annotated[int, typer.Argument(min=1, help="The task's id")]


@tasks_app.command("start")
def tasks_start(
    agent: Annotated[str, typer.Argument(help="The agent's name or id")],
    goal: Annotated[str, typer.Argument(help="What the agent is to achieve")],
    max_steps: Annotated[int, typer.Option(min=1, max=1_000, help="Model calls at most")] = 20,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens at most")] = 200_000,
    max_seconds: Annotated[float, typer.Option(min=1, help="Seconds of work at most")] = 900,
    max_cost_usd: Annotated[
        float | None, typer.Option(min=0.000001, help="Dollars at most (priced models)")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show its steps until it ends or waits")
    ] = False,
    owner: PipelineOwnerOption = None,
) -> None:
    """Start a background task of one of your agents; --follow shows its steps as they come."""
    from gathering.scheduler.tasks import TaskRecord, TaskSpec, start_task

    settings = settings_or_exit()
    with reported_errors():
        spec = TaskSpec(
            agent=agent,
            goal=goal,
            max_steps=max_steps,
            max_tokens=max_tokens,
            max_seconds=max_seconds,
            max_cost_usd=max_cost_usd,
        )

    async def work() -> TaskRecord:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            worker = await _with_a_worker(settings, store.db, follow)
            try:
                task = await start_task(store.db, None, owner_id, spec)
                console.print(f"task [bold]{task.id}[/] started")
                return await _follow_task(store.db, task.id) if follow else task
            finally:
                await _stop_worker(worker)

    task = run_async(work)
    if not follow:
        console.print(f"`gathering tasks show {task.id}` shows its steps")
    elif task.status == "waiting_approval":
        console.print(
            f"[magenta]task {task.id} waits for approval {task.approval_id}[/]: answer it with "
            f"`gathering approvals approve {task.approval_id}` (or deny); a running server "
            "takes the task up again"
        )
    elif task.status == "waiting_budget":
        message = (task.error or {}).get("message", "")
        err_console.print(
            f"[magenta]task {task.id} waits for a budget:[/] {escape(str(message))}; once it is "
            f"raised, `gathering tasks resume {task.id}` takes the task up again"
        )
        raise typer.Exit(code=1)
    elif task.status != "succeeded":
        message = (task.error or {}).get("message", "")
        err_console.print(f"[red]task {task.id} {task.status}:[/] {escape(str(message))}")
        raise typer.Exit(code=1)
    else:
        console.print(escape(task.result or ""))


async def _follow_task(db: Database, task_id: int) -> Any:
    """Print the steps of task `task_id` as they are stored, until it ends or waits."""
    from gathering.scheduler.tasks import get_task, task_steps

    seen = 0
    while True:
        task = await get_task(db, task_id)
        for step in await task_steps(db, task_id, after=seen):
            if step.status == "done" or task.status not in ("queued", "running"):
                console.print(_step_line(step))
                seen = step.n
        if task.status not in ("queued", "running"):
            return task
        await asyncio.sleep(0.5)


def _step_line(step: Any) -> str:
    calls = ", ".join(
        f"{call['name']} ({(step.results.get(call['id']) or {}).get('status', 'pending')})"
        for call in step.tool_calls
    )
    thought = " ".join(step.thought.split())[:160]
    return f"[bold]{step.n}[/] {escape(thought)}" + (f" [dim]→ {escape(calls)}[/]" if calls else "")


@tasks_app.command("list")
def tasks_list(
    owner: PipelineOwnerOption = None,
    status: Annotated[str | None, typer.Option(help="Only tasks of this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000, help="At most this many")] = 50,
) -> None:
    """List tasks, newest first (every owner's, or one owner's with --owner)."""
    from gathering.scheduler.tasks import list_tasks

    settings = settings_or_exit()

    async def work() -> list[Any]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner) if owner else None
            return await list_tasks(store.db, owner_id, status=status, limit=limit)

    tasks = run_async(work)
    table = Table(title=f"{len(tasks)} task(s)")
    for column in ("id", "agent", "status", "steps", "tokens", "goal"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        table.add_row(
            str(task.id),
            str(task.agent_id),
            _styled(task.status),
            f"{task.steps}/{task.max_steps}",
            f"{task.tokens}/{task.max_tokens}",
            escape(" ".join(task.goal.split())[:80]),
        )
    console.print(table)


@tasks_app.command("show")
def tasks_show(task_id: TaskIdArgument) -> None:
    """A task: its status, what it used of its budgets, its steps and its result or error."""
    from gathering.scheduler.tasks import get_task, task_steps

    settings = settings_or_exit()

    async def work() -> tuple[Any, list[Any]]:
        async with _agent_store(settings) as store:
            task = await get_task(store.db, task_id)
            steps: list[Any] = []
            while page := await task_steps(store.db, task_id, after=len(steps), limit=500):
                steps += page
            return task, steps

    task, steps = run_async(work)
    console.print(
        f"task [bold]{task.id}[/] (agent {task.agent_id}): {_styled(task.status)}; "
        f"{task.steps}/{task.max_steps} steps, {task.tokens}/{task.max_tokens} tokens, "
        f"{task.active_seconds:.1f}/{task.max_seconds:g} s"
    )
    console.print(f"goal: {escape(task.goal)}")
    for step in steps:
        console.print(_step_line(step))
    if task.result is not None:
        console.print(f"result: {escape(task.result)}")
    if task.error:
        console.print(f"[red]error:[/] {escape(str(task.error.get('message', '')))}")


def _task_command(verb: str, summary: str) -> None:
    """`gathering tasks VERB ID`: pause, resume or cancel."""

    def command(task_id: TaskIdArgument) -> None:
        from gathering.scheduler import tasks

        act = {
            "pause": tasks.pause_task,
            "resume": tasks.resume_task,
            "cancel": tasks.cancel_task,
        }[verb]
        settings = settings_or_exit()

        async def work() -> Any:
            async with _agent_store(settings) as store:
                task = await act(store.db, None, task_id)
                if verb == "resume":  # it waits for a worker: say so when none is alive
                    await _stop_worker(await _with_a_worker(settings, store.db, follow=False))
                return task

        task = run_async(work)
        console.print(f"task [bold]{task.id}[/]: {_styled(task.status)}")

    command.__doc__ = summary
    tasks_app.command(verb)(command)


_task_command("pause", "Stop the task where it is, on whichever worker runs it.")
_task_command("resume", "Queue a paused or budget-waiting task again, from its last step.")
_task_command("cancel", "End the task as cancelled, stopping it wherever it runs.")


goals_app = typer.Typer(
    help="Goals: a tree of goals and subgoals with dependencies; starting one launches a "
    "background task (or a pipeline run) per goal (docs/goals.md).",
    no_args_is_help=True,
)
app.add_typer(goals_app, name="goals")
GoalIdArgument = Annotated[int, typer.Argument(min=1, help="The goal's id")]
AgentRefOption = Annotated[str | None, typer.Option("--agent", help="An agent's name or id")]


def _on_goals(act: Callable[[Database], Awaitable[T]]) -> T:
    """Run `act(db)` on the configured database."""
    settings = settings_or_exit()

    async def work() -> T:
        async with _agent_store(settings) as store:
            return await act(store.db)

    return run_async(work)


def _ref(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _goal_line(node: Any) -> str:
    goal = node.goal
    who = f" [dim]agent {goal.agent_id}[/]" if goal.agent_id else ""
    who += f" [dim]pipeline {goal.pipeline_id}[/]" if goal.pipeline_id else ""
    waits = f" [dim]waits for {', '.join(map(str, node.blocked_by))}[/]" if node.blocked_by else ""
    return (
        f"[bold]{goal.id}[/] {escape(goal.title)} {_styled(goal.status)} "
        f"{node.progress:.0%}{who}{waits}"
    )


@goals_app.command("add")
def goals_add(
    title: Annotated[str, typer.Argument(help="What is to be achieved")],
    parent: Annotated[int | None, typer.Option(min=1, help="A subgoal of this goal")] = None,
    description: Annotated[str, typer.Option(help="More about it")] = "",
    criteria: Annotated[str, typer.Option(help="How to tell it is reached")] = "",
    agent: AgentRefOption = None,
    pipeline: Annotated[str | None, typer.Option(help="Or a pipeline (name or id)")] = None,
    owner: PipelineOwnerOption = None,
) -> None:
    """Add a goal (or, with --parent, a subgoal)."""
    from gathering.scheduler.goals import GoalIn, create_goal

    settings = settings_or_exit()
    with reported_errors():
        spec = GoalIn(
            title=title,
            parent_id=parent,
            description=description,
            success_criteria=criteria,
            agent=_ref(agent),
            pipeline=_ref(pipeline),
        )

    async def work() -> Any:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner)
            async with store.db.transaction() as tx:
                return await create_goal(tx, owner_id, spec)

    goal = run_async(work)
    console.print(f"goal [bold]{goal.id}[/] added: {escape(goal.title)}")


@goals_app.command("list")
def goals_list(owner: PipelineOwnerOption = None) -> None:
    """The top-level goals, newest first, with their progress."""
    from gathering.scheduler.goals import goal_tree, list_goals

    settings = settings_or_exit()

    async def work() -> list[Any]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner) if owner else None
            goals = await list_goals(store.db, owner_id, limit=1_000)
            return [await goal_tree(store.db, goal.id) for goal in goals]

    for node in run_async(work):
        console.print(_goal_line(node))


@goals_app.command("tree")
def goals_tree(goal_id: GoalIdArgument) -> None:
    """A goal with its subgoals, their status, progress and dependencies."""
    from rich.tree import Tree

    from gathering.scheduler.goals import goal_tree

    root = _on_goals(lambda db: goal_tree(db, goal_id))

    def grow(branch: Tree, node: Any) -> None:
        for child in node.children:
            grow(branch.add(_goal_line(child)), child)

    tree = Tree(_goal_line(root))
    grow(tree, root)
    console.print(tree)


@goals_app.command("edit")
def goals_edit(
    goal_id: GoalIdArgument,
    title: Annotated[str | None, typer.Option(help="A new title")] = None,
    description: Annotated[str | None, typer.Option(help="A new description")] = None,
    criteria: Annotated[str | None, typer.Option(help="New success criteria")] = None,
    agent: AgentRefOption = None,
    progress: Annotated[float | None, typer.Option(min=0, max=1, help="A leaf's progress")] = None,
) -> None:
    """Change a goal (only what is given)."""
    from gathering.scheduler.goals import GoalChange, change_goal, get_goal

    given = {
        "title": title,
        "description": description,
        "success_criteria": criteria,
        "agent": _ref(agent),
        "progress": progress,
    }
    with reported_errors():
        change = GoalChange(**{k: v for k, v in given.items() if v is not None})

    async def act(db: Database) -> Any:
        async with db.transaction() as tx:
            return await change_goal(tx, await get_goal(tx, goal_id), change)

    goal = _on_goals(act)
    console.print(f"goal [bold]{goal.id}[/] changed")


@goals_app.command("depend")
def goals_depend(
    goal_id: GoalIdArgument,
    on: Annotated[int, typer.Option("--on", min=1, help="The goal it waits for")],
    remove: Annotated[bool, typer.Option("--remove", help="Stop waiting for it")] = False,
) -> None:
    """Make a goal wait for another (or, with --remove, stop waiting)."""
    from gathering.scheduler.goals import add_dependency, get_goal, remove_dependency

    async def act(db: Database) -> None:
        async with db.transaction() as tx:
            if remove:
                await remove_dependency(tx, goal_id, on)
            else:
                await add_dependency(tx, await get_goal(tx, goal_id), await get_goal(tx, on))

    _on_goals(act)
    console.print(f"goal {goal_id} {'no longer waits' if remove else 'waits'} for goal {on}")


@goals_app.command("decompose")
def goals_decompose(goal_id: GoalIdArgument, agent: AgentRefOption = None) -> None:
    """Ask an agent (the goal's, or --agent) to split the goal into subgoals."""
    from gathering.scheduler.goals import decompose_goal

    async def act(db: Database) -> list[Any]:
        with err_console.status("the agent is splitting the goal…"):
            return await decompose_goal(db, goal_id, agent=_ref(agent))

    for goal in _on_goals(act):
        console.print(f"[bold]{goal.id}[/] {escape(goal.title)}")


@goals_app.command("start")
def goals_start(goal_id: GoalIdArgument, agent: AgentRefOption = None) -> None:
    """Launch the goal's work: a background task of its agent (or --agent), or a run of its
    pipeline, for it or each of its subgoals. A running server or worker does the work."""
    from gathering.scheduler.goals import start_goal

    goal = _on_goals(lambda db: start_goal(db, None, goal_id, agent=_ref(agent)))
    console.print(f"goal [bold]{goal.id}[/]: {_styled(goal.status)}")


@goals_app.command("cancel")
def goals_cancel(goal_id: GoalIdArgument) -> None:
    """Cancel the goal and its subgoals that have not ended (their work is stopped)."""
    from gathering.scheduler.goals import cancel_goal

    goal = _on_goals(lambda db: cancel_goal(db, None, goal_id))
    console.print(f"goal [bold]{goal.id}[/]: {_styled(goal.status)}")


@goals_app.command("delete")
def goals_delete(goal_id: GoalIdArgument) -> None:
    """Delete the goal and its subgoals (the tasks and runs they started are kept)."""
    from gathering.scheduler.goals import delete_goal

    async def delete(db: Database) -> None:
        async with db.transaction() as tx:
            await delete_goal(tx, goal_id)

    _on_goals(delete)
    console.print(f"goal {goal_id} deleted")


@goals_app.command("activities")
def goals_activities(goal_id: GoalIdArgument) -> None:
    """What was done about a goal, oldest first."""
    from gathering.scheduler.goals import activities, get_goal

    async def read(db: Database) -> list[dict[str, Any]]:
        await get_goal(db, goal_id)  # a goal that is not there is said so, as the API does
        return await activities(db, goal_id, limit=500)

    rows = _on_goals(read)
    for row in rows:
        body = json.dumps(row["body"], ensure_ascii=False)[:160]
        console.print(f"{_when(row['created_at'])} [bold]{row['kind']}[/] {escape(body)}")


ByOption = Annotated[
    Literal["user", "agent", "circle", "model", "provider", "kind"],
    typer.Option("--by", help="What each row sums"),
]


def _since(text: str | None) -> datetime | None:
    """`--since`: an ISO date or date-time (UTC unless it says), or `<n>d` for n days ago."""
    if text is None:
        return None
    from datetime import timedelta

    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"--since {text!r} is not a date", hint="give 2026-01-31, 2026-01-31T08:00 or 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("usage")
def usage_command(
    by: ByOption = "agent",
    period: Annotated[
        Literal["day", "week", "month"], typer.Option(help="Sum per UTC day, week or month")
    ] = "day",
    since: Annotated[
        str | None, typer.Option(help="From this date (ISO, UTC) or `7d` (days ago)")
    ] = None,
    user: Annotated[int | None, typer.Option(min=1, help="Only this user's usage")] = None,
    agent: Annotated[int | None, typer.Option(min=1, help="Only this agent's usage")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table")] = False,
) -> None:
    """Usage from the ledger, summed per period and group (everyone's, or --user's)."""
    from gathering.usage import ReportFilter, csv_cell, report

    settings = settings_or_exit()
    with reported_errors():
        where = ReportFilter(since=_since(since), user_id=user, agent_id=agent)

    async def work() -> list[dict[str, Any]]:
        async with _agent_store(settings) as store:
            return await report(store.db, period, by, where)

    rows = run_async(work)
    columns = ("period_start", "key", "calls", "input_tokens", "output_tokens", "cost_usd")
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            values = [row["period_start"].isoformat(), *(row[c] for c in columns[1:])]
            writer.writerow([csv_cell(v) for v in values])
        return
    table = Table(title=f"usage per {period} (UTC) by {by}")
    for column in (period, by, "calls", "input tokens", "output tokens", "USD"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["period_start"].date().isoformat(),
            escape(str(row["key"] if row["key"] is not None else "-")),
            str(row["calls"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            f"{row['cost_usd']:.6f}",
        )
    console.print(table)


budgets_app = typer.Typer(
    help="Money and token budgets per user, agent, circle, pipeline or background task, over a "
    "UTC day, a UTC month or in total; checked before every model call (docs/usage.md).",
    no_args_is_help=True,
)
app.add_typer(budgets_app, name="budgets")


@budgets_app.command("list")
def budgets_list() -> None:
    """List the budgets and where each stands in its current period."""
    from gathering.usage import Budget, list_budgets

    settings = settings_or_exit()

    async def work() -> list[Budget]:
        async with _agent_store(settings) as store:
            return await list_budgets(store.db)

    budgets = run_async(work)
    table = Table(title=f"{len(budgets)} budget(s)")
    for column in ("id", "scope", "target", "period", "USD", "tokens", "warn", "resets"):
        table.add_column(column)
    for b in budgets:
        usd = f"{b.spent_usd + b.reserved_usd:.4f} / {_money(b.limit_usd)}" if b.limit_usd else "-"
        tokens = (
            f"{b.spent_tokens + b.reserved_tokens} / {b.limit_tokens}" if b.limit_tokens else "-"
        )
        resets = b.resets_at.isoformat(timespec="minutes") if b.resets_at else "never"
        row = (b.scope, str(b.target_id), b.period, usd, tokens, f"{b.warn_percent}%", resets)
        table.add_row(str(b.id), *row)
    console.print(table)


@budgets_app.command("set")
def budgets_set(
    scope: Annotated[
        Literal["user", "agent", "circle", "pipeline", "task"],
        typer.Argument(help="Whose budget"),
    ],
    target_id: Annotated[int, typer.Argument(min=1, help="The user's, agent's, ... id")],
    period: Annotated[
        Literal["day", "month", "total"], typer.Option(help="UTC day, UTC month, or total")
    ] = "month",
    usd: Annotated[float | None, typer.Option(min=0.000001, help="Limit in USD")] = None,
    tokens: Annotated[int | None, typer.Option(min=1, help="Limit in tokens")] = None,
    warn_percent: Annotated[int, typer.Option(min=1, max=100, help="Warn at this share")] = 80,
) -> None:
    """Set a budget (a new one, or new limits for that scope, target and period); audited."""
    from gathering.usage import Budget, BudgetSpec, set_budget

    settings = settings_or_exit()
    spec = BudgetSpec(scope, target_id, period, usd, tokens, warn_percent)

    async def work() -> Budget:
        async with _agent_store(settings) as store:
            return await set_budget(store.db, spec, actor_id=None)

    budget = run_async(work)
    console.print(f"budget [bold]{budget.id}[/]: {scope} {target_id}, per {period}")


@budgets_app.command("remove")
def budgets_remove(
    budget_id: Annotated[int, typer.Argument(min=1, help="The budget's id")],
) -> None:
    """Remove a budget; audited."""
    from gathering.usage import remove_budget

    settings = settings_or_exit()

    async def work() -> None:
        async with _agent_store(settings) as store:
            await remove_budget(store.db, budget_id, actor_id=None)

    run_async(work)
    console.print(f"budget {budget_id} removed")


projects_app = typer.Typer(
    help="Projects: a directory that agents and people work on together.",
    no_args_is_help=True,
)
app.add_typer(projects_app, name="projects")
ProjectArgument = Annotated[str, typer.Argument(help="The project's name or id")]


def _on_project(ref: str, owner: str | None, act: Callable[[Database, Any], Awaitable[T]]) -> T:
    """Run `act(db, project)` on the project `ref` (an id, or a name of the owner's)."""
    from gathering.projects import get_project, project_named

    settings = settings_or_exit()

    async def work() -> T:
        async with _agent_store(settings) as store:
            if ref.isascii() and ref.isdigit():
                project = await get_project(store.db, int(ref))
            else:
                owner_id = await _pipelines_owner(settings, store, owner, "projects")
                project = await project_named(store.db, owner_id, ref)
            return await act(store.db, project)

    with reported_errors():
        return run_async(work)


@projects_app.command("list")
def projects_list(owner: PipelineOwnerOption = None) -> None:
    """List projects (every owner's, or one owner's with --owner)."""
    from gathering.projects import list_projects

    settings = settings_or_exit()

    async def work() -> list[Any]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner, "projects") if owner else None
            return await list_projects(store.db, owner_id, limit=10_000)

    found = run_async(work)
    table = Table(title=f"{len(found)} project(s)")
    for column in ("id", "name", "origin", "languages", "directory"):
        table.add_column(column)
    for project in found:
        languages = ", ".join(entry["name"] for entry in project.stack.get("languages", [])[:3])
        table.add_row(
            str(project.id),
            escape(project.name),
            project.origin,
            escape(languages),
            escape(str(project.directory)),
        )
    console.print(table)


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits, - and _")],
    description: Annotated[str, typer.Option(help="What the project is")] = "",
    clone: Annotated[
        str | None, typer.Option(help="Clone this git URL (on GATHERING_PROJECT_CLONE_ALLOWED)")
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(
            help="Register this existing directory (under GATHERING_PROJECT_REGISTER_ROOTS)"
        ),
    ] = None,
    owner: PipelineOwnerOption = None,
) -> None:
    """Create a project: an empty directory, a clone (--clone), or an existing one (--directory)."""
    from gathering.projects import ProjectIn, create_project

    settings = settings_or_exit()
    with reported_errors():
        spec = ProjectIn(name=name, description=description, clone_from=clone, directory=directory)

    async def work() -> Any:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner, "projects")
            # The command line is the operator's: it may register a directory, as an admin.
            return await create_project(store.db, settings, owner_id, spec, is_admin=True)

    with console.status(f"creating project {escape(name)}…"):
        project = run_async(work)
    console.print(
        f"project [bold]{escape(project.name)}[/] ({project.id}) in "
        f"{escape(str(project.directory))}: link agents with "
        f"`gathering projects link {project.name} --agent NAME`"
    )


@projects_app.command("show")
def projects_show(ref: ProjectArgument, owner: PipelineOwnerOption = None) -> None:
    """A project: its settings, stack, linked agents and circles, members, context text."""
    from gathering.projects import linked, list_members

    async def act(db: Database, project: Any) -> tuple[Any, list[Any], list[Any], list[Any]]:
        agents = await linked(db, project.id, "agent")
        circles = await linked(db, project.id, "circle")
        return project, agents, circles, await list_members(db, project.id)

    project, agents, circles, members = _on_project(ref, owner, act)
    stack = project.stack
    console.print(f"[bold]{escape(project.name)}[/] ({project.id}), {project.origin}")
    console.print(f"directory: {escape(str(project.directory))}")
    if project.source:
        console.print(f"cloned from: {escape(project.source)}")
    languages = ", ".join(f"{e['name']} ({e['files']})" for e in stack.get("languages", []))
    console.print(f"languages: {escape(languages or '-')}")
    console.print(
        f"package managers: {escape(', '.join(stack.get('package_managers', [])) or '-')}"
    )
    console.print(f"test command: {escape(stack.get('test_command') or '-')}")
    console.print(f"agents: {escape(', '.join(a['name'] for a in agents) or '-')}")
    console.print(f"circles: {escape(', '.join(c['name'] for c in circles) or '-')}")
    for member in members:
        console.print(f"member {escape(member.email)}: {', '.join(member.permissions)}")
    console.print("\n[bold]context[/] (what linked agents are told):")
    console.print(escape(project.context), highlight=False)


@projects_app.command("link")
def projects_link(
    ref: ProjectArgument,
    agent: Annotated[str | None, typer.Option(help="An agent of the project's owner")] = None,
    circle: Annotated[str | None, typer.Option(help="A circle of the project's owner")] = None,
    unlink: Annotated[bool, typer.Option("--unlink", help="Remove the link instead")] = False,
    owner: PipelineOwnerOption = None,
) -> None:
    """Link an agent or a circle: the project's directory becomes its workspace."""
    from gathering.projects import link, linkable_id
    from gathering.projects import unlink as remove_link

    if (agent is None) == (circle is None):
        console.print("[red]give --agent or --circle (one of them)[/]")
        raise typer.Exit(2)
    what, given = ("agent", agent) if agent is not None else ("circle", circle)
    assert given is not None

    async def act(db: Database, project: Any) -> str:
        thing_id = await linkable_id(db, what, _ref(given) or given, project.owner_id)
        if unlink:
            await remove_link(db, project, what, thing_id)
            return f"{what} {given} unlinked from project {project.name}"
        await link(db, project, what, thing_id)
        return f"{what} {given} now works in project {project.name} ({project.directory})"

    console.print(escape(_on_project(ref, owner, act)))


@projects_app.command("delete")
def projects_delete(
    ref: ProjectArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    owner: PipelineOwnerOption = None,
) -> None:
    """Delete a project and the directory it made (a registered directory is kept)."""
    from gathering.projects import delete_project

    if not yes and not typer.confirm(f"delete project {ref} and its files?"):
        raise typer.Exit(1)

    async def act(db: Database, project: Any) -> str:
        await delete_project(db, project)
        return str(project.name)

    console.print(f"project {escape(_on_project(ref, owner, act))} deleted")


circles_app = typer.Typer(
    help="Circles: teams of agents that take tasks, route them, review each other.",
    no_args_is_help=True,
)
app.add_typer(circles_app, name="circles")
CircleArgument = Annotated[str, typer.Argument(help="The circle's name")]
CircleTaskArgument = Annotated[int, typer.Argument(help="The task's id")]


def _pairs(values: list[str], option: str) -> dict[str, int]:
    """`["python=4", "review=3"]` as `{"python": 4, "review": 3}`."""
    found: dict[str, int] = {}
    for value in values:
        tag, _, level = value.partition("=")
        if not (level.isascii() and level.isdigit()):
            raise InvalidInputError(
                f"{option} {value!r}: give TAG=LEVEL", hint=f"e.g. {option} python=4 (1 to 5)"
            )
        found[tag.strip()] = int(level)
    return found


def _flow(db: Database) -> Any:
    """The circles' task flow, its events written to the outbox for every instance."""
    from gathering.circles import TaskFlow
    from gathering.events import EventBus

    return TaskFlow(db, EventBus(db))


def _on_circle(name: str, act: Callable[[Database, Any], Awaitable[T]]) -> T:
    """Run `act(db, circle)` on the circle named `name`."""
    from gathering.circles import circle_named

    async def work(db: Database) -> T:
        return await act(db, await circle_named(db, name))

    with reported_errors():
        return _on_goals(work)


@circles_app.command("list")
def circles_list(owner: PipelineOwnerOption = None) -> None:
    """List circles (every owner's, or one owner's with --owner)."""
    from gathering.circles import list_circles, list_members

    settings = settings_or_exit()

    async def work() -> list[tuple[Any, int]]:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner, "circles") if owner else None
            circles = await list_circles(store.db, owner_id, limit=1_000)
            return [(c, len(await list_members(store.db, c.id))) for c in circles]

    found = run_async(work)
    table = Table(title=f"{len(found)} circle(s)")
    for column in ("id", "name", "status", "members", "routing", "review"):
        table.add_column(column)
    for circle, members in found:
        table.add_row(
            str(circle.id),
            escape(circle.name),
            _styled(circle.status),
            str(members),
            circle.settings.routing,
            "yes" if circle.settings.review_required else "no",
        )
    console.print(table)


@circles_app.command("create")
def circles_create(
    name: CircleArgument,
    description: Annotated[str, typer.Option(help="What the circle is for")] = "",
    review: Annotated[bool, typer.Option(help="Review work before it completes")] = True,
    reviewers: Annotated[int, typer.Option(min=1, max=3, help="Reviewers per attempt")] = 1,
    owner: PipelineOwnerOption = None,
) -> None:
    """Create a circle (then add members and activate it)."""
    from gathering.circles import CircleIn, CircleSettings, create_circle

    settings = settings_or_exit()
    with reported_errors():
        spec = CircleIn(
            name=name,
            description=description,
            settings=CircleSettings(review_required=review, reviewers_per_task=reviewers),
        )

    async def work() -> Any:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner, "circles")
            async with store.db.transaction() as tx:
                return await create_circle(tx, owner_id, spec)

    circle = run_async(work)
    console.print(
        f"circle [bold]{escape(circle.name)}[/] created: add members with "
        f"`gathering circles add {circle.name} AGENT`, then `gathering circles activate "
        f"{circle.name}`"
    )


@circles_app.command("add")
def circles_add(
    name: CircleArgument,
    agent: Annotated[str, typer.Argument(help="The agent's name or id (the circle owner's)")],
    role: Annotated[str, typer.Option(help="lead, member or reviewer")] = "member",
    skill: Annotated[
        list[str] | None, typer.Option(help="A competency TAG=LEVEL (1-5); repeat it")
    ] = None,
) -> None:
    """Add one of the owner's agents to the circle."""
    from gathering.circles import MemberIn, add_member

    with reported_errors():
        spec = MemberIn.model_validate(
            {"agent": agent, "role": role, "competencies": _pairs(skill or [], "--skill")}
        )

    async def act(db: Database, circle: Any) -> Any:
        async with db.transaction() as tx:
            member = await add_member(tx, circle, spec)
        await _flow(db).route_pending(circle.id)
        return member

    member = _on_circle(name, act)
    console.print(f"member [bold]{member.id}[/] {escape(member.name)} joined as {member.role}")


def _set_status(name: str, status: str) -> None:
    from gathering.circles import Conversations, set_circle_status

    async def act(db: Database, circle: Any) -> Any:
        async with db.transaction() as tx:
            changed = await set_circle_status(tx, circle.id, status)
        flow = _flow(db)
        if status == "active":
            await flow.route_pending(circle.id)
        else:
            await flow.cancel_open(circle.id, "the circle was archived")
            await Conversations(db, flow.bus).cancel_open(circle.id)
        return changed

    circle = _on_circle(name, act)
    console.print(f"circle [bold]{escape(circle.name)}[/]: {_styled(circle.status)}")


@circles_app.command("activate")
def circles_activate(name: CircleArgument) -> None:
    """Activate the circle: its pending tasks are offered to its members."""
    _set_status(name, "active")


@circles_app.command("archive")
def circles_archive(name: CircleArgument) -> None:
    """Archive the circle: its open tasks are cancelled."""
    _set_status(name, "archived")


@circles_app.command("members")
def circles_members(name: CircleArgument) -> None:
    """The members with their roles, competencies, load and metrics."""
    from gathering.circles import list_members

    members = _on_circle(name, lambda db, circle: list_members(db, circle.id))
    table = Table(title=f"{len(members)} member(s)")
    for column in ("id", "name", "role", "competencies", "load", "done", "failed", "approval"):
        table.add_column(column, overflow="fold")
    for m in members:
        rate = "-" if m.approval_rate is None else f"{m.approval_rate:.0%}"
        skills = ", ".join(f"{tag} {level}" for tag, level in m.competencies.items())
        table.add_row(
            str(m.id),
            escape(m.name) + ("" if m.active else " [dim](inactive)[/]"),
            m.role,
            escape(skills),
            str(m.load),
            str(m.completed),
            str(m.failed),
            rate,
        )
    console.print(table)


@circles_app.command("task")
def circles_task(
    name: CircleArgument,
    title: Annotated[str, typer.Argument(help="What is to be done")],
    description: Annotated[str, typer.Option(help="Details")] = "",
    needs: Annotated[
        list[str] | None, typer.Option(help="A competency it needs, TAG=LEVEL; repeat it")
    ] = None,
    task_type: Annotated[str, typer.Option("--type", help="Its kind of work")] = "general",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show its moves until it ends")
    ] = False,
) -> None:
    """Give the circle a task; --follow shows each move (offer, claim, review) live."""
    from gathering.circles import TaskIn

    settings = settings_or_exit()
    with reported_errors():
        spec = TaskIn.model_validate(
            {
                "title": title,
                "description": description,
                "task_type": task_type,
                "requirements": _pairs(needs or [], "--needs"),
            }
        )

    async def act(db: Database, circle: Any) -> Any:
        worker = await _with_a_worker(settings, db, follow)
        try:
            task = await _flow(db).create(circle.id, spec, circle.owner_id)
            console.print(f"task [bold]{task.id}[/] {_styled(task.status)}")
            return await _follow_circle_task(db, task.id) if follow else task
        finally:
            await _stop_worker(worker)

    task = _on_circle(name, act)
    if follow and task.status != "completed":
        raise typer.Exit(code=1)


async def _follow_circle_task(db: Database, task_id: int, decide_for: int | None = None) -> Any:
    """Print the moves of circle task `task_id` as they are stored, until it ends (or waits:
    pending, blocked, or for a person's verdict, which `decide_for` gives as an approval)."""
    from gathering.circles import (
        Actor,
        ReviewIn,
        get_circle_task,
        list_members,
        task_decisions,
        task_history,
    )

    seen = 0
    with console.status("the circle is at work") as spinner:
        while True:
            task = await get_circle_task(db, task_id)
            names = {m.id: m.name for m in await list_members(db, task.circle_id)}
            for row in await task_history(db, task_id):
                if row["id"] > seen:
                    seen = row["id"]
                    member = row["member_id"]
                    who = f" by {escape(names.get(member, str(member)))}" if member else ""
                    console.print(
                        f"{_when(row['at'])} {_styled(row['to_status'])}{who} "
                        f"[dim]{escape(row['reason'][:160])}[/]"
                    )
            spinner.update(f"task {task_id}: {task.status}")
            if task.status in ("completed", "failed", "cancelled"):
                return task
            if task.status in ("pending", "blocked"):
                console.print("[yellow]it waits[/]: `gathering circles show` says why")
                return task
            decisions = [
                d for d in await task_decisions(db, task_id) if d["iteration"] == task.iteration
            ]
            if (
                task.status == "in_review"
                and decisions
                and decisions[-1]["kind"] == "escalation"
                and decisions[-1]["member_id"] is None
            ):
                if decide_for is None:
                    console.print("[magenta]it waits for a person[/]: approve or reject it")
                    return task
                console.print(
                    "[magenta]no agent gave a usable verdict[/]: the demo approves it for you"
                )
                await _flow(db).review(
                    task_id, Actor(user_id=decide_for), ReviewIn(verdict="approved")
                )
                continue
            await asyncio.sleep(0.5)


@circles_app.command("tasks")
def circles_tasks(
    name: CircleArgument,
    status: Annotated[str | None, typer.Option(help="Only tasks of this status")] = None,
) -> None:
    """The circle's tasks, newest first."""
    from gathering.circles import STATUSES, list_circle_tasks

    if status is not None and status not in STATUSES:
        fail(InvalidInputError(f"no status {status!r}", hint=f"use one of: {', '.join(STATUSES)}"))
    tasks = _on_circle(
        name, lambda db, circle: list_circle_tasks(db, circle.id, status=status, limit=1_000)
    )
    table = Table(title=f"{len(tasks)} task(s)")
    for column in ("id", "status", "attempt", "assignee", "title"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        table.add_row(
            str(task.id),
            _styled(task.status),
            str(task.iteration),
            str(task.assignee_id or "-"),
            escape(task.title),
        )
    console.print(table)


@circles_app.command("show")
def circles_show(name: CircleArgument, task_id: CircleTaskArgument) -> None:
    """A task: its moves, routing decisions with their reasons, reviews and result."""
    from gathering.circles import get_circle_task, task_decisions, task_history, task_reviews

    async def act(db: Database, circle: Any) -> Any:
        task = await get_circle_task(db, task_id)
        if task.circle_id != circle.id:
            raise NotFoundError(f"no task {task_id} in circle {circle.name!r}")
        return (
            task,
            await task_history(db, task_id),
            await task_decisions(db, task_id),
            await task_reviews(db, task_id),
        )

    task, history, decisions, reviews = _on_circle(name, act)
    console.print(f"[bold]{task.id}[/] {escape(task.title)}: {_styled(task.status)}")
    for row in history:
        console.print(
            f"  {_when(row['at'])} {row['from_status'] or '-'} → {_styled(row['to_status'])} "
            f"[dim]{escape(row['reason'][:160])}[/]"
        )
    for row in decisions:
        who = f"member {row['member_id']}" if row["member_id"] else "nobody"
        console.print(f"  [bold]{row['kind']}[/] {who}: [dim]{escape(row['reason'][:200])}[/]")
    for row in reviews:
        console.print(
            f"  review of attempt {row['iteration']}: {_styled(row['verdict'])} "
            f"{escape(row['feedback'][:200])}"
        )
    if task.result:
        console.print(escape(str(task.result.get("text", ""))[:2_000]))


def _decide_task(name: str, task_id: int, verdict: str, feedback: str) -> None:
    from gathering.circles import Actor, ReviewIn, get_circle_task

    with reported_errors():
        review = ReviewIn.model_validate({"verdict": verdict, "feedback": feedback})

    async def act(db: Database, circle: Any) -> Any:
        if (await get_circle_task(db, task_id)).circle_id != circle.id:
            raise NotFoundError(f"no task {task_id} in circle {circle.name!r}")
        return await _flow(db).review(task_id, Actor(user_id=circle.owner_id), review)

    task = _on_circle(name, act)
    console.print(f"task [bold]{task.id}[/]: {_styled(task.status)}")


FeedbackOption = Annotated[str, typer.Option(help="What to say to the author")]


@circles_app.command("approve")
def circles_approve(
    name: CircleArgument, task_id: CircleTaskArgument, feedback: FeedbackOption = ""
) -> None:
    """Approve the task's current attempt as its owner: it completes."""
    _decide_task(name, task_id, "approved", feedback)


@circles_app.command("reject")
def circles_reject(
    name: CircleArgument, task_id: CircleTaskArgument, feedback: FeedbackOption = ""
) -> None:
    """Reject the task's current attempt as its owner: it fails."""
    _decide_task(name, task_id, "rejected", feedback)


@circles_app.command("changes")
def circles_changes(
    name: CircleArgument,
    task_id: CircleTaskArgument,
    feedback: Annotated[str, typer.Argument(help="The changes to make")],
) -> None:
    """Send the task back to its author with the changes to make."""
    _decide_task(name, task_id, "changes_requested", feedback)


@circles_app.command("cancel")
def circles_cancel(name: CircleArgument, task_id: CircleTaskArgument) -> None:
    """Cancel a task that has not ended (the tasks waiting for it fail)."""
    from gathering.circles import Actor, get_circle_task

    async def act(db: Database, circle: Any) -> Any:
        if (await get_circle_task(db, task_id)).circle_id != circle.id:
            raise NotFoundError(f"no task {task_id} in circle {circle.name!r}")
        return await _flow(db).cancel(task_id, Actor(user_id=circle.owner_id))

    task = _on_circle(name, act)
    console.print(f"task [bold]{task.id}[/]: {_styled(task.status)}")


@app.command()
def converse(
    circle: CircleArgument,
    topic: Annotated[str, typer.Argument(help="What the circle talks about")],
    strategy: Annotated[
        str, typer.Option(help="Who speaks next: round_robin, mention, facilitator or free")
    ] = "round_robin",
    turns: Annotated[int, typer.Option(min=1, max=500, help="Agents' turns at most")] = 6,
    speakers: Annotated[
        list[str] | None,
        typer.Option("--with", help="An agent member who speaks (repeat it; default: all)"),
    ] = None,
    stop: Annotated[str | None, typer.Option(help="A phrase that ends it when said")] = None,
    consensus: Annotated[
        bool, typer.Option(help="End when every speaker's last turn says AGREED")
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="The free strategy's draw")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show it live, token by token")
    ] = False,
) -> None:
    """Start a conversation of the circle's agents on TOPIC; --follow shows it as it is said."""
    from gathering.circles import ConversationIn, Conversations, create_conversation, list_members

    settings = settings_or_exit()

    async def act(db: Database, found: Any) -> Any:
        members = await list_members(db, found.id)
        by_name = {m.name.lower(): m.id for m in members}
        chosen = None
        if speakers:
            missing = [name for name in speakers if name.lower() not in by_name]
            if missing:
                raise NotFoundError(
                    f"no member {', '.join(missing)} in circle {found.name!r}",
                    hint=f"`gathering circles members {found.name}` lists them",
                )
            chosen = [by_name[name.lower()] for name in speakers]
        spec = ConversationIn.model_validate(
            {
                "topic": topic,
                "strategy": strategy,
                "max_turns": turns,
                "participants": chosen,
                "stop_phrase": stop,
                "consensus": consensus,
                "seed": seed,
            }
        )
        async with db.transaction() as tx:
            conversation = await create_conversation(tx, found, spec, found.owner_id)
        worker = await _with_a_worker(settings, db, follow)
        try:
            from gathering.events import EventBus

            await Conversations(db, EventBus(db)).start(conversation.id)
            console.print(
                f"conversation [bold]{conversation.id}[/] of {escape(found.name)} started "
                f"({spec.strategy}, at most {spec.max_turns} turns)"
            )
            if follow:
                return await _follow_conversation(db, found, conversation.id)
            return conversation
        finally:
            await _stop_worker(worker)

    conversation = _on_circle(circle, act)
    if not follow:
        console.print(
            f"watch it on /ws/circles/{circle}, or read it with "
            f"GET /circles/{conversation.circle_id}/conversations/{conversation.id}/transcript"
        )
    elif conversation.status != "finished":
        raise typer.Exit(code=1)


async def _follow_conversation(db: Database, circle: Any, conversation_id: int) -> Any:
    """Print conversation `conversation_id` as it is said, until it ends."""
    from gathering.circles import get_conversation
    from gathering.events import Event, EventBus

    arrived: asyncio.Queue[Event] = asyncio.Queue()
    bus = EventBus(db, poll_interval=0.5)
    await bus.start()
    subscription = bus.subscribe(
        "conversation.*",
        lambda event: (
            arrived.put_nowait(event)
            if event.data.get("conversation_id") == conversation_id
            else None
        ),
        subjects=[circle.subject],
    )
    try:
        while True:
            try:
                event = await asyncio.wait_for(arrived.get(), timeout=2.0)
            except TimeoutError:
                found = await get_conversation(db, conversation_id)
                if found.status in ("finished", "cancelled", "failed", "paused"):
                    return found
                continue
            data = event.data
            if event.type == "conversation.turn_started":
                console.print(f"\n[bold cyan]{escape(data['speaker'])}[/] [dim]({data['why']})[/]")
            elif event.type == "conversation.delta":
                console.print(escape(data["text"]), end="")
            elif event.type == "conversation.injected":
                console.print(
                    f"\n[bold magenta]{escape(data['speaker'])}[/]: {escape(data['content'])}"
                )
            elif event.type == "conversation.finished":
                console.print(f"\n\n[green]finished[/]: {data['reason']}")
                if data.get("summary"):
                    console.print(f"[bold]summary[/]\n{escape(data['summary'])}")
                return await get_conversation(db, conversation_id)
    finally:
        subscription.unsubscribe()
        await bus.close(grace=1)


DEMO_TASK = (
    "Write a Python function is_palindrome(text) that ignores case, spaces and punctuation, "
    "with two examples of its use."
)
DEMO_TEAM = (
    ("architect", "software architect who leads the team", "lead", {"design": 4, "python": 3}),
    ("developer", "Python developer", "member", {"python": 4}),
    ("reviewer", "careful code reviewer", "reviewer", {"code": 4, "python": 3}),
)


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="What the circle is to do")] = DEMO_TASK,
    talk: Annotated[
        bool, typer.Option(help="Then let the three talk it over, live, token by token")
    ] = True,
    owner: PipelineOwnerOption = None,
) -> None:
    """A circle of three agents (architect, developer, reviewer), on the local model unless
    an API key is set, works a small task live: offer, work, review, then a conversation."""
    from gathering.circles import (
        CircleIn,
        CircleSettings,
        ConversationIn,
        Conversations,
        MemberIn,
        TaskIn,
        add_member,
        circle_named,
        create_circle,
        create_conversation,
        set_circle_status,
    )

    settings = settings_or_exit()
    with reported_errors():
        spec = TaskIn(title=task[:200], description=task, requirements={"python": 3})

    async def team(store: PostgresAgentStore, owner_id: int) -> Any:
        from gathering.catalog.settings import default_provider

        provider = await default_provider(store.db)
        for name, role, _, _ in DEMO_TEAM:
            try:
                await store.load_agent(name, owner_id=owner_id)
            except NotFoundError:
                agent = Agent(name, provider, None, persona={"role": role})
                agent.owner_id = owner_id
                await store.create_agent(agent.record())
                console.print(f"agent [bold]{name}[/] ({provider}) created")
        try:
            return await circle_named(store.db, "demo")
        except NotFoundError:
            pass
        settings_ = CircleSettings(review_types=["code"], max_attempts=2)
        async with store.db.transaction() as tx:
            circle = await create_circle(
                tx,
                owner_id,
                CircleIn(name="demo", description="gathering demo", settings=settings_),
            )
            for name, _, role, skills in DEMO_TEAM:
                member = MemberIn.model_validate(
                    {"agent": name, "role": role, "competencies": skills}
                )
                await add_member(tx, circle, member)
            circle = await set_circle_status(tx, circle.id, "active")
        console.print("circle [bold]demo[/]: architect (lead), developer, reviewer")
        return circle

    async def work() -> Any:
        async with _agent_store(settings) as store:
            owner_id = await _pipelines_owner(settings, store, owner, "circles")
            circle = await team(store, owner_id)
            if circle.owner_id != owner_id or circle.status != "active":
                raise InvalidInputError(
                    f"the circle 'demo' is {circle.status} or someone else's",
                    hint="delete it (DELETE /circles/{id}) to start the demo afresh",
                )
            worker = await _with_a_worker(settings, store.db, True)
            try:
                made = await _flow(store.db).create(circle.id, spec, owner_id)
                console.print(f"\ntask [bold]{made.id}[/]: {escape(made.title)}")
                done = await _follow_circle_task(store.db, made.id, decide_for=owner_id)
                if done.result:
                    console.print(f"\n[bold]result[/]\n{escape(str(done.result['text']))}")
                if talk:
                    topic = f"How should we test this? The task was: {task}"
                    chat = ConversationIn(topic=topic, max_turns=3)
                    async with store.db.transaction() as tx:
                        found = await create_conversation(tx, circle, chat, owner_id)
                    from gathering.events import EventBus

                    await Conversations(store.db, EventBus(store.db)).start(found.id)
                    console.print(f"\nconversation [bold]{found.id}[/]: {escape(topic)}")
                    await _follow_conversation(store.db, circle, found.id)
                return done
            finally:
                await _stop_worker(worker)

    done = run_async(work)
    console.print(
        f"\ntask {done.id} {_styled(done.status)}: `gathering circles show demo {done.id}` "
        "tells its story; the API is at /docs (`make run`)"
    )


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"gathering {__version__}")


def main() -> None:
    """Run the command line (`gathering.api.serve.main` adds `serve` first: use that)."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


# --- knowledge --------------------------------------------------------------------------------

knowledge_app = typer.Typer(
    help="The knowledge base: upload documents (indexed by jobs), list them, index them again.",
    no_args_is_help=True,
)
app.add_typer(knowledge_app, name="knowledge")
KnowledgeProjectOption = Annotated[
    str | None,
    typer.Option("--project", help="The project's name or id: the documents are the project's"),
]
KnowledgeWaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Follow the indexing jobs to the end (running them here when no worker runs)",
    ),
]


async def _knowledge_project(
    settings: Settings, store: PostgresAgentStore, ref: str, owner: str | None
) -> Any:
    """The project `ref` (an id, or the name of one of the owner's projects)."""
    from gathering.projects import get_project, project_named

    if ref.isascii() and ref.isdigit():
        return await get_project(store.db, int(ref))
    owner_id = await _pipelines_owner(settings, store, owner, "projects")
    return await project_named(store.db, owner_id, ref)


async def _follow_documents(db: Database, ids: list[int], progress: Any, label: str) -> list[Any]:
    """Show the chunks of documents `ids` embedded so far until every one is indexed (or
    failed); the documents as they end."""
    from gathering.agents.knowledge import KnowledgeBase

    knowledge = KnowledgeBase(db)
    task = progress.add_task(label, total=None)
    while True:
        documents = [await knowledge.get_document(i, include_content=False) for i in ids]
        counted = [d.chunks_total for d in documents if d.status == "pending"]
        done = sum(d.chunks_done if d.status == "pending" else d.chunk_count for d in documents)
        known = None not in counted
        total = sum(d.chunk_count for d in documents if d.status != "pending") + sum(
            c or 0 for c in counted
        )
        progress.update(task, completed=done, total=total if known else None)
        if all(d.status != "pending" for d in documents):
            progress.update(task, completed=total, total=total)
            return documents
        await asyncio.sleep(0.2)


def _document_results(documents: list[Any]) -> int:
    """Print how each document ended; how many failed."""
    failed = 0
    for d in documents:
        if d.status == "ready":
            console.print(
                f"[green]ready[/] {d.id} {escape(d.title)}: {d.chunk_count} chunk(s)"
                + (f", {escape(d.embedding_model)}" if d.embedding_model else "")
            )
        else:
            failed += 1
            err_console.print(
                f"[red]{d.status}[/] {d.id} {escape(d.title)}: {escape(d.error or '')}"
            )
    return failed


_DOCUMENT_STYLE = {"ready": "green", "pending": "cyan", "failed": "red"}


def _knowledge_progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
    )


@knowledge_app.command("upload")
def knowledge_upload(
    files: Annotated[
        list[str],
        typer.Argument(help="Markdown, text, CSV, HTML or PDF files; each becomes a document"),
    ],
    project: KnowledgeProjectOption = None,
    category: Annotated[str, typer.Option(help="The documents' category")] = "general",
    owner: PipelineOwnerOption = None,
    wait: KnowledgeWaitOption = True,
) -> None:
    """Add files to the knowledge base: each is stored, then cut and embedded by a job; the
    bars show the files stored, then the chunks embedded."""
    import pathlib

    from gathering.projects.ingestion import Upload, extract_uploads, store_extracted

    settings = settings_or_exit()

    async def work() -> tuple[list[Any], int]:
        async with _agent_store(settings) as store:
            db = store.db
            target = None
            if project is not None:
                target = await _knowledge_project(settings, store, project, owner)
            if owner is None and target is not None:
                owner_id = target.owner_id
            else:
                owner_id = await _pipelines_owner(settings, store, owner, "documents")
            stored: list[Any] = []
            refused = 0
            with _knowledge_progress() as progress:
                files_task = progress.add_task("files stored", total=len(files))
                for name in files:
                    try:
                        data = await asyncio.to_thread(pathlib.Path(name).read_bytes)
                        extracted = await extract_uploads([Upload(name, data)])
                        stored += await store_extracted(
                            db, extracted, owner_id=owner_id, category=category, project=target
                        )
                    except OSError as exc:
                        refused += 1
                        progress.console.print(
                            f"[red]{escape(name)}:[/] {escape(exc.strerror or str(exc))}",
                            soft_wrap=True,  # a long path stays whole, to copy
                        )
                    except GatheringError as exc:
                        refused += 1
                        progress.console.print(
                            f"[red]{escape(name)}:[/] {escape(exc.message)}", soft_wrap=True
                        )
                    progress.advance(files_task)
                if not wait or not stored:
                    return stored, refused
                worker = await _with_a_worker(settings, db, True)
                try:
                    ids = [document.id for document in stored]
                    return await _follow_documents(db, ids, progress, "chunks embedded"), refused
                finally:
                    await _stop_worker(worker)

    documents, refused = run_async(work)
    if not wait:
        for d in documents:
            console.print(f"[yellow]pending[/] {d.id} {escape(d.title)}: a worker indexes it")
        failed = 0
    else:
        failed = _document_results(documents)
    if refused or failed:
        raise typer.Exit(code=1)


@knowledge_app.command("list")
def knowledge_list(
    project: KnowledgeProjectOption = None,
    category: Annotated[str | None, typer.Option(help="Only this category")] = None,
    status: Annotated[str | None, typer.Option(help="Only pending, ready or failed ones")] = None,
    owner: PipelineOwnerOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many")] = 100,
) -> None:
    """List documents, newest first (every owner's, or one owner's with --owner)."""
    from typing import cast

    from gathering.agents.knowledge import KnowledgeBase
    from gathering.agents.retrieval import ScopeRef

    settings = settings_or_exit()

    async def work() -> list[Any]:
        async with _agent_store(settings) as store:
            owner_id = (
                await _pipelines_owner(settings, store, owner, "documents") if owner else None
            )
            scopes = None
            if project is not None:
                target = await _knowledge_project(settings, store, project, owner)
                scopes = [ScopeRef("project", str(target.id))]
            knowledge = KnowledgeBase(store.db, owner_id=owner_id)
            return await knowledge.list_documents(
                category=category, scopes=scopes, status=cast(Any, status), limit=limit
            )

    found = run_async(work)
    table = Table(title=f"{len(found)} document(s)")
    for column in ("id", "title", "category", "scope", "status", "chunks", "model", "chars"):
        table.add_column(column, overflow="fold")
    for d in found:
        chunks = str(d.chunk_count)
        if d.status == "pending":
            chunks = f"{d.chunks_done}/{d.chunks_total if d.chunks_total is not None else '?'}"
        scope = d.scope + (f":{d.scope_id}" if d.scope_id else "")
        table.add_row(
            str(d.id),
            escape(d.title),
            escape(d.category),
            escape(scope),
            f"[{_DOCUMENT_STYLE[d.status]}]{d.status}[/]",
            chunks,
            escape(d.embedding_model or "-"),
            str(d.size_chars),
        )
    console.print(table)


@knowledge_app.command("reembed")
def knowledge_reembed(
    owner: PipelineOwnerOption = None,
    wait: KnowledgeWaitOption = True,
) -> None:
    """Index again, as jobs, the documents embedded with another model than the one now
    configured (GATHERING_EMBEDDING_PROVIDER / _MODEL) or with none, and those that failed;
    the bar follows them to the end."""
    from gathering.agents.long_term_memory import embedder_from_settings
    from gathering.projects.ingestion import current_model, queue_reindexing

    settings = settings_or_exit()

    async def work() -> tuple[list[int], list[Any]]:
        async with _agent_store(settings) as store:
            db = store.db
            owner_id = (
                await _pipelines_owner(settings, store, owner, "documents") if owner else None
            )
            model = current_model(embedder_from_settings(settings))
            ids = await queue_reindexing(db, model, owner_id=owner_id)
            named = escape(model) if model else "no model (full-text search only)"
            if not ids:
                console.print(f"nothing to index again (the embedding model: {named})")
                return ids, []
            console.print(f"{len(ids)} document(s) queued to be embedded with {named}")
            if not wait:
                return ids, []
            worker = await _with_a_worker(settings, db, True)
            try:
                with _knowledge_progress() as progress:
                    return ids, await _follow_documents(db, ids, progress, "chunks embedded")
            finally:
                await _stop_worker(worker)

    ids, documents = run_async(work)
    if ids and wait and _document_results(documents):
        raise typer.Exit(code=1)
