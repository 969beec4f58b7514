"""`/models`: the models of the catalog, each with its context window, max output and prices
per million tokens: the shipped prices (genai-prices' dated data) merged with admins'
overrides (`source` says which). Anyone signed in reads (an API key needs `models:read`); only
admins set or delete an override, and every change is audited. See docs/catalog.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from gathering.api.deps import AdminPrincipal, DbDep
from gathering.api.fields import Integer, Number
from gathering.api.routers.api_keys import actor_of
from gathering.api.security import require_scope
from gathering.auth.principal import Principal
from gathering.catalog.models import (
    MAX_MODEL_CHARS,
    MAX_PRICE_PER_MILLION,
    MAX_TOKENS_LIMIT,
    ModelRow,
    ModelValues,
    Source,
    list_models,
    remove_model_override,
    set_model_override,
)

router = APIRouter(prefix="/models", tags=["models"])

PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# A model name; "/" may separate parts ("meta-llama/llama-3.3-70b"), each starting with a letter
# or digit (so no "." or ".." part, which clients would resolve away).
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*(/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*$"
ProviderParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=PROVIDER_PATTERN,
        description="A provider kind (anthropic, openai, ...) or a configured provider's name",
    ),
]
# The bounds in JSON Schema's words (pydantic writes those of a type with a validator as given).
Tokens = Annotated[
    Integer,
    Field(ge=1, le=MAX_TOKENS_LIMIT),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT}),
]
Price = Annotated[
    Number,
    Field(ge=0, le=MAX_PRICE_PER_MILLION),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_PRICE_PER_MILLION}),
]
ModelParam = Annotated[
    str,
    Path(min_length=1, max_length=MAX_MODEL_CHARS, pattern=MODEL_PATTERN, description="A model"),
]


class ModelOverrideIn(BaseModel):
    """An admin's values for one model (replacing any earlier override); what is left out
    keeps the shipped value. Prices come as an input and output pair."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["context_window"]},
                {"required": ["max_output"]},
                {"required": ["input_per_million"]},
            ],
            "dependentRequired": {
                "input_per_million": ["output_per_million"],
                "output_per_million": ["input_per_million"],
                "cached_input_per_million": ["input_per_million"],
            },
        },
    )

    # Left out, not null: the schema's types hold no null, and an explicit null is refused.
    context_window: Tokens | SkipJsonSchema[None] = Field(
        default=None, description="Tokens, prompt plus reply"
    )
    max_output: Tokens | SkipJsonSchema[None] = Field(
        default=None, description="Most tokens of one reply"
    )
    input_per_million: Price | SkipJsonSchema[None] = Field(
        default=None, description="USD per million"
    )
    output_per_million: Price | SkipJsonSchema[None] = Field(
        default=None, description="USD per million"
    )
    cached_input_per_million: Price | SkipJsonSchema[None] = Field(
        default=None, description="USD per million cached input tokens"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(value is None for value in data.values()):
            raise ValueError("leave a value out to keep the shipped one; null is not a value")
        return data

    def values(self) -> ModelValues:
        return ModelValues(
            self.context_window,
            self.max_output,
            self.input_per_million,
            self.output_per_million,
            self.cached_input_per_million,
        )


class ModelOut(BaseModel):
    provider: str = Field(description="A provider kind, or a configured provider's name")
    model: str
    context_window: int | None = Field(description="Tokens, prompt plus reply; null: unknown")
    max_output: int | None = Field(description="Most tokens of one reply; null: unknown")
    input_per_million: float | None = Field(description="USD; null: unpriced")
    output_per_million: float | None
    cached_input_per_million: float | None = Field(
        description="USD per million cached input tokens; null: not priced apart"
    )
    source: Source = Field(description="table: the shipped values; catalog: an admin's override")
    prices_as_of: datetime | None = Field(
        description="When the shipped prices shown are in force (genai-prices' data: dated "
        "changes, time-of-day windows); null when an override sets them"
    )
    updated_at: datetime | None = Field(description="When the override was set")
    updated_by: int | None = Field(description="The admin who set it")

    @classmethod
    def of(cls, row: ModelRow) -> ModelOut:
        return cls(
            provider=row.provider,
            model=row.model,
            context_window=row.context_window,
            max_output=row.max_output,
            input_per_million=row.input_per_million,
            output_per_million=row.output_per_million,
            cached_input_per_million=row.cached_input_per_million,
            source=row.source,
            prices_as_of=row.prices_as_of,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )


@router.get("", summary="Every known model: the shipped table merged with admins' overrides")
async def list_all(
    _principal: Annotated[Principal, Depends(require_scope("models:read"))],
    db: DbDep,
    provider: Annotated[
        str | None,
        Query(min_length=1, max_length=63, pattern=PROVIDER_PATTERN, description="Only these"),
    ] = None,
) -> list[ModelOut]:
    return [ModelOut.of(row) for row in await list_models(db, provider)]


@router.put(
    "/{provider}/{model:path}",
    summary="Override a model's context window, max output or prices (administrators only)",
)
async def put_override(
    provider: ProviderParam,
    model: ModelParam,
    body: ModelOverrideIn,
    request: Request,
    admin: AdminPrincipal,
    db: DbDep,
) -> ModelOut:
    row = await set_model_override(db, actor_of(request, admin), provider, model, body.values())
    return ModelOut.of(row)


@router.delete(
    "/{provider}/{model:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a model's override: back to the shipped values (administrators only)",
)
async def delete_override(
    provider: ProviderParam, model: ModelParam, request: Request, admin: AdminPrincipal, db: DbDep
) -> Response:
    await remove_model_override(db, actor_of(request, admin), provider, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
