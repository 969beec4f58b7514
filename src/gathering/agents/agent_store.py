"""Where agents live: their definitions, and access to their conversations (PostgreSQL, or
memory for scratch use)."""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from gathering.agents.conversation_store import (
    Conversation,
    HistoryEntry,
    PostgresConversation,
    TurnStart,
    WindowCache,
    stored_history,
    stored_window,
)
from gathering.agents.in_memory_conversation import (
    InMemoryConversation,
    MemorySession,
    MemoryTurn,
)
from gathering.agents.turn_lock import busy, local_turn_lock
from gathering.db import Database, Row
from gathering.db.database import OnConnection
from gathering.db.locks import LockKey, release_lock, wait_for_lock
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text
from gathering.errors import ConflictError, DatabaseUnavailableError, NotFoundError


@dataclass(frozen=True)
class AgentRecord:
    """An agent's stored definition."""

    name: str
    provider: str
    model: str
    persona: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    owner_id: int | None = None
    created_at: datetime | None = None


class AgentStore(Protocol):
    """Persistence of agents, sessions and messages."""

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        """Insert a new agent and return it with its id; when its owner has one of that name
        with the same definition, return that one; with another definition, `ConflictError`."""
        ...

    async def update_agent(self, record: AgentRecord) -> AgentRecord:
        """Replace the definition of agent `record.id`; `NotFoundError` when it is gone."""
        ...

    async def load_agent(self, ref: int | str, *, owner_id: int | None = None) -> AgentRecord:
        """An agent by id or name; `NotFoundError` when there is none."""
        ...

    async def list_agents(self, *, owner_id: int | None = None) -> list[AgentRecord]:
        """Every agent (of `owner_id`, when given), by name."""
        ...

    async def delete_agent(self, agent_id: int) -> None:
        """Delete an agent with its sessions and messages."""
        ...

    def conversation(
        self, agent_id: int, *, wait: float, turn: TurnStart | None = None
    ) -> AbstractAsyncContextManager[Conversation]:
        """Hold the agent's turn lock (waiting at most `wait` seconds, else `AgentBusyError`)
        and give its current session, with `turn` begun in it when given."""
        ...

    async def latest_session(self, agent_id: int) -> str | None:
        """The current (newest) session, if any."""
        ...

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        """The session's stored entries in order (the last `limit` ones, when given)."""
        ...

    async def window(self, session_id: str, limit: int) -> list[HistoryEntry]:
        """The last `limit` messages of the session a model may see (no failed turns)."""
        ...


def _record(row: Row) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        name=row["name"],
        provider=row["provider"],
        model=row["model"],
        persona=row["persona"] or {},
        config=row["config"] or {},
        owner_id=row["owner_id"],
        created_at=row["created_at"],
    )


def _definition(record: AgentRecord) -> tuple[str, str, Any, Any]:
    """What makes two records the same agent, with persona and config as stored (JSON)."""
    stored = json.loads(json.dumps([record.persona, record.config], default=str))
    return record.provider, record.model, stored[0], stored[1]


def ensure_same_definition(stored: AgentRecord, new: AgentRecord) -> None:
    """A new `Agent(...)` takes over a stored agent of its name only when it defines the same
    agent; otherwise `ConflictError`, so a script never overwrites an agent by accident."""
    if _definition(stored) != _definition(new):
        raise ConflictError(
            f"an agent named {stored.name!r} is stored already, defined differently "
            f"({stored.provider}/{stored.model}, this one {new.provider}/{new.model})",
            hint=f"continue it with `await Agent.load({stored.name!r})` (change it there and "
            f"`await agent.save()`), pick another name, or delete it first "
            f"(`gathering agents delete {stored.name}`)",
        )


_SQL = queries_of("gathering.agents")


class PostgresAgentStore:
    """The store of record: every write is committed before the caller goes on."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _insert_agent(self, record: AgentRecord, statement: str) -> Row:
        row = await self.db.fetch_one(
            _SQL[statement],
            record.name,
            record.provider,
            record.model,
            Jsonb(dict(record.persona)),
            Jsonb(dict(record.config)),
            record.owner_id,
        )
        assert row is not None
        return row

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        row = await self._insert_agent(record, "insert_or_find_agent")
        stored = _record(row)
        if not row["inserted"]:
            ensure_same_definition(stored, record)
        return stored

    async def create_agent(self, record: AgentRecord) -> AgentRecord:
        """Insert a new agent; `ConflictError` when its owner has one of that name."""
        return _record(await self._insert_agent(record, "insert_agent"))

    async def update_agent(self, record: AgentRecord) -> AgentRecord:
        """Replace the definition of agent `record.id`; `NotFoundError` when it is gone."""
        row = await self.db.fetch_one(
            _SQL["update_agent"],
            record.id,
            record.name,
            record.provider,
            record.model,
            Jsonb(dict(record.persona)),
            Jsonb(dict(record.config)),
        )
        if row is None:
            raise NotFoundError(f"no agent {record.id}")
        return _record(row)

    async def load_agent(self, ref: int | str, *, owner_id: int | None = None) -> AgentRecord:
        if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
            number = int(ref)  # an id past PostgreSQL's bigint names no agent
            rows = (
                await self.db.fetch_all(_SQL["agents"], number, None, owner_id)
                if number < 2**63
                else []
            )
        else:
            rows = await self.db.fetch_all(_SQL["agents"], None, ref, owner_id)
        if not rows:
            raise NotFoundError(
                f"no agent {ref!r}", hint="list agents with `gathering agents list`"
            )
        return _record(rows[0])

    async def owner_of(self, agent_id: int) -> int | None:
        """The owner of agent `agent_id`, or None when there is no such agent."""
        owner = await self.db.fetch_val(_SQL["agent_owner"], agent_id)
        return int(owner) if owner is not None else None

    async def list_agents(self, *, owner_id: int | None = None) -> list[AgentRecord]:
        rows = await self.db.fetch_all(_SQL["agents"], None, None, owner_id)
        return [_record(row) for row in rows]

    async def delete_agent(self, agent_id: int) -> None:
        row = await self.db.execute(_SQL["delete_agent"], agent_id)
        if row is None:
            raise NotFoundError(f"no agent {agent_id}")

    @asynccontextmanager
    async def conversation(
        self, agent_id: int, *, wait: float, turn: TurnStart | None = None
    ) -> AsyncIterator[Conversation]:
        key = LockKey("agent-turn", str(agent_id))
        begin = None
        if turn is not None:
            begin = Jsonb(
                {
                    "id": str(uuid.uuid4()),
                    "text": storable_text(turn.text),
                    "key": turn.idempotency_key,
                    "new_session": turn.new_session,
                }
            )
        async with (
            local_turn_lock(self.db.url, agent_id, wait=wait) as left,
            self.db.connection() as conn,
        ):
            # Every statement of the turn runs on the connection that holds the lock: if it
            # is lost, the turn's writes fail rather than race another holder.
            queries = OnConnection(conn)
            conversation: PostgresConversation | None = None
            try:
                begun = await queries.fetch_one(_SQL["begin_turn"], agent_id, key.value, begin)
            except BaseException:
                await conn.close()  # cut short, it may hold the lock: a closed session does not
                raise
            try:
                if not (begun and begun["locked"]):
                    try:
                        locked = await wait_for_lock(conn, key, left)
                    except psycopg.Error as exc:
                        raise DatabaseUnavailableError(
                            f"lost the database connection: {exc}"
                        ) from exc
                    if not locked:
                        raise busy(agent_id, wait)
                    begun = await queries.fetch_one(_SQL["begin_turn"], agent_id, None, begin)
                assert begun is not None
                conversation = PostgresConversation(
                    queries, agent_id, key.value, _cache(self.db), pool=self.db
                )
                yield conversation.open(begun, turn)
            finally:
                if conversation is None or not conversation.released:
                    await release_lock(conn, key)

    async def latest_session(self, agent_id: int) -> str | None:
        session_id = await self.db.fetch_val(_SQL["latest_session"], agent_id)
        return str(session_id) if session_id is not None else None

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        return await stored_history(self.db, session_id, limit)

    async def window(self, session_id: str, limit: int) -> list[HistoryEntry]:
        return await stored_window(self.db, session_id, limit)


_caches: weakref.WeakKeyDictionary[Database, WindowCache] = weakref.WeakKeyDictionary()


def _cache(db: Database) -> WindowCache:
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = WindowCache()
    return cache


class InMemoryAgentStore:
    """A store that keeps everything in this process: for scratch scripts and benchmarks."""

    def __init__(self) -> None:
        self._agents: dict[int, AgentRecord] = {}
        self._sessions: dict[str, MemorySession] = {}
        self._turns: dict[str, MemoryTurn] = {}
        self._running: dict[int, set[str]] = {}
        self._next_id = 1

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        for existing in self._agents.values():
            if (
                existing.name.lower() == record.name.lower()
                and existing.owner_id == record.owner_id
            ):
                ensure_same_definition(existing, record)
                saved = existing
                break
        else:
            saved = replace(record, id=self._next_id, created_at=datetime.now(UTC))
            self._next_id += 1
        assert saved.id is not None
        self._agents[saved.id] = saved
        return saved

    async def update_agent(self, record: AgentRecord) -> AgentRecord:
        if record.id not in self._agents:
            raise NotFoundError(f"no agent {record.id}")
        saved = replace(record, created_at=self._agents[record.id].created_at)
        self._agents[record.id] = saved
        return saved

    async def load_agent(self, ref: int | str, *, owner_id: int | None = None) -> AgentRecord:
        for record in self._agents.values():
            matches = record.id == ref or (
                isinstance(ref, str) and record.name.lower() == ref.lower()
            )
            if matches and (owner_id is None or record.owner_id == owner_id):
                return record
        raise NotFoundError(f"no agent {ref!r}")

    async def list_agents(self, *, owner_id: int | None = None) -> list[AgentRecord]:
        return sorted(
            (r for r in self._agents.values() if owner_id is None or r.owner_id == owner_id),
            key=lambda r: r.name.lower(),
        )

    async def delete_agent(self, agent_id: int) -> None:
        if self._agents.pop(agent_id, None) is None:
            raise NotFoundError(f"no agent {agent_id}")
        for session_id in [k for k, s in self._sessions.items() if s.agent_id == agent_id]:
            del self._sessions[session_id]

    @asynccontextmanager
    async def conversation(
        self, agent_id: int, *, wait: float, turn: TurnStart | None = None
    ) -> AsyncIterator[Conversation]:
        if agent_id not in self._agents:
            raise NotFoundError(f"no agent {agent_id}")
        async with local_turn_lock(id(self), agent_id, wait=wait):
            yield await self._conversation(agent_id).open(turn)

    def _conversation(self, agent_id: int) -> InMemoryConversation:
        return InMemoryConversation(self._sessions, self._turns, self._running, agent_id)

    async def latest_session(self, agent_id: int) -> str | None:
        owned = [(s.created_at, k) for k, s in self._sessions.items() if s.agent_id == agent_id]
        return max(owned)[1] if owned else None

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        entries = self._sessions[session_id].entries
        return list(entries[-limit:] if limit else entries)

    async def window(self, session_id: str, limit: int) -> list[HistoryEntry]:
        agent_id = self._sessions[session_id].agent_id
        conversation = self._conversation(agent_id)
        conversation.session_id = session_id
        return await conversation.window(limit)


_default_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PostgresAgentStore] = (
    weakref.WeakKeyDictionary()
)
_default_lock: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def default_store() -> PostgresAgentStore:
    """The store on the configured database (DATABASE_URL, else embedded), one per event loop.

    Connected and migrated on first use (migrations only when GATHERING_AUTO_MIGRATE is on).
    """
    loop = asyncio.get_running_loop()
    store = _default_stores.get(loop)
    if store is not None:
        return store
    lock = _default_lock.setdefault(loop, asyncio.Lock())
    async with lock:
        store = _default_stores.get(loop)
        if store is None:
            db = Database(min_size=0)
            await db.connect()
            if db.settings.auto_migrate:
                await db.run_migrations()
            store = _default_stores[loop] = PostgresAgentStore(db)
    return store
