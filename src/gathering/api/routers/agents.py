"""`/agents`: create, read, update, delete agents; chat with them (JSON or server-sent events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gathering.agents import (
    Agent,
    AgentRecord,
    HistoryEntry,
    KnowledgeScope,
    Persona,
    PostgresAgentStore,
    ToolFinished,
    ToolStarted,
    TurnResult,
)
from gathering.agents.knowledge import MAX_CATEGORY_CHARS
from gathering.agents.turn_loop import IDEMPOTENCY_KEY_PATTERN, Outcome
from gathering.api.deps import (
    MAX_ID,
    AgentId,
    AgentsReader,
    AgentsWriter,
    BusDep,
    DbDep,
    app_state,
    owned_agent,
)
from gathering.api.errors import public_error
from gathering.api.fields import NO_NUL_PATTERN, Flag, Integer, WholeNumber, line, text
from gathering.api.security import (
    Principal,
    rate_limit,
)
from gathering.api.security.dependencies import audit_denial, security_state
from gathering.catalog.personas import PERSONA_NAME_PATTERN, get_persona
from gathering.catalog.settings import default_model_of, default_provider
from gathering.db import Database
from gathering.errors import GatheringError, InvalidInputError, PermissionDeniedError
from gathering.events import Event
from gathering.llm import TextDelta, known_providers
from gathering.llm.registry import TEST_PROVIDERS
from gathering.tools.agent_tools import remove_workspace
from gathering.usage import attributed, charge_task_to

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/agents", tags=["agents"])
# Users act with every scope; an API key only with those it was given.

LIVE_AGENTS = 256  # agents kept in memory per process (least recently used leave first)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=f"^{IDEMPOTENCY_KEY_PATTERN}$",
        description="Send the same key again (e.g. after a timeout) to get the stored reply "
        "of the first request instead of a second turn.",
    ),
]


def _check_provider(value: str | None) -> str | None:
    if value is not None and value not in known_providers():
        raise ValueError(f"unknown provider {value!r}; known: {', '.join(known_providers())}")
    return value


# Without GATHERING_ENV=development, the schema leaves out the test providers (api/openapi.py).
ProviderName = Annotated[
    str, WithJsonSchema({"type": "string", "enum": [*known_providers()]}, mode="validation")
]
ProviderField = Field(default=None, description="The model provider; left out: the default one")


class _ProviderChecked(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("provider", check_fields=False)
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        return _check_provider(value)


KNOWLEDGE_DESCRIPTION = (
    'Knowledge-base passages in the prompt: "all" (every document the agent may see), '
    '{"categories": [...], "documents": [ids]} (either list), or null for none.'
)


class KnowledgeSelection(BaseModel):
    """Some categories and/or documents of the knowledge base (not both empty)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"minItems": 1}}}
                for name in ("categories", "documents")
            ]
        },
    )

    categories: list[Annotated[str, line(MAX_CATEGORY_CHARS)]] = Field(
        default_factory=list, max_length=50
    )
    documents: list[Annotated[Integer, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=50
    )

    @model_validator(mode="after")
    def _names_something(self) -> KnowledgeSelection:
        if not self.categories and not self.documents:
            raise ValueError('name some categories or documents (or use "all")')
        return self


KnowledgeField = Literal["all"] | KnowledgeSelection | None


def _knowledge(value: KnowledgeField) -> KnowledgeScope | None:
    if isinstance(value, KnowledgeSelection):
        return KnowledgeScope.from_value(value.model_dump())
    return KnowledgeScope.from_value(value)


class AgentCreate(_ProviderChecked):
    """A new agent. Without a provider, the default one is used (`local` when no key is set)."""

    model_config = ConfigDict(
        json_schema_extra={  # a persona, or the name of one of the library: not both
            "not": {
                "required": ["persona", "persona_name"],
                "properties": {"persona_name": {"type": "string"}},
            }
        }
    )

    name: str = line(100)
    provider: ProviderName | None = ProviderField
    model: str | None = line(200, default=None)
    persona: Persona = Field(default_factory=Persona)
    persona_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=PERSONA_NAME_PATTERN,
        description="A persona of the library (GET /personas) to copy into the agent, "
        "instead of `persona`",
    )
    project: str | None = Field(default=None, max_length=4000, pattern=NO_NUL_PATTERN)
    max_iterations: Integer = Field(default=8, ge=1, le=50)
    knowledge: KnowledgeField = Field(default=None, description=KNOWLEDGE_DESCRIPTION)

    @model_validator(mode="after")
    def _one_persona(self) -> AgentCreate:
        if self.persona_name is not None and "persona" in self.model_fields_set:
            raise ValueError("give either persona or persona_name, not both")
        return self


class AgentUpdate(_ProviderChecked):
    """Fields to change; those left out stay as they are."""

    name: str | None = line(100, default=None)
    provider: ProviderName | None = ProviderField
    model: str | None = line(200, default=None)
    persona: Persona | None = None
    project: str | None = Field(default=None, max_length=4000, pattern=NO_NUL_PATTERN)
    max_iterations: Integer | None = Field(default=None, ge=1, le=50)
    knowledge: KnowledgeField = Field(default=None, description=KNOWLEDGE_DESCRIPTION)


class KnowledgeOut(BaseModel):
    """The knowledge an agent draws on, as stored (categories lower-case)."""

    categories: list[str] = []
    documents: list[int] = []


class AgentConfigOut(BaseModel):
    """How an agent runs (stored with it)."""

    max_iterations: int = Field(description="Model calls per turn at most")
    history_window: int | None = Field(default=None, description="Messages sent per turn")
    prompt_budget: int | None = Field(default=None, description="Prompt tokens at most")
    project: str | None = None
    knowledge: Literal["all"] | KnowledgeOut | None = Field(
        default=None, description=KNOWLEDGE_DESCRIPTION
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Provider options (temperature, max_tokens, ...)"
    )


class AgentOut(BaseModel):
    """An agent as the API shows it (built from its stored record)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    provider: str
    model: str
    persona: Persona
    config: AgentConfigOut
    owner_id: int
    created_at: datetime | None


# A message the schema allows fits in the 1 MiB body even with every character sent as a
# 12-byte JSON escape (a surrogate pair); tests/integration/test_body_limit.py checks it.
MAX_MESSAGE_CHARS = 80_000


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = text(MAX_MESSAGE_CHARS)
    new_session: Flag = Field(default=False, description="Start a fresh conversation first")


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int


class ToolCallOut(BaseModel):
    """A tool call the model made."""

    id: str
    name: str
    arguments: dict[str, Any]
    invalid_arguments: str | None = Field(
        default=None, description="The arguments as sent, when they were not a JSON object"
    )


class ToolResultOut(BaseModel):
    """What a tool answered to a call."""

    call_id: str
    content: str
    is_error: bool = False
    name: str | None = None


class ChatResponse(BaseModel):
    reply: str
    outcome: Outcome = Field(
        description="completed; max_iterations when the turn ran out of model calls; "
        "waiting_approval when a tool call waits for a person (`approval_id`): the turn goes "
        "on once it is answered, and its reply then comes in the history and as events"
    )
    iterations: int
    usage: UsageOut
    cost_usd: float | None
    session_id: str
    turn_id: str | None = None
    replayed: bool = Field(
        default=False, description="True when this is the stored reply to a repeated key"
    )
    tool_calls: list[ToolCallOut]
    approval_id: int | None = Field(
        default=None, description="The approval a waiting_approval turn waits for"
    )


class HistoryMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "error"] = Field(
        description="error: a failed turn, with why in `content`"
    )
    content: str
    tool_calls: list[ToolCallOut] = []
    tool_results: list[ToolResultOut] = []
    model: str | None = None
    created_at: datetime | None = None


def _out(record: AgentRecord) -> AgentOut:
    return AgentOut.model_validate(record)


def _event(kind: str, record: AgentRecord, principal: Principal) -> Event:
    """A durable event about an agent, for WebSocket subscribers of `agent:<id>`."""
    return Event(
        kind,
        {
            "id": record.id,
            "name": record.name,
            "provider": record.provider,
            "model": record.model,
            "owner_id": record.owner_id,
            "by": principal.user_id,
        },
        subject=f"agent:{record.id}",
        source="api",
    )


def _check_test_provider(request: Request, provider: str | None) -> None:
    if provider in TEST_PROVIDERS and app_state(request).settings.env != "development":
        raise InvalidInputError(
            f"the {provider} provider is for tests and demos only",
            hint="set GATHERING_ENV=development to use it through the API",
        )


async def _live_agent(request: Request, record: AgentRecord, db: Database) -> Agent:
    """This process's `Agent` for `record` (kept so its provider client is reused). Turns are
    serialised by agent id, so replacing or evicting this object never lets two run at once."""
    state = app_state(request)
    live = state.agents
    assert record.id is not None
    agent = live.get(record.id)
    if agent is None or agent.record() != replace(record, created_at=None):
        agent = Agent.from_record(record, store=PostgresAgentStore(db))
        agent.event_bus = await state.event_bus()
        live[record.id] = agent
    live.move_to_end(record.id)
    while len(live) > LIVE_AGENTS:
        live.popitem(last=False)
    return agent


@router.get("", summary="List agents", dependencies=[rate_limit("relaxed")])
async def list_agents(principal: AgentsReader, db: DbDep) -> list[AgentOut]:
    records = await PostgresAgentStore(db).list_agents(owner_id=principal.owner_filter)
    return [_out(r) for r in records]


_NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"description": "You have another agent of that name"}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an agent",
    responses={
        **_NAME_TAKEN,
        403: {"description": "persona_name without the scope personas:read"},
        404: {"description": "No library persona named persona_name"},
    },
)
async def create_agent(
    request: Request,
    body: AgentCreate,
    principal: AgentsWriter,
    db: DbDep,
    bus: BusDep,
) -> AgentOut:
    provider = body.provider or await default_provider(db)
    _check_test_provider(request, provider)
    persona = body.persona
    if body.persona_name is not None:  # a copy: later changes of the persona leave it be
        if not principal.has_scope("personas:read"):  # the copy shows the persona
            await audit_denial(request, principal, "scope missing", scope="personas:read")
            raise PermissionDeniedError(
                "this API key lacks the scope 'personas:read' (persona_name copies a persona)"
            )
        persona = (await get_persona(db, body.persona_name)).persona
    agent = Agent(
        body.name,
        provider,
        body.model or await default_model_of(db, provider),
        persona=persona,
        project=body.project,
        max_iterations=body.max_iterations,
        knowledge=_knowledge(body.knowledge),
        owner_id=principal.user_id,
    )
    async with db.transaction() as tx:
        record = await PostgresAgentStore(db).create_agent(agent.record())
        await bus.publish(_event("agent.created", record, principal), tx=tx)
    return _out(record)


@router.get("/{agent_id}", summary="One agent", dependencies=[rate_limit("relaxed")])
async def get_agent(
    request: Request,
    agent_id: AgentId,
    principal: AgentsReader,
    db: DbDep,
) -> AgentOut:
    return _out(await owned_agent(request, principal, db, agent_id))


@router.patch("/{agent_id}", summary="Change an agent", responses=_NAME_TAKEN)
async def update_agent(
    request: Request,
    agent_id: AgentId,
    body: AgentUpdate,
    principal: AgentsWriter,
    db: DbDep,
    bus: BusDep,
) -> AgentOut:
    record = await owned_agent(request, principal, db, agent_id)
    agent = Agent.from_record(record)  # keeps every setting the body does not change
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    _check_test_provider(request, changes.get("provider"))
    if "name" in changes:
        agent.name = changes["name"].strip()
    if "provider" in changes and changes["provider"] != agent.provider:
        agent.provider = changes["provider"]
        agent.model = changes.get("model") or await default_model_of(db, agent.provider)
    elif "model" in changes:
        agent.model = changes["model"]
    if "persona" in changes:
        agent.persona = Persona.from_value(changes["persona"])
    if "project" in body.model_fields_set:
        agent.project = body.project
    if "max_iterations" in changes:
        agent.max_iterations = changes["max_iterations"]
    if "knowledge" in body.model_fields_set:
        agent.knowledge = _knowledge(body.knowledge)
    async with db.transaction() as tx:
        updated = await PostgresAgentStore(db).update_agent(agent.record())
        await bus.publish(_event("agent.updated", updated, principal), tx=tx)
    app_state(request).agents.pop(agent_id, None)
    return _out(updated)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an agent")
async def delete_agent(
    request: Request,
    agent_id: AgentId,
    principal: AgentsWriter,
    db: DbDep,
    bus: BusDep,
) -> Response:
    record = await owned_agent(request, principal, db, agent_id)
    async with db.transaction() as tx:
        await PostgresAgentStore(db).delete_agent(agent_id)
        await bus.publish(_event("agent.deleted", record, principal), tx=tx)
    app_state(request).agents.pop(agent_id, None)
    await remove_workspace(agent_id, record.created_at)  # its files go with it
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _chatting(request: Request, principal: Principal, db: Database, agent_id: int) -> Agent:
    """The live agent a chat request talks to."""
    return await _live_agent(request, await owned_agent(request, principal, db, agent_id), db)


def _chat_response(result: TurnResult) -> ChatResponse:
    assert result.session_id is not None
    return ChatResponse(
        reply=result.text,
        outcome=result.outcome,
        iterations=result.iterations,
        usage=UsageOut(
            input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens
        ),
        cost_usd=result.cost_usd,
        session_id=result.session_id,
        turn_id=result.turn_id,
        replayed=result.replayed,
        tool_calls=[call.to_dict() for call in result.tool_calls],
        approval_id=result.approval_id,
    )


_CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    402: {"description": "budget_exceeded: a budget cannot take the next model call"},
    409: {"description": "agent_busy (with Retry-After), or a reused idempotency key"},
    429: {"description": "the chat rate tier, or too many of your turns running at once"},
    502: {"description": "the model provider failed or refused the request"},
    503: {"description": "the model or the database is unavailable (provider_busy: Retry-After)"},
    504: {"description": "the model provider did not answer in time"},
}


@router.post(
    "/{agent_id}/chat",
    summary="Send a message; the reply comes back with its usage",
    responses=_CHAT_ERRORS,
    dependencies=[rate_limit("chat")],
)
async def chat(
    request: Request,
    agent_id: AgentId,
    body: ChatRequest,
    principal: AgentsWriter,
    db: DbDep,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse:
    agent = await _chatting(request, principal, db, agent_id)
    with (
        security_state(request).turn_admission.admit(principal),
        attributed(user_id=principal.user_id),
    ):
        result = await agent.run(
            body.message, idempotency_key=idempotency_key, new_session=body.new_session
        )
    return _chat_response(result)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.post(
    "/{agent_id}/chat/stream",
    summary="Send a message; the reply streams back as server-sent events",
    response_class=StreamingResponse,
    dependencies=[rate_limit("chat")],
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "events: delta, tool_call, tool_result, done, error (a busy "
            "agent, a reused key or a failed turn come as an `error` event)",
        },
    },
)
async def chat_stream(
    request: Request,
    agent_id: AgentId,
    body: ChatRequest,
    principal: AgentsWriter,
    db: DbDep,
    idempotency_key: IdempotencyKey = None,
) -> StreamingResponse:
    agent = await _chatting(request, principal, db, agent_id)
    slot = security_state(request).turn_admission.admit(principal)  # held until the turn ends

    # The turn runs in its own task: a client that disconnects mid-stream does not cut it
    # short, so the reply is still stored and the next message finds a whole conversation.
    frames: asyncio.Queue[str | None] = asyncio.Queue()

    async def turn() -> None:
        try:
            charge_task_to(user_id=principal.user_id)  # this task's turn, for the caller
            async for event in agent.stream(
                body.message, idempotency_key=idempotency_key, new_session=body.new_session
            ):
                if isinstance(event, TextDelta):
                    frames.put_nowait(_sse("delta", {"text": event.text}))
                elif isinstance(event, ToolStarted):
                    frames.put_nowait(_sse("tool_call", event.call.to_dict()))
                elif isinstance(event, ToolFinished):
                    frames.put_nowait(_sse("tool_result", event.result.to_dict()))
                else:
                    frames.put_nowait(_sse("done", _chat_response(event).model_dump()))
        except GatheringError as exc:
            frames.put_nowait(_sse("error", public_error(exc)))
        except Exception:
            log.exception("chat stream failed", agent_id=agent_id)
            frames.put_nowait(
                _sse(
                    "error",
                    {
                        "code": "internal_error",
                        "message": "an unexpected error occurred; it has been logged",
                    },
                )
            )
        finally:
            slot.release()
            frames.put_nowait(None)

    app_state(request).run_in_background(turn(), name=f"chat-stream:{agent_id}")

    async def events() -> AsyncIterator[str]:
        while (frame := await frames.get()) is not None:
            yield frame

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{agent_id}/history",
    summary="The messages of the agent's current session",
    dependencies=[rate_limit("relaxed")],
)
async def history(
    request: Request,
    agent_id: AgentId,
    principal: AgentsReader,
    db: DbDep,
    limit: Annotated[WholeNumber, Query(ge=1, le=1000)] = 100,
) -> list[HistoryMessage]:
    record = await owned_agent(request, principal, db, agent_id)
    store = PostgresAgentStore(db)
    assert record.id is not None
    session_id = await store.latest_session(record.id)
    if session_id is None:
        return []
    return [_history_message(entry) for entry in await store.history(session_id, limit=limit)]


def _history_message(entry: HistoryEntry) -> HistoryMessage:
    body = entry.message.to_dict()
    body["role"] = entry.role
    if entry.error is not None:
        body["content"] = entry.error
    return HistoryMessage(**body, model=entry.model, created_at=entry.created_at)
