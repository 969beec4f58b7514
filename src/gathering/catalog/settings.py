"""Run-time settings stored in PostgreSQL (migration 0026): a registry of the declared ones,
each typed and validated, changed by admins (audited in the same transaction) and read from
the database where they are used, so a change reaches every instance without a restart.

An environment variable (`GATHERING_<NAME>`, or the `.env` file) still wins over a stored
value; with neither, the setting has its default. A secret setting is stored as a SHA-256
digest only, so it can be checked but never shown, and is masked in every output.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
import structlog
from psycopg.types.json import Jsonb
from pydantic import Field, TypeAdapter

from gathering.auth.accounts import Actor
from gathering.catalog.changes import audit_change
from gathering.config import ENV_PREFIX, Settings, get_settings
from gathering.db import Database
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import ConflictError, InvalidInputError, NotFoundError, UnknownProviderError
from gathering.llm.registry import (
    TEST_PROVIDERS,
    default_model,
    default_provider_name,
    known_providers,
)

log = structlog.get_logger(__name__)
SQL = queries_of("gathering.catalog")

Source = Literal["environment", "stored", "default"]
MASK = "********"
SETTING_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
SETTING_CHANGED = "setting.changed"  # audit events
SETTING_RESET = "setting.reset"


def _known_provider(value: str) -> str:
    name = value.strip().lower()
    if name not in known_providers():
        raise ValueError(f"unknown provider {value!r}; known: {', '.join(known_providers())}")
    return name


_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
MODEL_NAME_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
"""One printable line, not blank: what the agents API takes as a model name (the same pattern as
`gathering.api.fields.LINE_PATTERN`, which the layers keep out of reach here; a test pins it)."""
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=MODEL_NAME_PATTERN)]
ProviderName = Annotated[str, pydantic.AfterValidator(_known_provider)]
Token = Annotated[str, Field(min_length=32, max_length=512, pattern=r"^[\x21-\x7e]+$")]


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting: its name (the field of `gathering.config.Settings` it overrides),
    type, whether it is secret, and what it does."""

    name: str
    kind: Literal["string", "integer", "secret"]
    adapter: TypeAdapter[Any]
    description: str
    secret: bool = False

    @property
    def env_var(self) -> str:
        return f"{ENV_PREFIX}{self.name.upper()}"

    @property
    def default(self) -> Any:
        """The value without environment or stored value (None: unset)."""
        default = Settings.model_fields[self.name].get_default(call_default_factory=True)
        return None if self.secret else default


def _spec(
    name: str, kind: Literal["string", "integer", "secret"], kind_type: Any, description: str
) -> SettingSpec:
    return SettingSpec(name, kind, TypeAdapter(kind_type), description, secret=kind == "secret")


_MODEL_HELP = "The model of new {} agents that name none; unset: the built-in default."
SETTINGS: dict[str, SettingSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "default_provider",
            "string",
            ProviderName,
            "The provider of new agents that name none; unset: anthropic or openai when their "
            "key is set, else local.",
        ),
        _spec("anthropic_model", "string", ModelName, _MODEL_HELP.format("Anthropic")),
        _spec("openai_model", "string", ModelName, _MODEL_HELP.format("OpenAI")),
        _spec("ollama_model", "string", ModelName, _MODEL_HELP.format("Ollama")),
        _spec("local_model", "string", ModelName, _MODEL_HELP.format("local")),
        _spec(
            "pipeline_max_running_runs",
            "integer",
            Annotated[int, Field(ge=1, le=1_000_000)],
            "Pipeline runs one owner may have running at once (sub-pipeline runs included).",
        ),
        _spec(
            "metrics_token",
            "secret",
            Token,
            "A bearer token a Prometheus scraper sends to read /metrics, at least 32 printable "
            "characters (stored as a digest).",
        ),
    )
}


@dataclass(frozen=True)
class SettingValue:
    """A setting as it stands: its value (None when unset; a secret's digest when stored),
    where the value comes from, and who stored it when."""

    spec: SettingSpec
    value: Any
    source: Source
    updated_by: int | None = None
    updated_at: datetime | None = None

    @property
    def changeable(self) -> bool:
        """False when an environment variable sets it (the environment wins)."""
        return self.source != "environment"

    @property
    def shown(self) -> Any:
        """The value as any output may show it: a secret's is masked."""
        if self.spec.secret and self.value is not None:
            return MASK
        return self.value


def setting_spec(name: str) -> SettingSpec:
    """The declared setting `name`; `NotFoundError` when there is none."""
    spec = SETTINGS.get(name.strip().lower())
    if spec is None:
        raise NotFoundError(
            f"no setting named {name[:100]!r}",
            hint=f"settings that can be changed at run time: {', '.join(SETTINGS)}",
        )
    return spec


def _environment_value(spec: SettingSpec, settings: Settings) -> Any:
    """The value the environment (or `.env`) gives the setting, or None."""
    if spec.name not in settings.model_fields_set:
        return None
    value = getattr(settings, spec.name)
    if isinstance(value, pydantic.SecretStr):
        value = value.get_secret_value()
    return value


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _resolve(
    spec: SettingSpec, row: dict[str, Any] | None, settings: Settings | None
) -> SettingValue:
    from_environment = _environment_value(spec, settings or get_settings())
    if from_environment is not None:
        return SettingValue(spec, from_environment, "environment")
    if row is not None:
        stored = row["value"]
        valid = isinstance(stored, dict) and isinstance(stored.get("sha256"), str)
        if not spec.secret:
            try:
                stored = spec.adapter.validate_python(stored, strict=True)
                valid = True
            except pydantic.ValidationError:
                valid = False
        if valid:
            return SettingValue(spec, stored, "stored", row["updated_by"], row["updated_at"])
        # Stored by a version whose rules were looser: refused, the default applies.
        log.warning("stored setting no longer valid; using the default", setting=spec.name)
    return SettingValue(spec, spec.default, "default")


async def list_settings(q: Queries, settings: Settings | None = None) -> list[SettingValue]:
    """Every declared setting as it stands, by name."""
    rows = {row["name"]: row for row in await q.fetch_all(SQL["stored_settings"])}
    return [_resolve(spec, rows.get(name), settings) for name, spec in sorted(SETTINGS.items())]


async def get_setting(q: Queries, name: str, settings: Settings | None = None) -> SettingValue:
    """The setting `name` as it stands (environment, stored value, or default)."""
    spec = setting_spec(name)
    return _resolve(spec, await q.fetch_one(SQL["stored_setting"], spec.name), settings)


async def setting_value(q: Queries, name: str, settings: Settings | None = None) -> Any:
    """The value in force of the (not secret) setting `name`, read now from the database."""
    current = await get_setting(q, name, settings)
    assert not current.spec.secret, "a secret setting is checked with secret_matches()"
    return current.value


async def secret_matches(
    q: Queries, name: str, presented: str, settings: Settings | None = None
) -> bool:
    """Whether `presented` is the value of the secret setting `name` (False when unset)."""
    current = await get_setting(q, name, settings)
    if current.value is None or not presented:
        return False
    if current.source == "environment":
        return hmac.compare_digest(presented.encode(), str(current.value).encode())
    if current.source == "stored":
        return hmac.compare_digest(_digest(presented), current.value["sha256"])
    return False


def _validated(spec: SettingSpec, value: Any, *, from_text: bool) -> Any:
    """`value` checked against the setting's type (a text from the command line is parsed);
    `InvalidInputError` naming what is wrong, never quoting a secret."""
    try:
        if from_text:
            if not isinstance(value, str):
                raise InvalidInputError(f"setting {spec.name}: give the value as text")
            return spec.adapter.validate_strings(value.strip(), strict=True)
        return spec.adapter.validate_python(value, strict=True)
    except pydantic.ValidationError as exc:
        problem = " ".join(str(exc.errors()[0]["msg"]).removeprefix("Value error, ").split())
        raise InvalidInputError(
            f"setting {spec.name} must be a valid {spec.kind}: {problem}",
            hint=spec.description,
        ) from None


def _refuse_environment(current: SettingValue) -> None:
    if current.source == "environment":
        raise ConflictError(
            f"setting {current.spec.name} is set by the environment variable "
            f"{current.spec.env_var}, which wins over a stored value",
            hint=f"change {current.spec.env_var} where the server is started (or unset it "
            "and restart) to manage it here",
        )


async def store_setting(
    db: Database,
    name: str,
    value: Any,
    editor: Actor,
    *,
    from_text: bool = False,
    settings: Settings | None = None,
) -> SettingValue:
    """Validate and store a setting's value, audited in the same transaction; it is in force on
    every instance from their next read. `ConflictError` when the environment sets it."""
    spec = setting_spec(name)
    checked = _validated(spec, value, from_text=from_text)
    settings = settings or get_settings()
    if (
        spec.name == "default_provider"
        and checked in TEST_PROVIDERS
        and settings.env != "development"
    ):
        raise InvalidInputError(
            f"setting default_provider: the {checked} provider is for tests and demos only",
            hint="set GATHERING_ENV=development to make it the default provider",
        )
    stored = {"sha256": _digest(checked)} if spec.secret else checked
    async with db.transaction() as tx:
        before = await get_setting(tx, spec.name, settings)
        _refuse_environment(before)
        row = await tx.fetch_one(SQL["store_setting"], spec.name, Jsonb(stored), editor.user_id)
        assert row is not None
        after = _resolve(spec, row, settings)
        details = {"value": after.shown, "previous": before.shown, "from": before.source}
        await audit_change(db, tx, editor, SETTING_CHANGED, "setting", spec.name, details)
    return after


async def reset_setting(
    db: Database, name: str, editor: Actor, *, settings: Settings | None = None
) -> SettingValue:
    """Drop a setting's stored value (back to its default), audited. `ConflictError` when the
    environment sets it; nothing stored is no error."""
    spec = setting_spec(name)
    async with db.transaction() as tx:
        before = await get_setting(tx, spec.name, settings)
        _refuse_environment(before)
        if await tx.fetch_val(SQL["delete_setting"], spec.name) is not None:
            details = {"previous": before.shown}
            await audit_change(db, tx, editor, SETTING_RESET, "setting", spec.name, details)
    return _resolve(spec, None, settings)


# --- the settings in use -----------------------------------------------------------------------


async def default_provider(q: Queries) -> str:
    """The provider of a new agent that names none: `GATHERING_DEFAULT_PROVIDER`, else the
    stored `default_provider`, else anthropic or openai when their key is set, else local."""
    current = await get_setting(q, "default_provider")
    if current.source != "stored":
        return default_provider_name()  # the environment's (checked there), or the fallback
    name = str(current.value)
    if name not in known_providers():  # its provider was unregistered since
        raise UnknownProviderError(
            f"the stored setting default_provider names an unknown provider {name!r}",
            hint=f"`gathering settings set default_provider NAME` with one of: "
            f"{', '.join(known_providers())}",
        )
    return name


async def default_model_of(q: Queries, provider: str) -> str:
    """The model of a new agent of `provider` that names none: `GATHERING_<PROVIDER>_MODEL`,
    else the stored `<provider>_model`, else the provider's built-in default."""
    key = provider.strip().lower()
    if key not in known_providers():
        raise UnknownProviderError(
            f"unknown LLM provider {provider!r}",
            hint=f"known providers: {', '.join(known_providers())}",
        )
    spec = SETTINGS.get(f"{key}_model")
    if spec is not None:
        value = await setting_value(q, spec.name)
        if value:
            return str(value)
    return default_model(provider)
