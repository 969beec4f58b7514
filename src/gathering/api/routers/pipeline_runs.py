"""Pipeline runs: start one (202 at once: nodes run as jobs on the workers), follow it, cancel,
retry from the failed node, fork from any node with edited input, and decide for a node whose
outcome is unknown. Events of every run and node go to the WebSocket subject `pipeline:<id>`.

Owners see only their own runs, admins every one. API keys need `pipelines:read` to read and
`pipelines:write` (`pipelines:run` is not a separate scope) to start or change runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

import gathering.api.routes  # noqa: F401 - registers the `{name:id}` path convertor
from gathering.agents.persona import NO_NUL
from gathering.api.deps import MAX_ID, BusDep, DbDep
from gathering.api.fields import WholeNumber
from gathering.api.routers.pipelines import (
    JsonObject,
    NodeId,
    PipelineId,
    PipelinesReader,
    PipelinesWriter,
    visible_pipeline,
)
from gathering.api.security import ensure_owner, not_found, public_route, rate_limit
from gathering.auth.principal import Principal
from gathering.auth.users import UserStore
from gathering.db import Database
from gathering.errors import NotFoundError, PermissionDeniedError
from gathering.events import EventBus
from gathering.pipelines import get_pipeline
from gathering.pipelines.breaker import BreakerPolicy, list_breakers
from gathering.pipelines.executor import Executor
from gathering.pipelines.runs import RunRecord, get_run, list_owner_runs, list_runs
from gathering.pipelines.webhooks import SECRET_HEADER, check_webhook_secret, new_webhook_secret

router = APIRouter(prefix="/pipelines", tags=["pipelines"])
RunId = Annotated[WholeNumber, Path(ge=1, le=MAX_ID, description="The run's id")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunIn(_In):
    input: JsonObject = Field(default_factory=dict, description="Checked against input_schema")
    version: WholeNumber | None = Field(
        default=None, ge=1, le=2**31 - 1, description="A saved version (default: the current)"
    )


class ForkIn(_In):
    node: NodeId = Field(description="Run again from this node; the nodes before it are reused")
    input: JsonObject | None = Field(default=None, description="New input (default: the same)")


class ResolveIn(_In):
    action: Literal["approve", "deny", "retry", "skip"] = Field(
        description="approve or deny an approval node; retry or skip a node of unknown outcome"
    )
    comment: str = Field(default="", max_length=2_000, pattern=NO_NUL)


class NodeRunOut(BaseModel):
    node_id: str
    status: str = Field(description="pending, queued, running, waiting, succeeded, failed, ...")
    attempt: int
    output: Any = None
    error: dict[str, Any] | None = None
    reused: bool = Field(description="Taken from the run this one was retried or forked from")
    wake_at: datetime | None = None
    deadline: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunOut(BaseModel):
    id: int
    pipeline_id: int
    version: int
    owner_id: int
    status: str = Field(description="running, succeeded, failed or cancelled")
    input: dict[str, Any]
    error: dict[str, Any] | None = None
    trigger: str
    parent_run_id: int | None = None
    relation: str | None = Field(default=None, description="retry or fork (of parent_run_id)")
    deadline: datetime | None = None
    created_at: datetime
    finished_at: datetime | None = None
    nodes: list[NodeRunOut] = Field(default_factory=list)


class BreakerOut(BaseModel):
    target: str = Field(description="agent:<ref>, tool:<name> or host:<name>")
    state: str = Field(description="closed, open or half_open")
    failures: int
    opened_at: datetime | None = None


def _out(run: RunRecord) -> RunOut:
    nodes = [
        NodeRunOut(
            node_id=node.node_id,
            status=node.status,
            attempt=node.attempt,
            output=node.output,
            error=node.error,
            reused=node.reused,
            wake_at=node.wake_at,
            deadline=node.deadline,
            started_at=node.started_at,
            finished_at=node.finished_at,
        )
        for node in run.nodes.values()
    ]
    return RunOut(
        id=run.id,
        pipeline_id=run.pipeline_id,
        version=run.version,
        owner_id=run.owner_id,
        status=run.status,
        input=run.input,
        error=run.error,
        trigger=run.trigger,
        parent_run_id=run.parent_run_id,
        relation=run.relation,
        deadline=run.deadline,
        created_at=run.created_at,
        finished_at=run.finished_at,
        nodes=nodes,
    )


async def _visible_run(
    request: Request, principal: Principal, db: Database, run_id: int
) -> RunRecord:
    try:
        run = await get_run(db, run_id)
    except NotFoundError:
        raise not_found("pipeline run", run_id) from None
    await ensure_owner(
        request, principal, run.owner_id, resource="pipeline run", resource_id=run_id
    )
    return run


def _executor(db: Database, bus: EventBus) -> Executor:
    return Executor(db, bus)


_ENDED: dict[int | str, dict[str, Any]] = {409: {"description": "The run has ended"}}
_NOT_WAITING: dict[int | str, dict[str, Any]] = {
    409: {"description": "The node waits for no answer (or the run has ended)"}
}
_STARTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Started: its nodes run as jobs; follow it at GET /pipelines/runs/{id}"},
    422: {"description": "The input does not match the input schema, or a node cannot run"},
}


@router.post(
    "/{pipeline_id:id}/runs",
    summary="Start a run",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_STARTED,
)
async def run_start(
    pipeline_id: PipelineId,
    body: RunIn,
    request: Request,
    principal: PipelinesWriter,
    db: DbDep,
    bus: BusDep,
) -> RunOut:
    """Answers at once; the run pins the version it starts with."""
    record = await visible_pipeline(request, principal, db, pipeline_id)
    version = body.version or record.version
    run = await _executor(db, bus).start_run(pipeline_id, version, record.owner_id, body.input)
    return _out(run)


@router.get(
    "/runs",
    summary="Runs of every pipeline you may see, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def all_runs_list(
    principal: PipelinesReader,
    db: DbDep,
    run_status: Annotated[
        Literal["running", "succeeded", "failed", "cancelled"] | None,
        Query(alias="status", description="Only the runs in this status"),
    ] = None,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[RunOut]:
    """Your own runs (an administrator's: everyone's), without their nodes; e.g. the runs
    going on now with `status=running`."""
    runs = await list_owner_runs(
        db, principal.owner_filter, status=run_status, limit=limit, offset=offset
    )
    return [_out(run) for run in runs]


@router.get(
    "/{pipeline_id:id}/runs",
    summary="A pipeline's runs, newest first",
    dependencies=[rate_limit("relaxed")],
)
async def runs_list(
    pipeline_id: PipelineId,
    request: Request,
    principal: PipelinesReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1_000)] = 50,
    offset: Annotated[WholeNumber, Query(ge=0, le=1_000_000)] = 0,
) -> list[RunOut]:
    """Without their nodes (GET /pipelines/runs/{id} has them)."""
    await visible_pipeline(request, principal, db, pipeline_id)
    return [_out(run) for run in await list_runs(db, pipeline_id, limit=limit, offset=offset)]


@router.get(
    "/runs/{run_id:id}", summary="One run with its nodes", dependencies=[rate_limit("relaxed")]
)
async def run_get(run_id: RunId, request: Request, principal: PipelinesReader, db: DbDep) -> RunOut:
    """Each node's status, attempts, output, error and timings."""
    return _out(await _visible_run(request, principal, db, run_id))


@router.post("/runs/{run_id:id}/cancel", summary="Cancel a run", responses=_ENDED)
async def run_cancel(
    run_id: RunId, request: Request, principal: PipelinesWriter, db: DbDep, bus: BusDep
) -> RunOut:
    """Queued nodes never run; running ones are stopped within a second on any instance. 409
    when the run has ended."""
    await _visible_run(request, principal, db, run_id)
    return _out(await _executor(db, bus).cancel_run(run_id))


@router.post(
    "/runs/{run_id:id}/retry",
    summary="Retry a run from its failed node",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_STARTED | {409: {"description": "The run did not fail and was not cancelled"}},
)
async def run_retry(
    run_id: RunId, request: Request, principal: PipelinesWriter, db: DbDep, bus: BusDep
) -> RunOut:
    """A new run of the same version and input, linked to this one, reusing every output that
    succeeded; this run is not changed. 409 when it has not failed or been cancelled."""
    await _visible_run(request, principal, db, run_id)
    return _out(await _executor(db, bus).retry_run(run_id))


@router.post(
    "/runs/{run_id:id}/fork",
    summary="Fork a run from a node",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_STARTED,
)
async def run_fork(
    run_id: RunId,
    body: ForkIn,
    request: Request,
    principal: PipelinesWriter,
    db: DbDep,
    bus: BusDep,
) -> RunOut:
    """A new run, linked to this one, that reuses the outputs of the nodes before `node`
    (triggers aside: they take the new input) and runs `node` and what follows again."""
    await _visible_run(request, principal, db, run_id)
    return _out(await _executor(db, bus).fork_run(run_id, body.node, body.input))


@router.post(
    "/runs/{run_id:id}/nodes/{node_id}/resolve",
    summary="Answer a waiting node",
    responses=_NOT_WAITING,
)
async def node_resolve(
    run_id: RunId,
    node_id: Annotated[NodeId, Path(description="The node")],
    body: ResolveIn,
    request: Request,
    principal: PipelinesWriter,
    db: DbDep,
    bus: BusDep,
) -> RunOut:
    """An approval node is approved (the run goes on) or denied (the node fails); a node
    interrupted during an external call, or one a budget refused (`budget_exceeded`: raise the
    budget first), is run again (`retry`) or taken as done (`skip`). 409
    when the node is not waiting for an answer; 422 for an answer that does not fit it."""
    await _visible_run(request, principal, db, run_id)
    executor = _executor(db, bus)
    run = await executor.resolve(
        run_id, node_id, body.action, by=principal.user_id, comment=body.comment
    )
    return _out(run)


@router.get("/breakers", summary="Circuit breakers", dependencies=[rate_limit("relaxed")])
async def breakers_list(principal: PipelinesReader, db: DbDep) -> list[BreakerOut]:
    """The caller's breakers (an admin's: everyone's) as calls see them now, shared by every
    instance. A breaker is per owner and target: one owner's failures never stop another's."""
    found = await list_breakers(db, BreakerPolicy.from_settings(), owner_id=principal.owner_filter)
    return [
        BreakerOut(target=b.target, state=b.state, failures=b.failures, opened_at=b.opened_at)
        for b in found
    ]


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="Shown once: send it in the header to start runs")
    header: str = Field(description="The header that carries it")
    url: str = Field(description="Where to POST (the run's input as a JSON object)")


class WebhookRunOut(BaseModel):
    id: int = Field(description="The run started")
    status: str


@router.post("/{pipeline_id:id}/webhook-secret", summary="Make a new webhook secret")
async def webhook_secret(
    pipeline_id: PipelineId, request: Request, principal: PipelinesWriter, db: DbDep
) -> WebhookSecretOut:
    """A new secret for the pipeline's webhook trigger, shown this once; the previous one
    stops working."""
    await visible_pipeline(request, principal, db, pipeline_id)
    secret = await new_webhook_secret(db, pipeline_id)
    return WebhookSecretOut(
        secret=secret, header=SECRET_HEADER, url=f"/pipelines/{pipeline_id}/webhook"
    )


@router.post(
    "/{pipeline_id:id}/webhook",
    summary="Start a run from a webhook",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(public_route), rate_limit("strict")],
    responses={
        401: {"description": "No secret, or not this pipeline's"},
        403: {"description": "The pipeline's owner is disabled or read-only"},
        409: {"description": "The pipeline's current version has no webhook trigger"},
        **_STARTED,
    },
)
async def webhook_run(
    pipeline_id: PipelineId,
    db: DbDep,
    bus: BusDep,
    body: Annotated[JsonObject, Body(description="The run's input")],
    secret: Annotated[
        str | None, Header(alias=SECRET_HEADER, max_length=200, description="The secret")
    ] = None,
) -> WebhookRunOut:
    """No login: the pipeline's webhook secret is the credential. The pipeline's current
    version must have a webhook trigger (409 otherwise)."""
    await check_webhook_secret(db, pipeline_id, secret)
    record = await get_pipeline(db, pipeline_id)
    owner = await UserStore(db).get(record.owner_id)
    if owner is None or not owner.is_active or owner.role == "viewer":
        raise PermissionDeniedError(
            "the pipeline's owner may not start runs now (disabled, or read-only)",
            hint="an administrator can enable the account or give it back its role",
        )
    run = await _executor(db, bus).start_run(
        pipeline_id, record.version, record.owner_id, body, trigger="webhook"
    )
    return WebhookRunOut(id=run.id, status=run.status)
