"""`/providers`: the model providers of the catalog (a name, a kind, an address and a key).

Anyone signed in reads them (an API key needs `providers:read`); only admins add, change,
delete and test them, and every change is audited. An address is checked against the egress
rules of model endpoints (`check_model_endpoint`: never a cloud metadata address) when it is
stored and before each test call. A key is stored encrypted with a key derived from the
server's secret and is never returned: only its mask ("sk-...abcd") and where the key in use
comes from (`key_source`: an environment variable wins over the stored key, for calls to the
official host or the environment's address). See docs/catalog.md.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic.json_schema import SkipJsonSchema

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.api.deps import MAX_ID, AdminPrincipal, DbDep
from gathering.api.fields import WholeNumber
from gathering.api.routers.api_keys import actor_of
from gathering.api.security import rate_limit, require_scope
from gathering.auth.principal import Principal
from gathering.catalog.crypto import MAX_KEY_CHARS
from gathering.catalog.models import MAX_MODEL_CHARS
from gathering.catalog.providers import (
    MAX_URL_CHARS,
    URL_PATTERN,
    KeySource,
    ProviderKind,
    ProviderRecord,
    add_provider,
    change_provider,
    list_providers,
    provider_record,
    remove_provider,
    run_provider_test,
)
from gathering.tools.egress import check_model_endpoint, model_endpoint_addresses

router = APIRouter(prefix="/providers", tags=["providers"])
ProvidersReader = Annotated[Principal, Depends(require_scope("providers:read"))]
_STORED_ADDRESS = functools.partial(check_model_endpoint, resolve=False)

ProviderId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The provider's id")]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
KEY_PATTERN = r"^[!-~]+$"  # printable ASCII, no spaces
MODEL_PATTERN = r"^[!-~]+$"
ProviderName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Unique; agents whose provider is this name use this entry",
    ),
]
BaseUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=MAX_URL_CHARS,
        pattern=URL_PATTERN,
        description="The server's address, e.g. http://127.0.0.1:8080/v1 (Ollama: its host); "
        "a host name or IPv4 address, no user info",
    ),
]
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_CHARS,
        pattern=KEY_PATTERN,
        description="The API key: stored encrypted, never returned",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostedProviderIn(_Body):
    """Anthropic's or OpenAI's API, or a server that speaks it (`base_url`)."""

    name: ProviderName
    kind: Literal["anthropic", "openai"]
    base_url: BaseUrl | None = None
    key: Key | None = None


class CompatibleProviderIn(_Body):
    """An OpenAI-compatible server (vLLM, llama.cpp, LM Studio, DeepSeek...): its address."""

    name: ProviderName
    kind: Literal["openai-compatible"]
    base_url: BaseUrl
    key: Key | None = None


class OllamaProviderIn(_Body):
    """An Ollama server (it takes no key)."""

    name: ProviderName
    kind: Literal["ollama"]
    base_url: BaseUrl | None = None


class LocalProviderIn(_Body):
    """The embedded local model (no address, no key)."""

    name: ProviderName
    kind: Literal["local"]


ProviderIn = Annotated[
    HostedProviderIn | CompatibleProviderIn | OllamaProviderIn | LocalProviderIn,
    Field(discriminator="kind"),
]

_CHANGE_NULL = "null: unchanged"


class SameKindChange(_Body):
    """A change that keeps the kind: a field left out stays; `base_url` or `key` null
    removes it (409 when that does not fit the provider's kind)."""

    kind: None = Field(default=None, description=_CHANGE_NULL)
    name: ProviderName | None = Field(default=None, description=_CHANGE_NULL)
    base_url: BaseUrl | None = Field(default=None, description="null: no address")
    key: Key | None = Field(default=None, description="null: remove the stored key")


class HostedChange(SameKindChange):
    """A change to the kind anthropic or openai."""

    kind: Literal["anthropic", "openai"]  # type: ignore[assignment]


class CompatibleChange(_Body):
    """A change to the kind openai-compatible (the stored address is kept when left out)."""

    kind: Literal["openai-compatible"]
    name: ProviderName | None = Field(default=None, description=_CHANGE_NULL)
    base_url: BaseUrl | SkipJsonSchema[None] = Field(
        default=None, description="Left out: the stored one"
    )
    key: Key | None = Field(default=None, description="null: remove the stored key")

    @field_validator("base_url", mode="before")
    @classmethod
    def _an_address(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("an openai-compatible provider needs its server's base_url")
        return value


class OllamaChange(_Body):
    """A change to the kind ollama: the stored key is dropped."""

    kind: Literal["ollama"]
    name: ProviderName | None = Field(default=None, description=_CHANGE_NULL)
    base_url: BaseUrl | None = Field(default=None, description="null: no address")


class LocalChange(_Body):
    """A change to the kind local: the stored address and key are dropped."""

    kind: Literal["local"]
    name: ProviderName | None = Field(default=None, description=_CHANGE_NULL)


_CHANGE_TAGS = {
    None: "same",
    "anthropic": "hosted",
    "openai": "hosted",
    "openai-compatible": "compatible",
    "ollama": "ollama",
    "local": "local",
}


def _change_tag(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return _CHANGE_TAGS.get(kind) if isinstance(kind, str | None) else None


ProviderChange = Annotated[
    Annotated[SameKindChange, Tag("same")]
    | Annotated[HostedChange, Tag("hosted")]
    | Annotated[CompatibleChange, Tag("compatible")]
    | Annotated[OllamaChange, Tag("ollama")]
    | Annotated[LocalChange, Tag("local")],
    Discriminator(_change_tag),
]


class ProviderOut(BaseModel):
    id: int
    name: str
    kind: ProviderKind
    base_url: str | None
    key: str | None = Field(description='The stored key, masked ("sk-...abcd"); null: none')
    key_source: KeySource | None = Field(
        description="Where the key calls use comes from (the environment wins); null: none"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ProviderRecord) -> ProviderOut:
        return cls(
            id=record.id,
            name=record.name,
            kind=record.kind,
            base_url=record.base_url,
            key=record.key_mask,
            key_source=record.key_source,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class ProviderTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MODEL_CHARS,
        pattern=MODEL_PATTERN,
        description="The model to call; null: the kind's default model",
    )


class ProviderError(BaseModel):
    code: str = Field(description="As the API names it, e.g. provider_authentication_failed")
    message: str
    hint: str | None = None


class ProviderTestOut(BaseModel):
    ok: bool
    model: str
    latency_ms: float = Field(description="The call's wall time, failed or not")
    key_source: KeySource | None
    error: ProviderError | None = Field(description="What went wrong, as mapped; null: ok")


@router.get("", summary="The configured providers (keys masked)")
async def list_all(_principal: ProvidersReader, db: DbDep) -> list[ProviderOut]:
    return [ProviderOut.of(record) for record in await list_providers(db)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a provider (administrators only)",
    responses={409: {"description": "A provider of that name exists"}},
)
async def create(
    body: ProviderIn, request: Request, admin: AdminPrincipal, db: DbDep
) -> ProviderOut:
    record = await add_provider(
        db,
        actor_of(request, admin),
        body.name,
        body.kind,
        base_url=getattr(body, "base_url", None),
        key=getattr(body, "key", None),
        check_address=_STORED_ADDRESS,
    )
    return ProviderOut.of(record)


@router.get("/{provider_id:id}", summary="One provider (key masked)")
async def show(provider_id: ProviderId, _principal: ProvidersReader, db: DbDep) -> ProviderOut:
    return ProviderOut.of(await provider_record(db, provider_id))


@router.patch(
    "/{provider_id:id}",
    summary="Change a provider (administrators only)",
    responses={
        409: {
            "description": "A provider of that name exists, or the change moves a stored key "
            "to another host (give the key again, or null)"
        }
    },
)
async def change(
    provider_id: ProviderId,
    body: Annotated[ProviderChange, Body()],
    request: Request,
    admin: AdminPrincipal,
    db: DbDep,
) -> ProviderOut:
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in body.model_fields_set
        if getattr(body, name) is not None or name in ("base_url", "key")
    }
    record = await change_provider(
        db, actor_of(request, admin), provider_id, changes, check_address=_STORED_ADDRESS
    )
    return ProviderOut.of(record)


@router.delete(
    "/{provider_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a provider and its key (administrators only)",
)
async def remove(
    provider_id: ProviderId, request: Request, admin: AdminPrincipal, db: DbDep
) -> Response:
    await remove_provider(db, actor_of(request, admin), provider_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{provider_id:id}/test",
    summary="Make one minimal call to a provider: its latency, or the mapped error",
    dependencies=[rate_limit("strict")],
)
async def test(
    provider_id: ProviderId,
    _admin: AdminPrincipal,
    db: DbDep,
    body: Annotated[ProviderTestIn | None, Body()] = None,
) -> ProviderTestOut:
    result = await run_provider_test(
        db,
        provider_id,
        body.model if body else None,
        check_address=check_model_endpoint,
        pin=model_endpoint_addresses,
    )
    error = ProviderError.model_validate(result.error) if result.error else None
    return ProviderTestOut(
        ok=result.ok,
        model=result.model,
        latency_ms=result.latency_ms,
        key_source=result.key_source,
        error=error,
    )
