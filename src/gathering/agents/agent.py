"""`Agent`: a persona with an LLM, tools, a persisted conversation and long-term memory."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gathering.agents.agent_store import (
    AgentRecord,
    AgentStore,
    PostgresAgentStore,
    default_store,
)
from gathering.agents.conversation_store import HistoryEntry
from gathering.agents.knowledge import KnowledgeScope
from gathering.agents.model_adapter import ClientProvider, is_provider
from gathering.agents.sync import maybe_sync
from gathering.agents.system_prompt import PromptBuilder
from gathering.agents.turn_lock import local_turn_lock
from gathering.agents.turn_loop import AgentEvent, TurnLimits, TurnResult, run_turn
from gathering.catalog.models import model_limits
from gathering.catalog.personas import Persona
from gathering.catalog.providers import agent_provider_config
from gathering.db.database import Queries
from gathering.errors import InvalidInputError
from gathering.llm import LLMProvider, ToolSpec, default_model, get_provider, known_providers
from gathering.tools.agent_tools import (
    LinkedProject,
    ToolBox,
    agent_workspace,
    enabled_tools,
    linked_project,
)
from gathering.tools.context import ToolContext
from gathering.tools.egress import check_model_endpoint, model_endpoint_addresses
from gathering.tools.function import FunctionTool
from gathering.tools.mcp import mcp_hub
from gathering.tools.registry import loaded_registry, named_tool
from gathering.tools.signature import function_tool

if TYPE_CHECKING:
    from gathering.agents.agent_memory import AgentMemory
    from gathering.events import EventBus

log = structlog.get_logger(__name__)

DEFAULT_PROVIDER = "anthropic"
DEFAULT_MAX_ITERATIONS = 8
DEFAULT_HISTORY_WINDOW = 40
_CONFIG_KEYS = frozenset(
    {
        "name",
        "provider",
        "model",
        "persona",
        "max_iterations",
        "history_window",
        "prompt_budget",
        "options",
        "project",
        "knowledge",
    }
)

ToolLike = FunctionTool | tuple[ToolSpec, Callable[..., Any]] | Callable[..., Any] | str
"""A tool given to an `Agent`: a `FunctionTool`, a (spec, handler) pair, a typed function (see
`function_tool`; its effect is `external` unless built with `@tool(effect=...)`), or the name
of a registry tool."""


def _as_tool(tool: ToolLike) -> FunctionTool:
    if isinstance(tool, FunctionTool):
        return tool
    if isinstance(tool, str):
        return named_tool(tool)
    if isinstance(tool, tuple):
        spec, handler = tool
        return FunctionTool(spec, handler)
    return function_tool(tool)


class Agent:
    """An agent: a name and persona, an LLM (provider + model, or any `llm=` object with a
    `generate()` method), tools, and a conversation stored before each reply returns.

    `process_message(text)` is awaited in async code and returns the reply directly when
    called from sync code with no running event loop (see `gathering.agents.sync`).
    """

    def __init__(
        self,
        name: str,
        provider: str | None = None,
        model: str | None = None,
        *,
        llm: Any = None,
        persona: Persona | Mapping[str, Any] | None = None,
        tools: Sequence[ToolLike] = (),
        store: AgentStore | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        history_window: int = DEFAULT_HISTORY_WINDOW,
        prompt_budget: int = 2000,
        options: Mapping[str, Any] | None = None,
        project: str | None = None,
        knowledge: KnowledgeScope | str | Mapping[str, Any] | None = None,
        owner_id: int | None = None,
        **provider_config: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("an agent needs a non-empty name")
        provider_name = (provider or DEFAULT_PROVIDER).strip().lower()
        if llm is None and provider_name not in known_providers():
            raise InvalidInputError(
                f"unknown LLM provider {provider!r}",
                hint=f"known providers: {', '.join(known_providers())}",
            )
        if max_iterations < 1:
            raise InvalidInputError("max_iterations must be at least 1")
        self.name = name.strip()
        self.provider = provider_name
        self.model = model or (default_model(provider_name) if llm is None else "custom")
        self.persona = Persona.from_value(persona)
        self.tools = {tool.name: tool for tool in map(_as_tool, tools)}
        # Where its tools work: the workspace a caller (a circle) gives, else its linked
        # project's directory, else its own workspace.
        self.workspace: Path | None = None
        self.linked_project: LinkedProject | None = None
        self.max_iterations = max_iterations
        self.history_window = history_window
        self.prompt_budget = prompt_budget
        self.options = dict(options or {})
        self.project = project
        self.knowledge = KnowledgeScope.from_value(knowledge)
        self.owner_id = owner_id
        self.id: int | None = None
        self.created_at: datetime | None = None
        self.session_id: str | None = None
        self.task: str | None = None
        self.resume_note: str | None = None
        self._llm = llm
        self._provider_config = provider_config
        self._catalog_config: dict[str, Any] = {}  # from the catalog, as its last turn read it
        self._provider: LLMProvider | None = None
        self._store = store
        self._history: list[HistoryEntry] = []
        self._saved: AgentRecord | None = None
        # Built by its constructor, an agent starts a conversation of its own at its first
        # turn; loaded or built from a record, it continues the stored current session.
        self._fresh_session = True
        self.event_bus: EventBus | None = None  # turn events go here when set (the API sets it)
        from gathering.agents.agent_memory import AgentMemory

        self.memory: AgentMemory = AgentMemory(self)

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} {self.provider}/{self.model} id={self.id}>"

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> Agent:
        """An agent from a dict such as `{"name": ..., "provider": ..., "model": ...}`."""
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise InvalidInputError(
                f"unknown agent settings: {sorted(unknown)}", hint=f"known: {sorted(_CONFIG_KEYS)}"
            )
        if "name" not in config:
            raise InvalidInputError("an agent config needs a name")
        return cls(**{**dict(config), **kwargs})

    @classmethod
    async def load(
        cls,
        ref: int | str,
        *,
        store: AgentStore | None = None,
        owner_id: int | None = None,
        **kwargs: Any,
    ) -> Agent:
        """The stored agent `ref` (id or name), continuing its latest session (of which the
        last `history_window` messages are loaded)."""
        store = store or await default_store()
        record = await store.load_agent(ref, owner_id=owner_id)
        agent = cls.from_record(record, store=store, **kwargs)
        agent.session_id = await store.latest_session(record.id or 0)
        if agent.session_id is not None:
            agent._history = await store.window(agent.session_id, agent.history_window)
        return agent

    @classmethod
    def from_record(cls, record: AgentRecord, **kwargs: Any) -> Agent:
        """An agent built from its stored definition (no session opened yet)."""
        config = dict(record.config)
        agent = cls(
            record.name,
            record.provider,
            record.model,
            persona=record.persona,
            owner_id=record.owner_id,
            **{k: v for k, v in config.items() if k in _CONFIG_KEYS},
            **kwargs,
        )
        agent.id = record.id
        agent.created_at = record.created_at
        agent._saved = agent.record()
        agent._fresh_session = False
        return agent

    def record(self) -> AgentRecord:
        """This agent's definition, as stored."""
        config: dict[str, Any] = {
            "max_iterations": self.max_iterations,
            "history_window": self.history_window,
            "prompt_budget": self.prompt_budget,
        }
        if self.options:
            config["options"] = self.options
        if self.project:
            config["project"] = self.project
        if self.knowledge is not None:
            config["knowledge"] = self.knowledge.to_value()
        return AgentRecord(
            name=self.name,
            provider=self.provider,
            model=self.model,
            persona=self.persona.model_dump(mode="json"),
            config=config,
            id=self.id,
            owner_id=self.owner_id,
        )

    @property
    def llm_provider(self) -> Any:
        """The model client: the `llm=` object when given, else the provider (built once)."""
        if self._llm is not None:
            return self._llm
        if self._provider is None:
            config = {**self._catalog_config, **self._provider_config}
            self._provider = get_provider(self.provider, self.model, **config)
        return self._provider

    async def model_provider(self, queries: Queries | None = None) -> LLMProvider:
        """What the turn loop calls: a provider, with any other `llm=` object or a replaced
        `gathering.agents.llm_client` wrapped into one (see `model_adapter`).

        With `queries`, the catalog is read first (`catalog_config`): a change made there on
        any instance applies from the next turn on."""
        from gathering import agents as package  # looked up per turn: tests patch it

        if self._llm is not None:
            if is_provider(self._llm):
                return self._llm  # type: ignore[no-any-return]
            return ClientProvider(self._llm, name=self.provider, model=self.model)
        if queries is not None:
            config = await self.catalog_config(queries)
            if config != self._catalog_config:
                self._catalog_config, self._provider = config, None  # built again below
        provider: LLMProvider = self.llm_provider
        if package.llm_client is not package.DEFAULT_CLIENT:
            return ClientProvider(
                package.llm_client, name=self.provider, model=self.model, provider=provider
            )
        return provider

    async def catalog_config(self, queries: Queries) -> dict[str, Any]:
        """What the catalog gives this agent's provider: the address and key of the catalog
        provider it names (environment variables win, see `gathering.catalog.providers`), and
        the context window an admin set for its model. Arguments given to the agent win. The
        stored address is checked against the egress rules of model endpoints first (never a
        cloud metadata address), and again, pinned, as each request is sent; the key is
        decrypted with its store's server secret."""
        settings = self._store.db.settings if isinstance(self._store, PostgresAgentStore) else None
        config = await agent_provider_config(
            queries,
            self.provider,
            check_address=check_model_endpoint,
            pin=model_endpoint_addresses,
            settings=settings,
        )
        limits = await model_limits(queries, self.provider, self.model)
        if limits is not None and limits.source == "catalog":
            config["context_window"] = limits.context_window
        return config

    async def store(self) -> AgentStore:
        """The store this agent writes to (the configured database unless one was given)."""
        if self._store is None:
            self._store = await default_store()
        return self._store

    async def save(self) -> None:
        """Store the agent's definition (when it changed); a new agent opens its session.

        A new agent is inserted (or takes over the stored agent of the same owner and name);
        a stored one is updated by id, so a deleted agent is never brought back.
        """
        store = await self.store()
        record = self.record()
        if self.id is None:
            saved = await store.save_agent(record)
            self.id, self.owner_id, self.created_at = saved.id, saved.owner_id, saved.created_at
            self._saved = self.record()
        elif record != self._saved:
            await store.update_agent(record)
            self._saved = record
        if self._fresh_session:
            await self.new_session()

    async def ensure_saved(self) -> None:
        """`save()` when something is to be saved, one call at a time for this object (in call
        order, so concurrent first messages keep their order)."""
        if self.id is not None and not self._fresh_session and self.record() == self._saved:
            return
        wait = TurnLimits.from_settings().busy_wait
        async with local_turn_lock(("agent-object", id(self)), self.id or 0, wait=wait):
            await self.save()

    async def new_session(self) -> str:
        """Start a fresh conversation (the old one stays stored); waits for a running turn."""
        if self.id is None:
            self._fresh_session = False  # save() opens the session below, once
            await self.save()
        assert self.id is not None
        store = await self.store()
        async with store.conversation(self.id, wait=TurnLimits.from_settings().busy_wait) as conv:
            self.session_id = await conv.new_session()
        self._fresh_session = False
        self._history = []
        return self.session_id

    def wants_new_session(self) -> bool:
        """Whether the next turn must open a session first (checked under the turn lock)."""
        return self._fresh_session

    # --- tools --------------------------------------------------------------------------

    async def turn_tools(self, queries: Queries | None) -> ToolBox:
        """The tools of a turn: the registry tools enabled for this agent, with their policies
        (read from the database, so a change made on any instance applies), and the agent's
        own, which win a name clash and always run."""
        box = ToolBox({})
        if queries is not None and self.id is not None:
            self.linked_project = await linked_project(queries, self.id)
            # MCP servers' tools are looked up only when the agent has one enabled.
            mcp_tools = functools.partial(mcp_hub().tools_for, queries, self.owner_id, self.id)
            box = await enabled_tools(queries, self.id, await loaded_registry(), more=mcp_tools)
        return box.merged(self.tools)

    def tool_context(self, call_id: str | None = None) -> ToolContext:
        """What a tool called by this agent is told: the agent, its owner, its workspace (the
        one it was given: a circle's; else its linked project's directory, as its last
        `turn_tools` read it; else its own) and its database (when it is stored in PostgreSQL)."""
        workspace = self.workspace
        if workspace is None and self.linked_project is not None:
            workspace = self.linked_project.directory
        if workspace is None and self.id is not None:
            workspace = agent_workspace(self.id, self.created_at)
        db = self._store.db if isinstance(self._store, PostgresAgentStore) else None
        return ToolContext(self.id, self.owner_id, workspace, call_id, db=db)

    # --- conversation -------------------------------------------------------------------

    def process_message(self, text: str) -> Any:
        """The agent's reply to `text`: awaitable in async code, the text itself in sync code."""
        return maybe_sync(self._reply_text(text))

    async def _reply_text(self, text: str) -> str:
        return (await self.run(text)).text

    async def run(
        self, text: str, *, idempotency_key: str | None = None, new_session: bool = False
    ) -> TurnResult:
        """One turn: store `text`, call the model (and tools) until it answers, store all.

        With `idempotency_key`, a repeated call returns the stored result of the first one.
        """
        result: TurnResult | None = None
        async for event in self.stream(
            text, idempotency_key=idempotency_key, new_session=new_session, _streaming=False
        ):
            if isinstance(event, TurnResult):
                result = event
        assert result is not None
        return result

    async def stream(
        self,
        text: str,
        *,
        idempotency_key: str | None = None,
        new_session: bool = False,
        _streaming: bool = True,
    ) -> AsyncIterator[AgentEvent]:
        """Like `run`, yielding text deltas and tool events as they happen, then the result."""
        async for event in run_turn(
            self,
            text,
            streaming=_streaming,
            idempotency_key=idempotency_key,
            new_session=new_session,
        ):
            yield event

    async def system_prompt(
        self, query: str | None = None, using: Queries | None = None, *, recall: bool = True
    ) -> str:
        """The system prompt for the next call: persona, project (its own text, else its
        linked project's context, read on `using`), task, memories, knowledge passages (with
        `knowledge`) and the resume note. `using`: the connection to recall on;
        `recall=False` skips memory recall (the owner has no memories)."""
        builder = PromptBuilder(self.prompt_budget)
        builder.set("persona", self.persona.render(self.name))
        if using is not None and self.id is not None:
            self.linked_project = await linked_project(using, self.id)
        linked = self.linked_project.context if self.linked_project is not None else None
        builder.set("project", self.project or linked)
        builder.set("task", self.task)
        if query:
            if recall:
                builder.set("memories", await self.memory.recall_for_prompt(query, using))
            builder.set("knowledge", await self.memory.knowledge_for_prompt(query, using))
        builder.set("resume", self.resume_note)
        return builder.build()

    def remember_window(self, entries: list[HistoryEntry]) -> None:
        """Keep `entries` (the session's window after a turn) as this object's history."""
        self._history = entries
        self._fresh_session = False

    def forget_history(self) -> None:
        """Empty the history loaded in this process (after the stored one was cleared)."""
        self._history = []

    def history(self) -> list[HistoryEntry]:
        """The current session's messages as this process last saw them (at most the window)."""
        return list(self._history)

    def cleanup(self) -> None:
        """Drop the provider client and the history loaded in memory; stored data is kept."""
        self._provider = None
        self._history = []
