"""Providers in the catalog (migration 0025): the model endpoints an admin configured, each a
name, a kind, an address and a key. The key is stored encrypted (`gathering.catalog.crypto`),
never returned, only masked ("sk-...abcd").

An agent uses the catalog provider named like its provider (when its provider can talk to that
kind: `openai` talks to `openai` and `openai-compatible`), else the first one (by id) of the
kind it names (`agent_provider_config`). Environment variables still work and win:
`ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL` and `OLLAMA_HOST` over a stored address, and
`ANTHROPIC_API_KEY` and `OPENAI_API_KEY` over a stored key of those kinds, but only for calls
to the official host of that kind or to the address the environment sets: an environment key
never goes to an address an admin stored. An `openai-compatible` provider has no variables of
its own: its stored address and key are always used (never OpenAI's key).

A stored key goes only to the address it was stored for: a change of address (its scheme,
host or port) must give the key again, or remove it (`change_provider`, else 409). Keys in use
are masked in every log line (`gathering.observability.mask_in_logs`) and in the errors of the
test call.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

import httpx

from gathering.auth.accounts import Actor
from gathering.catalog.changes import PROVIDER_NAME, audit_change
from gathering.catalog.crypto import (
    MAX_KEY_CHARS,
    decrypt_key,
    encrypt_key,
    mask_key,
    server_cipher,
)
from gathering.config import Settings, get_settings
from gathering.db import Database
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import (
    ConflictError,
    GatheringError,
    InvalidInputError,
    NotFoundError,
    ProviderAuthenticationError,
)
from gathering.llm import Message, get_provider
from gathering.llm.common import AddressPin, configured_secret, configured_value
from gathering.llm.openai import NO_KEY
from gathering.llm.registry import default_model
from gathering.observability import mask_in_logs

SQL = queries_of("gathering.catalog")
ProviderKind = Literal["anthropic", "openai", "openai-compatible", "ollama", "local"]
KeySource = Literal["environment", "catalog"]
MAX_URL_CHARS = 2048
TEST_TIMEOUT = 30.0  # seconds the test call may take
TEST_MAX_TOKENS = 8
TEST_PROMPT = "Reply with the single word OK."

# The registry provider that talks to each kind.
FACTORIES: Mapping[str, str] = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openai-compatible": "openai",
    "ollama": "ollama",
    "local": "local",
}
_ENV_KEYS = {"anthropic": "anthropic_api_key", "openai": "openai_api_key"}
_KEYLESS = frozenset({"ollama", "local"})
# Where an environment key may go without the environment naming the address.
OFFICIAL_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
AddressCheck = Callable[[str], Awaitable[None]]
"""Raises `InvalidInputError` unless a provider may be called at the address (the egress rules
of `gathering.tools.egress.check_model_endpoint`, given by the layers above)."""


def _env_key(kind: str) -> str | None:
    field = _ENV_KEYS.get(kind)
    key = configured_secret(field) if field else None
    if key:
        mask_in_logs(key)
    return key


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `url`: where a request to it goes (for an address httpx cannot
    parse, stored before addresses were checked: the URL itself, the same as no other)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return "", url, 0
    return parsed.scheme, parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def _env_key_for(kind: str, base_url: str | None) -> str | None:
    """The environment's key of `kind`, when a call with the stored `base_url` may carry it:
    to the official host, or to the address the environment sets itself."""
    key = _env_key(kind)
    if key is None or base_url is None or _env_sets_address(kind):
        return key
    return key if origin_of(base_url) == origin_of(OFFICIAL_URLS[kind]) else None


def _env_sets_address(kind: str) -> bool:
    if kind == "anthropic":
        return bool(os.environ.get("ANTHROPIC_BASE_URL"))  # the SDK reads it itself
    if kind == "openai":
        return bool(configured_value("openai_base_url"))
    if kind == "ollama":
        return "ollama_host" in get_settings().model_fields_set
    return False


@dataclass(frozen=True)
class ProviderRecord:
    """A configured provider as anyone signed in may see it: no key, only its mask."""

    id: int
    name: str
    kind: ProviderKind
    base_url: str | None
    key_mask: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ProviderRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def key_source(self) -> KeySource | None:
        """Where the key its calls use comes from: the environment wins over the catalog (for
        calls to the official host or the environment's address)."""
        if _env_key_for(self.kind, self.base_url):
            return "environment"
        return "catalog" if self.key_mask is not None else None


# --- checks ---------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """`name`, unless it cannot name a provider."""
    if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
        raise InvalidInputError(
            f"not a provider name: {str(name)[:40]!r}",
            hint="1 to 63 characters: lower-case letters, digits, '_', '.', '-'",
        )
    return name


def check_fields(name: str, kind: str, base_url: str | None, has_key: bool) -> None:
    """Raise `InvalidInputError` unless a provider with these fields can be stored: a known
    kind; an http(s) address without credentials (none for `local`, required for
    `openai-compatible`); no key for `ollama` and `local`."""
    check_name(name)
    if kind not in FACTORIES:
        raise InvalidInputError(
            f"unknown provider kind {kind!r}", hint=f"one of: {', '.join(get_args(ProviderKind))}"
        )
    if base_url is not None:
        check_url(base_url)
    if kind == "local" and base_url is not None:
        raise InvalidInputError("a local provider has no address: it runs in this process")
    if kind == "openai-compatible" and base_url is None:
        raise InvalidInputError(
            "an openai-compatible provider needs its server's base_url",
            hint="e.g. http://127.0.0.1:8080/v1",
        )
    if kind in _KEYLESS and has_key:
        raise InvalidInputError(f"a {kind} provider takes no key")


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
# A name's last label holds a letter (one of digits alone would be read as an IPv4 number).
_LAST = r"([A-Za-z0-9]([A-Za-z0-9-]{0,30})?)?[A-Za-z]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?"
_HOST = rf"({_OCTET}(\.{_OCTET}){{3}}|({_LABEL}\.)*{_LAST})"
URL_PATTERN = rf"^https?://{_HOST}(:{_PORT})?(/[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$"
"""An http(s) address: a host name or an IPv4 address in its canonical form, a port, a path;
no user info, no `%`."""
_URL = re.compile(URL_PATTERN)


def check_url(url: str) -> str:
    """`url`, unless it is not an http(s) address a provider can be called at."""
    authority = url.partition("://")[2].split("/", 1)[0]
    if "@" in authority:
        raise InvalidInputError(
            "the base_url must not hold credentials (user:password@)",
            hint="give the key as `key`: it is stored encrypted",
        )
    if len(url) > MAX_URL_CHARS or not _URL.fullmatch(url):
        raise _not_a_url(url)
    try:  # httpx's parser is the one that sends the requests
        host = httpx.URL(url).host
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise _not_a_url(url) from None
    if host.rsplit(".", 1)[-1].isdigit():  # read as an IPv4 address: only the canonical form
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise InvalidInputError(
                f"{host[:60]!r} is not an IPv4 address in its canonical form",
                hint="write IPv4 addresses as four decimal numbers from 0 to 255, e.g. 10.0.0.5",
            )
    return url


def _not_a_url(url: str) -> InvalidInputError:
    return InvalidInputError(
        f"not an http(s) URL: {url[:60]!r}",
        hint="e.g. https://api.example.com/v1 (a host name or IPv4 address, a port, a path)",
    )


_KEY = re.compile(r"[!-~]+")


def check_key(key: str) -> str:
    """`key`, unless it cannot be a provider key."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not _KEY.fullmatch(key):
        raise InvalidInputError(
            "not a provider key",
            hint=f"1 to {MAX_KEY_CHARS} printable ASCII characters, no spaces (HTTP headers "
            "carry it)",
        )
    return key


# --- reading --------------------------------------------------------------------------------


async def list_providers(q: Queries) -> list[ProviderRecord]:
    """Every configured provider, in the order they were added."""
    return [ProviderRecord.from_row(row) for row in await q.fetch_all(SQL["catalog_providers"])]


def _missing(ref: int | str) -> NotFoundError:
    return NotFoundError(f"provider {ref!r} not found", hint="GET /providers lists them")


async def provider_record(q: Queries, provider_id: int) -> ProviderRecord:
    """The provider `provider_id`; `NotFoundError` when there is none."""
    row = await q.fetch_one(SQL["catalog_provider"], provider_id)
    if row is None:
        raise _missing(provider_id)
    return ProviderRecord.from_row(row)


async def provider_named(q: Queries, name: str) -> ProviderRecord:
    """The provider called `name`; `NotFoundError` when there is none."""
    row = await q.fetch_one(SQL["catalog_provider_by_name"], name)
    if row is None:
        raise _missing(name)
    return ProviderRecord.from_row(row)


# --- changes --------------------------------------------------------------------------------


async def _sealed(key: str | None, settings: Settings) -> tuple[bytes | None, str | None]:
    """The key encrypted under the secret of `settings` (the app's), and its mask."""
    if key is None:
        return None, None
    return encrypt_key(await server_cipher(settings), check_key(key)), mask_key(key)


def _details(record: ProviderRecord, key: str) -> dict[str, Any]:
    """An audit entry's details: never the key, only what became of it."""
    return {"name": record.name, "kind": record.kind, "base_url": record.base_url, "key": key}


async def add_provider(
    db: Database,
    actor: Actor,
    name: str,
    kind: str,
    *,
    base_url: str | None = None,
    key: str | None = None,
    check_address: AddressCheck | None = None,
) -> ProviderRecord:
    """Store a new provider (its key encrypted), audited in the same transaction;
    `ConflictError` when the name is taken. `check_address` checks `base_url` first."""
    check_fields(name, kind, base_url, key is not None)
    if base_url is not None and check_address is not None:
        await check_address(base_url)
    ciphertext, mask = await _sealed(key, db.settings)
    async with db.transaction() as tx:
        row = await tx.fetch_one(
            SQL["insert_catalog_provider"], name, kind, base_url, ciphertext, mask
        )
        if row is None:
            raise ConflictError(
                f"a provider named {name!r} exists already",
                hint="choose another name, or change that one (PATCH /providers/{id})",
            )
        record = ProviderRecord.from_row(row)
        what = "stored" if key is not None else "none"
        await audit_change(
            db, tx, actor, "provider.created", "provider", record.id, _details(record, what)
        )
    return record


def _destination(kind: str, base_url: str | None) -> tuple[str, str, int] | None:
    """Where a provider's calls go (its address, else its kind's official host)."""
    url = base_url or OFFICIAL_URLS.get(kind)
    return origin_of(url) if url else None


_KEY_WOULD_MOVE = "key_would_move"


async def change_provider(
    db: Database,
    actor: Actor,
    provider_id: int,
    changes: Mapping[str, Any],
    *,
    check_address: AddressCheck | None = None,
) -> ProviderRecord:
    """Change some of `name`, `kind`, `base_url` and `key` (None removes an address or a key),
    audited in the same transaction. A change to a keyless kind (`ollama`, `local`) drops the
    stored key, to `local` the address too; a change that does not fit the provider's stored
    fields (a key for a `local` one) is a `ConflictError`, and so is a change of where the
    calls go (scheme, host or port) that keeps a stored key: the key would go to the new host
    (the refusal is audited). `check_address` checks a new `base_url` first."""
    unknown = set(changes) - {"name", "kind", "base_url", "key"}
    if unknown:
        raise InvalidInputError(f"unknown provider fields: {sorted(unknown)}")
    if changes.get("base_url") is not None:
        check_url(changes["base_url"])
        if check_address is not None:
            await check_address(changes["base_url"])
    try:
        return await _change_provider(db, actor, provider_id, changes)
    except ConflictError as exc:
        if exc.details.get("reason") == _KEY_WOULD_MOVE:
            await audit_change(
                db,
                None,
                actor,
                "provider.changed",
                "provider",
                provider_id,
                exc.details,
                outcome="denied",
            )
        raise


async def _change_provider(
    db: Database, actor: Actor, provider_id: int, changes: Mapping[str, Any]
) -> ProviderRecord:
    async with db.transaction() as tx:
        row = await tx.fetch_one(SQL["catalog_provider_to_change"], provider_id)
        if row is None:
            raise _missing(provider_id)
        name = check_name(changes.get("name", row["name"]))
        kind = changes.get("kind", row["kind"])
        base_url = changes.get("base_url", row["base_url"])
        if changes.get("base_url") is not None:
            check_url(base_url)
        ciphertext, mask = row["key_ciphertext"], row["key_mask"]
        what = "kept" if mask is not None else "none"
        if "key" in changes:
            ciphertext, mask = await _sealed(changes["key"], db.settings)
            what = "stored" if changes["key"] is not None else "removed"
        elif "kind" in changes and kind in _KEYLESS and mask is not None:
            ciphertext, mask, what = None, None, "removed"  # a keyless kind drops the key
        if "kind" in changes and kind == "local" and "base_url" not in changes:
            base_url = None  # and a local provider its address
        if (
            what == "kept"
            and kind not in _KEYLESS
            and _destination(row["kind"], row["base_url"]) != _destination(kind, base_url)
        ):
            raise ConflictError(
                f"provider {row['name']!r} has a stored key: changing where its calls go "
                "would send that key to the new address",
                hint="give the key for the new address in the same PATCH (`key`), or remove "
                "the stored one (`key: null`)",
                details={
                    "reason": _KEY_WOULD_MOVE,
                    "name": row["name"],
                    "from": row["base_url"],
                    "to": base_url,
                },
            )
        try:
            check_fields(name, kind, base_url, mask is not None)
        except InvalidInputError as exc:  # the change does not fit what is stored
            raise ConflictError(
                f"{exc.message} (provider {row['name']!r} is {row['kind']}"
                f"{', at ' + row['base_url'] if row['base_url'] else ''})",
                hint="change the kind, base_url and key together",
            ) from None
        updated = await tx.fetch_one(
            SQL["update_catalog_provider"], provider_id, name, kind, base_url, ciphertext, mask
        )
        if updated is None:
            raise ConflictError(f"a provider named {name!r} exists already")
        record = ProviderRecord.from_row(updated)
        details = {**_details(record, what), "changed": sorted(changes)}
        await audit_change(db, tx, actor, "provider.changed", "provider", record.id, details)
    return record


async def remove_provider(db: Database, actor: Actor, provider_id: int) -> ProviderRecord:
    """Delete a provider and its key, audited; agents that used it go back to the environment."""
    async with db.transaction() as tx:
        row = await tx.fetch_one(SQL["delete_catalog_provider"], provider_id)
        if row is None:
            raise _missing(provider_id)
        record = ProviderRecord.from_row(row)
        details = _details(record, "removed" if record.key_mask else "none")
        await audit_change(db, tx, actor, "provider.deleted", "provider", record.id, details)
    return record


# --- use ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """How to build a provider for a catalog entry: the registry name and its constructor
    arguments (the decrypted key among them: never log this)."""

    factory: str
    config: dict[str, Any] = field(repr=False)
    key_source: KeySource | None = None

    @property
    def address(self) -> str | None:
        """The stored address its calls go to (None: the environment's, or the official one)."""
        return self.config.get("base_url") or self.config.get("host")

    def secrets(self) -> list[str]:
        """The stored key this connection sends, if any (not NO_KEY, the value sent so that the
        SDK never reads the environment's key)."""
        found = [str(self.config["api_key"])] if self.config.get("api_key") else []
        return [key for key in found if key != NO_KEY]


async def _connection(
    row: Mapping[str, Any], settings: Settings | None, pin: AddressPin | None = None
) -> Connection:
    kind, name = row["kind"], row["name"]
    config: dict[str, Any] = {}
    if row["base_url"] and not _env_sets_address(kind):
        config["host" if kind == "ollama" else "base_url"] = row["base_url"]
        if pin is not None:
            config["pin"] = pin  # an admin's address: each request checked as it is sent
    stored = row["key_ciphertext"]
    source: KeySource | None = None
    if _env_key_for(kind, row["base_url"]):
        source = "environment"  # the provider reads it itself
    elif stored is not None and kind not in _KEYLESS:
        key = decrypt_key(await server_cipher(settings), stored, name)
        mask_in_logs(key)
        config["api_key"] = key
        source = "catalog"
    elif kind == "openai-compatible" or _env_key(kind):
        config["api_key"] = NO_KEY  # never the environment's key to an admin's address
    return Connection(FACTORIES[kind], config, source)


async def provider_for_agent(q: Queries, provider: str) -> Mapping[str, Any] | None:
    """The catalog row (with its encrypted key) an agent whose provider is `provider` uses:
    the provider of that name (when `provider` can talk to its kind), else the first of that
    kind; None when the catalog has neither."""
    kinds = [kind for kind, factory in FACTORIES.items() if factory == provider]
    return await q.fetch_one(SQL["catalog_provider_for_agent"], provider, kinds)


async def agent_provider_config(
    q: Queries,
    provider: str,
    *,
    check_address: AddressCheck | None = None,
    pin: AddressPin | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The constructor arguments (address, key) the catalog gives an agent whose provider is
    `provider` (`provider_for_agent`); empty when the catalog has none (the environment then
    decides, as before). `check_address` checks the stored address before it is used, and
    `pin` each request's addresses just before it is sent (`gathering.llm.pinning`);
    `settings` hold the server secret the key is decrypted with (default: the process's)."""
    row = await provider_for_agent(q, provider)
    if row is None:
        return {}
    connection = await _connection(row, settings, pin)
    if connection.address is not None and check_address is not None:
        await check_address(connection.address)
    return connection.config


@dataclass(frozen=True)
class ProviderTestResult:
    """What one minimal call to a provider showed: its latency, or the mapped error."""

    ok: bool
    model: str
    latency_ms: float
    key_source: KeySource | None
    error: dict[str, Any] | None = None


def _redacted(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, mask_key(secret))
    return text


def _short_message(exc: GatheringError, secrets: list[str]) -> str:
    """What the test call reports of `exc`: the HTTP status a provider answered, never its
    body (an internal service's answer must not come back through the test); other messages
    cut short; any key masked."""
    status = exc.details.get("status")
    if isinstance(status, int):
        return f"the provider answered HTTP {status} ({exc.code})"
    text = _redacted(exc.message, secrets)
    return text if len(text) <= 200 else text[:200] + "…"


def _is_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.lower().endswith(".gguf")


async def run_provider_test(
    db: Database,
    provider_id: int,
    model: str | None = None,
    *,
    check_address: AddressCheck | None = None,
    pin: AddressPin | None = None,
) -> ProviderTestResult:
    """Make one minimal call (a few output tokens, no retry) to the provider `provider_id` with
    `model` (default: its kind's default model); report the latency, or the error as
    `gathering.llm` maps it (the provider's status, not its body), with any key in it masked.
    `check_address` checks the stored address first, `pin` each request's addresses; the
    local kind takes model names only, no file paths."""
    row = await db.fetch_one(SQL["catalog_provider_with_key"], provider_id)
    if row is None:
        raise _missing(provider_id)
    connection = await _connection(row, db.settings, pin)
    model = model or default_model(connection.factory)
    secrets = [*connection.secrets(), *filter(None, [_env_key(row["kind"])])]
    started = time.perf_counter()
    try:
        if row["kind"] == "local" and _is_path(model):
            raise InvalidInputError(
                "the test call of a local provider takes a model name, not a file path",
                hint="leave `model` out to test the bundled model",
            )
        if connection.address is not None and check_address is not None:
            await check_address(connection.address)
        provider = get_provider(
            connection.factory,
            model,
            retry={"max_attempts": 1},
            timeout=TEST_TIMEOUT,
            **connection.config,
        )
        await provider.generate([Message.user(TEST_PROMPT)], max_tokens=TEST_MAX_TOKENS)
    except GatheringError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        hint = exc.hint
        if isinstance(exc, ProviderAuthenticationError) and connection.key_source != "environment":
            hint = (
                f"check the key stored for provider {row['name']!r} "
                f"(PATCH /providers/{provider_id} with a new key)"
            )
        error = {"code": exc.code, "message": _short_message(exc, secrets)}
        if hint:
            error["hint"] = _redacted(hint, secrets)
        return ProviderTestResult(False, model, round(elapsed, 1), connection.key_source, error)
    elapsed = (time.perf_counter() - started) * 1000
    return ProviderTestResult(True, model, round(elapsed, 1), connection.key_source)
