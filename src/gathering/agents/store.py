"""Where agents, their sessions and every message live: PostgreSQL, or memory for scratch use."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from gathering.db import Database, Row
from gathering.db.database import Queries
from gathering.errors import NotFoundError
from gathering.llm import Message, Usage


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


@dataclass(frozen=True)
class HistoryEntry:
    """One stored message, with what it cost when it came from a model."""

    message: Message
    model: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    created_at: datetime | None = None


class AgentStore(Protocol):
    """Persistence of agents, sessions and messages."""

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        """Insert, or update the agent with the same owner and name; return it with its id."""
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

    async def new_session(self, agent_id: int) -> str:
        """Open a new session; return its id."""
        ...

    async def latest_session(self, agent_id: int) -> str | None:
        """The most recently active session, if any."""
        ...

    async def append(self, session_id: str, entries: Sequence[HistoryEntry]) -> None:
        """Append entries, in order, atomically."""
        ...

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        """The session's messages in order (the last `limit` ones, when given)."""
        ...

    async def clear(self, session_id: str) -> None:
        """Remove every message of the session."""
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


def _entry(row: Row) -> HistoryEntry:
    message = Message.from_dict(
        {
            "role": row["role"],
            "content": row["content"],
            "tool_calls": row["tool_calls"],
            "tool_results": row["tool_results"],
        }
    )
    usage = None
    if row["input_tokens"] is not None or row["output_tokens"] is not None:
        usage = Usage(row["input_tokens"] or 0, row["output_tokens"] or 0)
    return HistoryEntry(message, row["model"], usage, row["cost_usd"], row["created_at"])


_INSERT_AGENT = (
    "INSERT INTO agent.agents (name, provider, model, persona, config, owner_id)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " RETURNING id, name, provider, model, persona, config, owner_id, created_at"
)
_UPSERT_AGENT = (
    "INSERT INTO agent.agents (name, provider, model, persona, config, owner_id)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (owner_id, lower(name)) DO UPDATE SET provider = EXCLUDED.provider,"
    " model = EXCLUDED.model, persona = EXCLUDED.persona, config = EXCLUDED.config,"
    " updated_at = now()"
    " RETURNING id, name, provider, model, persona, config, owner_id, created_at"
)


class PostgresAgentStore:
    """The store of record: every write is committed before the caller goes on."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _insert_agent(self, record: AgentRecord, statement: str) -> AgentRecord:
        row = await self.db.fetch_one(
            statement,
            record.name,
            record.provider,
            record.model,
            Jsonb(dict(record.persona)),
            Jsonb(dict(record.config)),
            record.owner_id,
        )
        assert row is not None
        return _record(row)

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        return await self._insert_agent(record, _UPSERT_AGENT)

    async def create_agent(self, record: AgentRecord) -> AgentRecord:
        """Insert a new agent; `ConflictError` when its owner has one of that name."""
        return await self._insert_agent(record, _INSERT_AGENT)

    async def update_agent(self, record: AgentRecord) -> AgentRecord:
        """Replace the definition of agent `record.id`; `NotFoundError` when it is gone."""
        row = await self.db.fetch_one(
            "UPDATE agent.agents SET name = $2, provider = $3, model = $4, persona = $5,"
            " config = $6, updated_at = now() WHERE id = $1"
            " RETURNING id, name, provider, model, persona, config, owner_id, created_at",
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
        if isinstance(ref, int) or ref.isdigit():
            rows = await self.db.fetch_all(
                "SELECT id, name, provider, model, persona, config, owner_id, created_at"
                " FROM agent.agents WHERE id = $1 AND ($2::bigint IS NULL OR owner_id = $2)",
                int(ref),
                owner_id,
            )
        else:
            rows = await self.db.fetch_all(
                "SELECT id, name, provider, model, persona, config, owner_id, created_at"
                " FROM agent.agents WHERE lower(name) = lower($1)"
                " AND ($2::bigint IS NULL OR owner_id = $2) ORDER BY id",
                ref,
                owner_id,
            )
        if not rows:
            raise NotFoundError(
                f"no agent {ref!r}", hint="list agents with `gathering agents list`"
            )
        return _record(rows[0])

    async def owner_of(self, agent_id: int) -> int | None:
        """The owner of agent `agent_id`, or None when there is no such agent."""
        owner = await self.db.fetch_val("SELECT owner_id FROM agent.agents WHERE id = $1", agent_id)
        return int(owner) if owner is not None else None

    async def list_agents(self, *, owner_id: int | None = None) -> list[AgentRecord]:
        rows = await self.db.fetch_all(
            "SELECT id, name, provider, model, persona, config, owner_id, created_at"
            " FROM agent.agents WHERE $1::bigint IS NULL OR owner_id = $1 ORDER BY lower(name), id",
            owner_id,
        )
        return [_record(row) for row in rows]

    async def delete_agent(self, agent_id: int) -> None:
        row = await self.db.execute("DELETE FROM agent.agents WHERE id = $1 RETURNING id", agent_id)
        if row is None:
            raise NotFoundError(f"no agent {agent_id}")

    async def new_session(self, agent_id: int) -> str:
        session_id = await self.db.fetch_val(
            "INSERT INTO agent.sessions (agent_id) VALUES ($1) RETURNING id", agent_id
        )
        return str(session_id)

    async def latest_session(self, agent_id: int) -> str | None:
        session_id = await self.db.fetch_val(
            "SELECT id FROM agent.sessions WHERE agent_id = $1"
            " ORDER BY updated_at DESC, created_at DESC LIMIT 1",
            agent_id,
        )
        return str(session_id) if session_id is not None else None

    async def append(self, session_id: str, entries: Sequence[HistoryEntry]) -> None:
        if len(entries) == 1:
            await self._insert(self.db, session_id, entries[0])
            return
        async with self.db.transaction() as tx:
            for entry in entries:
                await self._insert(tx, session_id, entry)

    @staticmethod
    async def _insert(target: Queries, session_id: str, entry: HistoryEntry) -> None:
        # One statement: bumping the session's counter takes its row lock, so writers from
        # several processes number the messages of a session without gaps or duplicates.
        body = entry.message.to_dict()
        row = await target.execute(
            "WITH s AS (UPDATE agent.sessions SET last_seq = last_seq + 1, updated_at = now()"
            " WHERE id = $1 RETURNING last_seq)"
            " INSERT INTO agent.messages (session_id, seq, role, content, tool_calls,"
            " tool_results, model, input_tokens, output_tokens, cost_usd)"
            " SELECT $1, s.last_seq, $2, $3, $4, $5, $6, $7, $8, $9 FROM s RETURNING seq",
            session_id,
            body["role"],
            body["content"],
            Jsonb(body.get("tool_calls", [])),
            Jsonb(body.get("tool_results", [])),
            entry.model,
            entry.usage.input_tokens if entry.usage else None,
            entry.usage.output_tokens if entry.usage else None,
            entry.cost_usd,
        )
        if row is None:
            raise NotFoundError(f"no session {session_id}")

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        rows = await self.db.fetch_all(
            "SELECT * FROM (SELECT * FROM agent.messages WHERE session_id = $1"
            " ORDER BY seq DESC LIMIT $2) recent ORDER BY seq",
            session_id,
            limit,
        )
        return [_entry(row) for row in rows]

    async def clear(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM agent.messages WHERE session_id = $1", session_id)


class InMemoryAgentStore:
    """A store that keeps everything in this process: for scratch scripts and benchmarks."""

    def __init__(self) -> None:
        self._agents: dict[int, AgentRecord] = {}
        self._sessions: dict[str, tuple[int, list[HistoryEntry]]] = {}
        self._next_id = 1

    async def save_agent(self, record: AgentRecord) -> AgentRecord:
        for existing in self._agents.values():
            if (
                existing.name.lower() == record.name.lower()
                and existing.owner_id == record.owner_id
            ):
                saved = replace(record, id=existing.id, created_at=existing.created_at)
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
        for session_id in [s for s, (a, _) in self._sessions.items() if a == agent_id]:
            del self._sessions[session_id]

    async def new_session(self, agent_id: int) -> str:
        session_id = str(uuid.uuid4())
        self._sessions[session_id] = (agent_id, [])
        return session_id

    async def latest_session(self, agent_id: int) -> str | None:
        owned = [s for s, (a, _) in self._sessions.items() if a == agent_id]
        return owned[-1] if owned else None

    async def append(self, session_id: str, entries: Sequence[HistoryEntry]) -> None:
        self._sessions[session_id][1].extend(entries)

    async def history(self, session_id: str, *, limit: int | None = None) -> list[HistoryEntry]:
        entries = self._sessions[session_id][1]
        return list(entries[-limit:] if limit else entries)

    async def clear(self, session_id: str) -> None:
        self._sessions[session_id][1].clear()


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
