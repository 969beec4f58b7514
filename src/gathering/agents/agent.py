"""`Agent`: a persona with an LLM, tools, a persisted conversation and long-term memory."""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from gathering.agents.persona import Persona
from gathering.agents.prompt import PromptBuilder
from gathering.agents.store import AgentRecord, AgentStore, HistoryEntry, default_store
from gathering.agents.sync import maybe_sync
from gathering.errors import InvalidInputError
from gathering.llm import (
    Completion,
    LLMProvider,
    Message,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    default_model,
    get_provider,
    known_providers,
)
from gathering.tools.function import FunctionTool

if TYPE_CHECKING:
    from gathering.agents.memory import AgentMemory

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
    }
)

Outcome = Literal["completed", "max_iterations"]
ToolLike = FunctionTool | tuple[ToolSpec, Callable[..., Any]]


@dataclass
class TurnResult:
    """What one `run` produced: the reply, how it ended, and what it cost."""

    text: str
    outcome: Outcome = "completed"
    iterations: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ToolStarted:
    """Stream event: the model asked for a tool and it is running."""

    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    """Stream event: a tool returned (or failed; `result.is_error`)."""

    result: ToolResult


AgentEvent = TextDelta | ToolStarted | ToolFinished | TurnResult


def _as_tool(tool: ToolLike) -> FunctionTool:
    if isinstance(tool, FunctionTool):
        return tool
    spec, handler = tool
    return FunctionTool(spec, handler)


def as_completion(reply: Any) -> Completion:
    """Read a `generate()` reply: a `Completion`, a `str`, or an Anthropic-style message
    whose `content` blocks carry `.text` (and `tool_use` blocks)."""
    if isinstance(reply, Completion):
        return reply
    if isinstance(reply, str):
        return Completion(text=reply)
    content = getattr(reply, "content", None)
    if isinstance(content, str):
        return Completion(text=content)
    if isinstance(content, Sequence):
        texts, calls = [], []
        for block in content:
            if getattr(block, "type", None) == "tool_use":
                calls.append(
                    ToolCall(
                        id=str(block.id), name=str(block.name), arguments=dict(block.input or {})
                    )
                )
            elif isinstance(getattr(block, "text", None), str):
                texts.append(block.text)
        return Completion(
            text="".join(texts),
            tool_calls=tuple(calls),
            stop_reason="tool_calls" if calls else "end",
        )
    raise InvalidInputError(
        f"the LLM client returned {type(reply).__name__}, which is not a reply",
        hint="return a str, a gathering.llm.Completion, or a message with content blocks",
    )


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
        self.max_iterations = max_iterations
        self.history_window = history_window
        self.prompt_budget = prompt_budget
        self.options = dict(options or {})
        self.project = project
        self.owner_id = owner_id
        self.id: int | None = None
        self.session_id: str | None = None
        self.task: str | None = None
        self.resume_note: str | None = None
        self._llm = llm
        self._provider_config = provider_config
        self._provider: LLMProvider | None = None
        self._store = store
        self._history: list[HistoryEntry] = []
        self._saved: AgentRecord | None = None
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        from gathering.agents.memory import AgentMemory

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
            agent._history = await store.history(agent.session_id, limit=agent.history_window)
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
        agent._saved = agent.record()
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
            self._provider = get_provider(self.provider, self.model, **self._provider_config)
        return self._provider

    async def store(self) -> AgentStore:
        """The store this agent writes to (the configured database unless one was given)."""
        if self._store is None:
            self._store = await default_store()
        return self._store

    async def save(self) -> None:
        """Store the agent's definition (when it changed) and open a session if it has none.

        A new agent is inserted (or takes over the stored agent of the same owner and name);
        a stored one is updated by id, so a deleted agent is never brought back.
        """
        store = await self.store()
        record = self.record()
        if self.id is None:
            saved = await store.save_agent(record)
            self.id, self.owner_id = saved.id, saved.owner_id
            self._saved = self.record()
        elif record != self._saved:
            await store.update_agent(record)
            self._saved = record
        if self.session_id is None:
            assert self.id is not None
            self.session_id = await store.new_session(self.id)

    async def new_session(self) -> str:
        """Start a fresh conversation (the old one stays stored)."""
        await self.save()
        assert self.id is not None
        self.session_id = await (await self.store()).new_session(self.id)
        self._history = []
        return self.session_id

    # --- conversation -------------------------------------------------------------------

    def process_message(self, text: str) -> Any:
        """The agent's reply to `text`: awaitable in async code, the text itself in sync code."""
        return maybe_sync(self._reply_text(text))

    async def _reply_text(self, text: str) -> str:
        return (await self.run(text)).text

    async def run(self, text: str) -> TurnResult:
        """One turn: store `text`, call the model (and tools) until it answers, store all."""
        result: TurnResult | None = None
        async for event in self._turn(text, streaming=False):
            if isinstance(event, TurnResult):
                result = event
        assert result is not None
        return result

    async def stream(self, text: str) -> AsyncIterator[AgentEvent]:
        """Like `run`, yielding text deltas and tool events as they happen, then the result."""
        async for event in self._turn(text, streaming=True):
            yield event

    def turn_lock(self) -> asyncio.Lock:
        """The lock that queues this agent's turns (one per event loop)."""
        return self._lock()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _turn(self, text: str, *, streaming: bool) -> AsyncIterator[AgentEvent]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("the message is empty")
        # Messages to one agent are queued in arrival order (asyncio.Lock is FIFO).
        async with self._lock():
            await self.save()
            await self._append([HistoryEntry(Message.user(text))])
            system = await self.system_prompt(text)
            specs = [tool.spec for tool in self.tools.values()]
            usage, cost = Usage(), None
            calls: list[ToolCall] = []
            for iteration in range(1, self.max_iterations + 1):
                messages = [Message.system(system), *self._window()]
                completion: Completion | None = None
                async for event in self._complete(messages, specs, streaming):
                    if isinstance(event, Completion):
                        completion = event
                    else:
                        yield event
                assert completion is not None
                usage = usage + completion.usage
                if completion.cost_usd is not None:
                    cost = (cost or 0.0) + completion.cost_usd
                await self._append(
                    [
                        HistoryEntry(
                            completion.message,
                            completion.model or self.model,
                            completion.usage,
                            completion.cost_usd,
                        )
                    ]
                )
                if not completion.tool_calls:
                    yield TurnResult(completion.text, "completed", iteration, usage, cost, calls)
                    return
                results = []
                for call in completion.tool_calls:
                    calls.append(call)
                    yield ToolStarted(call)
                    result = await self._run_tool(call)
                    results.append(result)
                    yield ToolFinished(result)
                await self._append([HistoryEntry(Message.tool_outputs(results))])
            note = (
                f"Stopped after {self.max_iterations} model calls without a final answer "
                "(max iterations reached)."
            )
            log.warning("agent reached max iterations", agent=self.name, limit=self.max_iterations)
            yield TurnResult(note, "max_iterations", self.max_iterations, usage, cost, calls)

    async def _complete(
        self, messages: list[Message], specs: list[ToolSpec], streaming: bool
    ) -> AsyncIterator[TextDelta | Completion]:
        from gathering import agents as package  # looked up per call: tests patch it

        tools = specs or None
        options = self.options
        if self._llm is None and package.llm_client is package.DEFAULT_CLIENT:
            provider = self.llm_provider
            if streaming:
                async for event in provider.stream(messages, tools, **options):
                    if isinstance(event, TextDelta):
                        yield event
                    elif isinstance(event, StreamDone):
                        yield event.completion
                return
            yield await provider.generate(messages, tools, **options)
            return
        client = self._llm if self._llm is not None else package.llm_client
        if self._llm is None:
            reply = client.generate(messages, tools=tools, provider=self.llm_provider, **options)
        else:
            reply = client.generate(messages, tools=tools, **options)
        if inspect.isawaitable(reply):
            reply = await reply
        completion = as_completion(reply)
        if streaming and completion.text:
            yield TextDelta(completion.text)
        yield completion

    async def _run_tool(self, call: ToolCall) -> ToolResult:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolResult(
                call.id,
                f"error: no tool named {call.name!r} (tools: {known})",
                is_error=True,
                name=call.name,
            )
        if call.invalid_arguments is not None:
            return ToolResult(
                call.id,
                f"error: the arguments are not a JSON object: {call.invalid_arguments[:200]}",
                is_error=True,
                name=call.name,
            )
        try:
            output = await tool.run(call.arguments)
        except Exception as exc:  # the model hears about it and may retry
            log.info("tool failed", tool=call.name, error=repr(exc))
            return ToolResult(
                call.id, f"error: {type(exc).__name__}: {exc}", is_error=True, name=call.name
            )
        return ToolResult(call.id, output, name=call.name)

    async def _append(self, entries: list[HistoryEntry]) -> None:
        assert self.session_id is not None
        await (await self.store()).append(self.session_id, entries)
        self._history.extend(entries)

    def _window(self) -> list[Message]:
        recent = self._history[-self.history_window :]
        # Never start the window on a tool result: its call would be cut off.
        while recent and recent[0].message.role == "tool":
            recent = recent[1:]
        return [entry.message for entry in recent]

    async def system_prompt(self, query: str | None = None) -> str:
        """The system prompt for the next call: persona, project, task, memories, resume note."""
        builder = PromptBuilder(self.prompt_budget)
        builder.set("persona", self.persona.render(self.name))
        builder.set("project", self.project)
        builder.set("task", self.task)
        if query:
            builder.set("memories", await self.memory.recall_for_prompt(query))
        builder.set("resume", self.resume_note)
        return builder.build()

    def forget_history(self) -> None:
        """Empty the history loaded in this process (after the stored one was cleared)."""
        self._history = []

    def history(self) -> list[HistoryEntry]:
        """The current session's messages as loaded in this process."""
        return list(self._history)

    def cleanup(self) -> None:
        """Drop the provider client and the history loaded in memory; stored data is kept."""
        self._provider = None
        self._history = []
