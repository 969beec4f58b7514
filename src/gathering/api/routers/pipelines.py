"""`/pipelines`: pipeline definitions (docs/pipelines.md), each owner's, every version kept.

POST stores a definition as version 1; PUT saves the next version when the definition changed
(its name may change too). Saving checks the graph: a definition the checks refuse (a cycle,
an edge to an unknown node, no trigger, ...) answers 422 with every problem at its JSON path
in `details.problems`. `POST /pipelines/validate` runs the same checks without saving and
answers 200 with the problems. Owners see only their own pipelines, admins every one. API keys
need `pipelines:read` / `pipelines:write`. Runs are in `pipeline_runs`.

The request body states each rule of the definition that JSON Schema can (node ids, each node
type's `config`, edges `from`/`to`, bounds, no NUL in any text); what it cannot (the graph,
templates, expressions, `input_schema` being a JSON Schema) is checked on save.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from pydantic import AllowInfNan, BaseModel, ConfigDict, Discriminator, Field, Strict
from pydantic import Tag as Variant
from typing_extensions import TypeAliasType

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.agents.persona import NO_NUL
from gathering.api.deps import MAX_ID, DbDep
from gathering.api.fields import Flag, Integer, WholeNumber, text
from gathering.api.security import (
    Principal,
    ensure_owner,
    not_found,
    rate_limit,
    require_scope,
    viewer_allowed,
)
from gathering.db import Database
from gathering.errors import InvalidInputError, NotFoundError
from gathering.pipelines import (
    PipelineRecord,
    Problem,
    create_pipeline,
    delete_pipeline,
    get_pipeline,
    get_version,
    list_pipelines,
    list_versions,
    parse_definition,
    update_pipeline,
    validate,
)
from gathering.pipelines.conditions import MAX_EXPRESSION_CHARS
from gathering.pipelines.definition import ID_PATTERN, MAX_EDGES, MAX_NODES, MAX_TEXT

router = APIRouter(prefix="/pipelines", tags=["pipelines"])
PipelinesReader = Annotated[Principal, Depends(require_scope("pipelines:read"))]
PipelinesWriter = Annotated[Principal, Depends(require_scope("pipelines:write"))]
PipelineId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The pipeline's id")]
VersionNumber = Annotated[WholeNumber, Path(ge=1, le=2**31 - 1, description="From 1")]
DAY = 86_400

# --- the definition, as a request body --------------------------------------------------------

Seconds = Annotated[float, Strict(), AllowInfNan(False)]
Key = Annotated[str, Field(pattern=NO_NUL)]
JsonValue = TypeAliasType(
    "JsonValue",
    "Key | Integer | Seconds | Flag | list[JsonValue] | dict[Key, JsonValue] | None",
)
JsonObject = dict[Key, JsonValue]
NodeId = Annotated[str, Field(pattern=ID_PATTERN, description="1-64 letters, digits, _ or -")]
Short = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
Named = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
Template = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=NO_NUL)]
Expression = Annotated[str, text(MAX_EXPRESSION_CHARS)]
Reference = (
    Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    | Annotated[Integer, Field(ge=1)]
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _variant(key: str, default: str, same: dict[str, str]) -> Any:
    """A discriminator on `key` (`default` when left out); a value in `same` takes the
    variant it names, any other its own (pydantic refuses one no variant has)."""

    def variant(value: Any) -> str | None:
        chosen = value.get(key, default) if isinstance(value, dict) else getattr(value, key, None)
        return same.get(chosen, chosen) if isinstance(chosen, str) else None

    return Discriminator(variant)


class ManualTriggerIn(_In):
    """Runs start by hand (API, CLI) or by the pipeline's webhook."""

    kind: Literal["manual", "webhook"] = "manual"
    cron: Short | None = None
    event: Short | None = None


class ScheduleTriggerIn(_In):
    kind: Literal["schedule"]
    cron: Named
    event: Short | None = None


class EventTriggerIn(_In):
    kind: Literal["event"]
    event: Named = Field(description="An event type, e.g. memory.added")
    cron: Short | None = None


TriggerConfigIn = Annotated[
    Annotated[ManualTriggerIn, Variant("manual")]
    | Annotated[ScheduleTriggerIn, Variant("schedule")]
    | Annotated[EventTriggerIn, Variant("event")],
    _variant("kind", "manual", {"webhook": "manual"}),
]


class AgentConfigIn(_In):
    agent: Reference = Field(description="The agent's name or id")
    prompt: Template = Field(description="A template over `input` and `outputs`")
    output: Literal["text", "json"] = "text"
    output_schema: JsonObject | None = None


class ToolConfigIn(_In):
    tool: NodeId = Field(description="A registered tool")
    arguments: JsonObject = Field(default_factory=dict, description="Texts are templates")


class ConditionConfigIn(_In):
    expression: Expression = Field(description="Over `input` and `outputs` (docs/pipelines.md)")


class HttpActionIn(_In):
    kind: Literal["webhook", "call_api"]
    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=NO_NUL)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: JsonValue = None
    event: Short | None = None


class EmitEventActionIn(_In):
    kind: Literal["emit_event"]
    event: Named
    url: Annotated[str, Field(max_length=2048, pattern=NO_NUL)] | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: JsonValue = None


ActionConfigIn = Annotated[HttpActionIn | EmitEventActionIn, Field(discriminator="kind")]


class ParallelAllIn(_In):
    join: Literal["all", "any"] = "all"
    n: None = None


class ParallelNIn(_In):
    join: Literal["n"]
    n: Integer = Field(ge=1, le=1_000, description="At most the number of branches")


ParallelConfigIn = Annotated[
    Annotated[ParallelAllIn, Variant("all")] | Annotated[ParallelNIn, Variant("n")],
    _variant("join", "all", {"any": "all"}),
]


class DelayConfigIn(_In):
    seconds: Seconds = Field(gt=0, le=366 * DAY)


class ApprovalConfigIn(_In):
    message: Template
    timeout_seconds: Seconds | None = Field(default=None, gt=0, le=366 * DAY)


class SubPipelineConfigIn(_In):
    pipeline: Reference = Field(description="The pipeline's name or id")
    input: JsonObject = Field(default_factory=dict, description="Texts are templates")


class RetryIn(_In):
    max_attempts: Integer = Field(default=1, ge=1, le=20)
    backoff: Seconds = Field(default=1.0, ge=0, le=3600)
    max_backoff: Seconds = Field(default=300.0, ge=0, le=DAY)
    retry_on: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=32
    )


class _NodeIn(_In):
    id: NodeId
    name: Short | None = None
    retry: RetryIn | None = None
    timeout_seconds: Seconds | None = Field(default=None, gt=0, le=7 * DAY)


class TriggerNodeIn(_NodeIn):
    type: Literal["trigger"]
    config: TriggerConfigIn = Field(default_factory=ManualTriggerIn)


class AgentNodeIn(_NodeIn):
    type: Literal["agent"]
    config: AgentConfigIn


class ToolNodeIn(_NodeIn):
    type: Literal["tool"]
    config: ToolConfigIn


class ConditionNodeIn(_NodeIn):
    type: Literal["condition"]
    config: ConditionConfigIn


class ActionNodeIn(_NodeIn):
    type: Literal["action"]
    config: ActionConfigIn


class ParallelNodeIn(_NodeIn):
    type: Literal["parallel"]
    config: ParallelConfigIn = Field(default_factory=ParallelAllIn)


class DelayNodeIn(_NodeIn):
    type: Literal["delay"]
    config: DelayConfigIn


class ApprovalNodeIn(_NodeIn):
    type: Literal["approval"]
    config: ApprovalConfigIn


class SubPipelineNodeIn(_NodeIn):
    type: Literal["sub_pipeline"]
    config: SubPipelineConfigIn


NODES_IN: tuple[type[_NodeIn], ...] = (
    TriggerNodeIn,
    AgentNodeIn,
    ToolNodeIn,
    ConditionNodeIn,
    ActionNodeIn,
    ParallelNodeIn,
    DelayNodeIn,
    ApprovalNodeIn,
    SubPipelineNodeIn,
)
NodeIn = Annotated[
    TriggerNodeIn
    | AgentNodeIn
    | ToolNodeIn
    | ConditionNodeIn
    | ActionNodeIn
    | ParallelNodeIn
    | DelayNodeIn
    | ApprovalNodeIn
    | SubPipelineNodeIn,
    Field(discriminator="type"),
]


class EdgeIn(_In):
    """`from` one node `to` another; with a `condition`, taken only when it holds."""

    id: NodeId | None = None
    source: NodeId = Field(alias="from")
    target: NodeId = Field(alias="to")
    condition: Expression | None = None


def _any_object() -> JsonObject:
    return {"type": "object"}


class PipelineIn(_In):
    """A pipeline definition (docs/pipelines.md), as POST /pipelines and PUT take it."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    description: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    input_schema: JsonObject = Field(
        default_factory=_any_object,
        description="A JSON Schema (2020-12) for a run's input",
    )
    nodes: list[NodeIn] = Field(min_length=1, max_length=MAX_NODES)
    edges: list[EdgeIn] = Field(default_factory=list, max_length=MAX_EDGES)
    timeout_seconds: Seconds | None = Field(default=None, gt=0, le=30 * DAY)

    def document(self) -> dict[str, Any]:
        """The definition as the client wrote it (defaults left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --- answers ------------------------------------------------------------------------------------


class PipelineSummaryOut(BaseModel):
    """A stored pipeline, without its definition."""

    id: int
    owner_id: int
    name: str
    description: str
    version: int = Field(description="The current version (from 1)")
    nodes: int = Field(description="How many nodes the current version has")
    created_at: datetime
    updated_at: datetime = Field(description="When the current version was saved")


class PipelineOut(PipelineSummaryOut):
    """A stored pipeline with its current definition."""

    definition: dict[str, Any] = Field(description="The current version's definition")


class VersionSummaryOut(BaseModel):
    version: int
    name: str = Field(description="The pipeline's name in this version")
    created_at: datetime
    created_by: int | None = Field(description="Who saved it (null: an account since deleted)")


class VersionOut(VersionSummaryOut):
    pipeline_id: int
    definition: dict[str, Any]


class ProblemOut(BaseModel):
    path: str = Field(description='Where, e.g. "nodes[2].config.prompt" ("" for the document)')
    code: str = Field(description="e.g. cycle, unknown_node, invalid_config (docs/pipelines.md)")
    message: str


class ValidationOut(BaseModel):
    valid: bool
    problems: list[ProblemOut]


def _summary(record: PipelineRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "owner_id": record.owner_id,
        "name": record.name,
        "description": record.description,
        "version": record.version,
        "nodes": len(record.document.get("nodes", [])),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _out(record: PipelineRecord) -> PipelineOut:
    return PipelineOut.model_validate(_summary(record) | {"definition": record.document})


def _problems(document: dict[str, Any]) -> list[Problem]:
    return validate(parse_definition(document))


async def visible_pipeline(
    request: Request, principal: Principal, db: Database, pipeline_id: int
) -> PipelineRecord:
    try:
        record = await get_pipeline(db, pipeline_id)
    except NotFoundError:
        raise not_found("pipeline", pipeline_id) from None
    await ensure_owner(
        request, principal, record.owner_id, resource="pipeline", resource_id=pipeline_id
    )
    return record


_SAVE_ANSWERS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The owner has another pipeline of that name"},
    422: {
        "description": "Invalid input: `errors` names each refused field, or the checks "
        "refused the definition (`details.problems`: each problem's path, code and message)"
    },
}

# --- routes -------------------------------------------------------------------------------------


@router.get("", summary="List pipelines", dependencies=[rate_limit("relaxed")])
async def pipelines_list(
    principal: PipelinesReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 100,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[PipelineSummaryOut]:
    """By name. Admins see every owner's."""
    found = await list_pipelines(db, owner_id=principal.owner_filter, limit=limit, offset=offset)
    return [PipelineSummaryOut.model_validate(_summary(record)) for record in found]


@router.post(
    "",
    summary="Store a pipeline (version 1)",
    status_code=status.HTTP_201_CREATED,
    responses=_SAVE_ANSWERS,
)
async def pipeline_create(body: PipelineIn, principal: PipelinesWriter, db: DbDep) -> PipelineOut:
    record = await create_pipeline(
        db, body.document(), owner_id=principal.user_id, by=principal.user_id
    )
    return _out(record)


@router.post(
    "/validate",
    summary="Check a definition without saving it",
    dependencies=[Depends(viewer_allowed)],  # a POST that only reads
)
async def pipeline_validate(
    principal: PipelinesReader,
    document: Annotated[
        dict[str, Any], Body(description="A definition, as POST /pipelines takes it")
    ],
) -> ValidationOut:
    """Every problem the checks find (empty: valid). A document that cannot be read as a
    definition at all comes back as one problem (code `invalid_document`)."""
    try:
        problems = await asyncio.to_thread(_problems, document)
    except InvalidInputError as exc:
        where = str(exc.details.get("path", ""))
        problems = [Problem(where, "invalid_document", exc.message)]
    return ValidationOut(
        valid=not problems, problems=[ProblemOut(**problem.to_dict()) for problem in problems]
    )


@router.get("/{pipeline_id:id}", summary="One pipeline", dependencies=[rate_limit("relaxed")])
async def pipeline_get(
    pipeline_id: PipelineId, request: Request, principal: PipelinesReader, db: DbDep
) -> PipelineOut:
    """Its current version's definition."""
    return _out(await visible_pipeline(request, principal, db, pipeline_id))


@router.put("/{pipeline_id:id}", summary="Save a new version", responses=_SAVE_ANSWERS)
async def pipeline_update(
    pipeline_id: PipelineId,
    body: PipelineIn,
    request: Request,
    principal: PipelinesWriter,
    db: DbDep,
) -> PipelineOut:
    """The definition becomes the next version (its name may change). The same definition as
    the current version adds none."""
    await visible_pipeline(request, principal, db, pipeline_id)
    record, _ = await update_pipeline(db, pipeline_id, body.document(), by=principal.user_id)
    return _out(record)


@router.delete(
    "/{pipeline_id:id}",
    summary="Delete a pipeline with all its versions",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def pipeline_delete(
    pipeline_id: PipelineId, request: Request, principal: PipelinesWriter, db: DbDep
) -> Response:
    await visible_pipeline(request, principal, db, pipeline_id)
    try:
        await delete_pipeline(db, pipeline_id)
    except NotFoundError:  # deleted meanwhile
        raise not_found("pipeline", pipeline_id) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{pipeline_id:id}/versions",
    summary="A pipeline's versions, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def pipeline_versions(
    pipeline_id: PipelineId, request: Request, principal: PipelinesReader, db: DbDep
) -> list[VersionSummaryOut]:
    await visible_pipeline(request, principal, db, pipeline_id)
    versions = await list_versions(db, pipeline_id)
    return [
        VersionSummaryOut(
            version=v.version, name=v.name, created_at=v.created_at, created_by=v.created_by
        )
        for v in versions
    ]


@router.get(
    "/{pipeline_id:id}/versions/{version:id}",
    summary="One version of a pipeline",
    dependencies=[rate_limit("relaxed")],
)
async def pipeline_version(
    pipeline_id: PipelineId,
    version: VersionNumber,
    request: Request,
    principal: PipelinesReader,
    db: DbDep,
) -> VersionOut:
    await visible_pipeline(request, principal, db, pipeline_id)
    found = await get_version(db, pipeline_id, version)
    return VersionOut(
        pipeline_id=found.pipeline_id,
        version=found.version,
        name=found.name,
        created_at=found.created_at,
        created_by=found.created_by,
        definition=found.document or {},
    )
