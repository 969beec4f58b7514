"""Long-term memory: what an agent remembers across sessions, recalled by hybrid search.

```python
memory = LongTermMemory(db, agent_id=agent.id, embedder=embedder)   # embedder is optional
await memory.remember("User prefers green tea", kind="preference", importance=0.8)
for m in await memory.recall("what does the user like to drink?"):
    print(m.score, m.content)
prompt_section = format_memories_for_prompt(recalled, budget_chars=1500)
```

An agent sees its own memories (scope "agent"), and its owner's memories shared with the
circles and projects it is given (`circle_ids`, `project_ids`) and with everyone ("global").
Ranking: see `gathering.agents.retrieval` and docs/memory.md. While the embedding provider is
down, `recall` ranks by full text alone and tells `on_degraded` why.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias, get_args

from psycopg import sql

from gathering.agents.retrieval import (
    DEFAULT_EMBED_TIMEOUT,
    CandidateSearch,
    DegradedCallback,
    QueryParams,
    RankingWeights,
    Scope,
    ScopeRef,
    ScoreParts,
    check_embed_timeout,
    check_language,
    check_limit,
    check_scope_id,
    check_text,
    embed_query,
    embed_texts,
    embedding_model_name,
    ensure_language,
    local_owner_id,
    require_vectors,
    scope_filter,
    scope_target,
    score_candidates,
    vector_literal,
)
from gathering.config import Settings, get_settings
from gathering.db.database import Queries, Row
from gathering.db.named_queries import queries_of
from gathering.errors import InvalidInputError, NotFoundError
from gathering.llm.embeddings import EmbeddingProvider

MemoryKind: TypeAlias = Literal[
    "fact", "preference", "event", "instruction", "summary", "note", "skill"
]
MEMORY_KINDS: tuple[MemoryKind, ...] = get_args(MemoryKind)
MAX_MEMORY_CHARS = 8_000
MAX_TAGS = 32
MAX_TAG_CHARS = 64

DEFAULT_MEMORY_WEIGHTS = RankingWeights()
_SQL = queries_of("gathering.agents")

_COLUMNS = sql.SQL(
    "t.id, t.owner_id, t.agent_id, t.source_agent_id, t.scope, t.scope_id, t.kind, t.content,"
    " t.importance, t.tags, t.embedding_model, t.created_at, t.last_accessed_at, t.access_count"
)


@dataclass(frozen=True)
class Memory:
    """One stored memory."""

    id: int
    owner_id: int
    agent_id: int | None
    source_agent_id: int | None
    scope: Scope
    scope_id: str | None
    kind: str
    content: str
    importance: float
    tags: tuple[str, ...]
    embedding_model: str | None
    created_at: datetime
    last_accessed_at: datetime | None
    access_count: int

    @classmethod
    def from_row(cls, row: Row) -> Memory:
        return cls(
            id=int(row["id"]),
            owner_id=int(row["owner_id"]),
            agent_id=row["agent_id"],
            source_agent_id=row["source_agent_id"],
            scope=row["scope"],
            scope_id=row["scope_id"],
            kind=row["kind"],
            content=row["content"],
            importance=round(float(row["importance"]), 6),
            tags=tuple(row["tags"] or ()),
            embedding_model=row["embedding_model"],
            created_at=row["created_at"],
            last_accessed_at=row["last_accessed_at"],
            access_count=int(row["access_count"]),
        )


@dataclass(frozen=True)
class RecalledMemory(Memory):
    """A memory found by `recall`, with its score and the parts of that score."""

    score: float
    parts: ScoreParts


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as stored: stripped, lower-case, without duplicates, in the order given."""
    if isinstance(tags, str):
        raise InvalidInputError("tags must be a list of strings, not one string")
    seen: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidInputError("a tag must be a non-empty string")
        clean = " ".join(tag.split()).lower()
        if len(clean) > MAX_TAG_CHARS:
            raise InvalidInputError(f"a tag has at most {MAX_TAG_CHARS} characters")
        seen[clean] = None
    if len(seen) > MAX_TAGS:
        raise InvalidInputError(f"at most {MAX_TAGS} tags")
    return tuple(seen)


def _check_kind(kind: str) -> str:
    if kind not in MEMORY_KINDS:
        raise InvalidInputError(f"unknown memory kind {kind!r}", hint=f"one of {MEMORY_KINDS}")
    return kind


def _check_kinds(kinds: Collection[str] | None) -> builtins.list[str] | None:
    return None if kinds is None else [_check_kind(kind) for kind in kinds]


def _check_importance(importance: float) -> float:
    if (
        isinstance(importance, bool)
        or not isinstance(importance, int | float)
        or not math.isfinite(importance)
        or not 0 <= importance <= 1
    ):
        raise InvalidInputError("importance must be a number from 0 to 1")
    return float(importance)


def _check_scopes(scopes: Collection[str] | None) -> set[str] | None:
    if scopes is None:
        return None
    if isinstance(scopes, str):
        raise InvalidInputError("scopes must be a list of scope names, not one string")
    for scope in scopes:
        ScopeRef(scope)  # type: ignore[arg-type]  # validates the name
    return set(scopes)


def _kind_and_tag_filter(
    params: QueryParams, kinds: Sequence[str] | None, tags: Sequence[str] | None
) -> sql.Composed:
    return sql.SQL(
        "({kinds}::text[] IS NULL OR t.kind = ANY({kinds}::text[]))"
        " AND ({tags}::text[] IS NULL OR t.tags @> {tags}::text[])"
    ).format(kinds=params(kinds), tags=params(tags))


class LongTermMemory:
    """The long-term memory of one agent (or, with `agent_id=None`, of one owner's shared
    scopes).

    `owner_id` defaults to the agent's owner, or to the local owner without an agent; an agent
    of another owner is reported as not found. `circle_ids` and `project_ids` are the circles and
    projects whose shared memories this agent may read (the caller vouches for membership).
    With an `embedder`, memories are stored with a vector and recalled by meaning as well as by
    words; that needs pgvector (`FeatureUnavailableError` otherwise). `recall` gives the query's
    embedding `embed_timeout` seconds; when the provider fails or is slower, it ranks by full
    text alone and awaits `on_degraded(reason)`.
    """

    def __init__(
        self,
        db: Queries,
        *,
        agent_id: int | None,
        owner_id: int | None = None,
        embedder: EmbeddingProvider | None = None,
        circle_ids: Iterable[str] = (),
        project_ids: Iterable[str] = (),
        language: str = "english",
        weights: RankingWeights = DEFAULT_MEMORY_WEIGHTS,
        embed_timeout: float = DEFAULT_EMBED_TIMEOUT,
        on_degraded: DegradedCallback | None = None,
    ) -> None:
        self.db = db
        self.agent_id = agent_id
        self.embedder = embedder
        self.embed_timeout = check_embed_timeout(embed_timeout)
        self.on_degraded = on_degraded
        self.circle_ids = tuple(check_scope_id(i) for i in circle_ids)
        self.project_ids = tuple(check_scope_id(i) for i in project_ids)
        self.language = check_language(language)
        self.weights = weights
        self._requested_owner = owner_id
        self._owner: int | None = None
        self._checked_vectors = False

    def __repr__(self) -> str:
        owner = self._owner or self._requested_owner
        return f"<LongTermMemory agent={self.agent_id} owner={owner}>"

    # --- set-up -------------------------------------------------------------------------------

    async def owner_id(self, using: Queries | None = None) -> int:
        """The owner whose memories these are (resolved once, on `using` when given)."""
        if self._owner is None:
            self._owner = await self._resolve_owner(using or self.db)
        return self._owner

    async def _resolve_owner(self, db: Queries) -> int:
        await ensure_language(db, self.language)
        if self.agent_id is None:
            if self._requested_owner is not None:
                return self._requested_owner
            return await local_owner_id(db)
        owner = await db.fetch_val(_SQL["agent_owner"], self.agent_id)
        if owner is None or (
            self._requested_owner is not None and int(owner) != self._requested_owner
        ):
            raise NotFoundError(f"agent {self.agent_id} not found")
        return int(owner)

    async def _vectors_ready(self, using: Queries | None = None) -> EmbeddingProvider | None:
        if self.embedder is not None and not self._checked_vectors:
            await require_vectors(using or self.db)
            self._checked_vectors = True
        return self.embedder

    def visible_scopes(self, scopes: Collection[str] | None = None) -> builtins.list[ScopeRef]:
        """The scopes this memory reads, optionally only those of the named kinds."""
        refs: builtins.list[ScopeRef] = []
        if self.agent_id is not None:
            refs.append(ScopeRef("agent", str(self.agent_id)))
        refs.extend(ScopeRef("circle", circle) for circle in self.circle_ids)
        refs.extend(ScopeRef("project", project) for project in self.project_ids)
        refs.append(ScopeRef("global"))
        wanted = _check_scopes(scopes)
        return [ref for ref in refs if wanted is None or ref.scope in wanted]

    # --- writing ------------------------------------------------------------------------------

    async def remember(
        self,
        content: str,
        kind: str = "fact",
        importance: float = 0.5,
        tags: Iterable[str] = (),
        scope: str = "agent",
        scope_id: str | None = None,
    ) -> Memory:
        """Store a memory and return it.

        `scope` "agent" (the default) keeps it private to this agent; "circle" or "project"
        (with `scope_id`) shares it with that circle or project; "global" with every agent of
        the owner.
        """
        content = check_text(content, "memory content", max_chars=MAX_MEMORY_CHARS).strip()
        kind = _check_kind(kind)
        importance = _check_importance(importance)
        clean_tags = normalize_tags(tags)
        if scope == "agent" and self.agent_id is None:
            raise InvalidInputError("an agent-scoped memory needs a LongTermMemory with agent_id")
        target_scope, target_id, agent_id = scope_target(
            scope, scope_id, default_agent_id=self.agent_id
        )
        if target_scope == "agent" and agent_id != self.agent_id:
            raise InvalidInputError(
                f"this memory belongs to agent {self.agent_id}, not agent {agent_id}"
            )
        owner = await self.owner_id()
        embedder = await self._vectors_ready()
        params: builtins.list[object] = [
            owner,
            agent_id,
            self.agent_id,
            target_scope,
            target_id,
            kind,
            content,
            importance,
            list(clean_tags),
            self.language,
        ]
        if embedder is None:
            insert = sql.SQL(
                "INSERT INTO agent.memories AS t (owner_id, agent_id, source_agent_id, scope,"
                " scope_id, kind, content, importance, tags, language)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::regconfig)"
                " RETURNING {columns}"
            )
        else:
            (vector,) = await embed_texts(embedder, [content], ledger=self.db)
            params += [vector_literal(vector), embedding_model_name(embedder)]
            insert = sql.SQL(
                "INSERT INTO agent.memories AS t (owner_id, agent_id, source_agent_id, scope,"
                " scope_id, kind, content, importance, tags, language, embedding,"
                " embedding_model)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::regconfig, $11::vector, $12)"
                " RETURNING {columns}"
            )
        row = await self.db.fetch_one(insert.format(columns=_COLUMNS).as_string(), *params)
        assert row is not None
        return Memory.from_row(row)

    async def forget(self, memory_id: int) -> None:
        """Delete a memory this store can see; `NotFoundError` when there is none."""
        params = QueryParams()
        delete = sql.SQL(
            "DELETE FROM agent.memories AS t WHERE t.id = {id} AND t.owner_id = {owner}"
            " AND {visible} RETURNING t.id"
        ).format(
            id=params(memory_id),
            owner=params(await self.owner_id()),
            visible=scope_filter(params, self.visible_scopes()),
        )
        deleted = await self.db.fetch_val(delete.as_string(), *params.values)
        if deleted is None:
            raise NotFoundError(f"memory {memory_id} not found")

    async def embed_missing(self, *, batch_size: int = 64) -> int:
        """Give a vector from the current embedder to every visible memory that lacks one (or
        has one from another model); return how many were updated."""
        if self.embedder is None:
            raise InvalidInputError("embed_missing() needs a LongTermMemory with an embedder")
        embedder = await self._vectors_ready()
        assert embedder is not None
        model = embedding_model_name(embedder)
        updated = 0
        while True:
            params = QueryParams()
            select = sql.SQL(
                "SELECT t.id, t.content FROM agent.memories t WHERE t.owner_id = {owner}"
                " AND {visible} AND t.embedding_model IS DISTINCT FROM {model}"
                " ORDER BY t.id LIMIT {size}"
            ).format(
                owner=params(await self.owner_id()),
                visible=scope_filter(params, self.visible_scopes()),
                model=params(model),
                size=params(batch_size),
            )
            rows = await self.db.fetch_all(select.as_string(), *params.values)
            if not rows:
                return updated
            vectors = await embed_texts(embedder, [row["content"] for row in rows], ledger=self.db)
            await self.db.execute(
                _SQL["set_memory_embeddings"],
                [row["id"] for row in rows],
                [vector_literal(vector) for vector in vectors],
                model,
            )
            updated += len(rows)

    # --- reading ------------------------------------------------------------------------------

    async def recall(
        self,
        query: str,
        limit: int = 5,
        scopes: Collection[str] | None = None,
        *,
        kinds: Collection[str] | None = None,
        tags: Iterable[str] | None = None,
        min_score: float = 0.0,
        using: Queries | None = None,
    ) -> builtins.list[RecalledMemory]:
        """The memories that best answer `query`, best first, at most `limit`.

        `scopes` keeps only memories of those scope kinds ("agent", "circle", ...); `kinds` and
        `tags` (all of them) filter further; results scoring below `min_score` are dropped.
        Each recalled memory's `last_accessed_at` and `access_count` are updated. `using` runs
        the queries on another connection of the same database (e.g. a turn's own). An embedding
        failure or timeout does not fail the recall: it ranks by full text alone (see
        `embed_query`).
        """
        query = check_text(query, "the query", max_chars=4_000)
        limit = check_limit(limit)
        if not isinstance(min_score, int | float) or not 0 <= min_score <= 1:
            raise InvalidInputError("min_score must be a number from 0 to 1")
        refs = self.visible_scopes(scopes)
        kind_list = _check_kinds(kinds)
        tag_list = None if tags is None else builtins.list(normalize_tags(tags))
        owner = await self.owner_id(using)
        embedder = await self._vectors_ready(using)
        if not refs:
            return []
        semantic = None
        if embedder is not None:
            semantic = await embed_query(
                embedder,
                query,
                time_limit=self.embed_timeout,
                on_degraded=self.on_degraded,
                fallback="full-text recall only",
                ledger=self.db,
            )
        params = QueryParams()
        where = sql.SQL("t.owner_id = {owner} AND {visible} AND {filters}").format(
            owner=params(owner),
            visible=scope_filter(params, refs),
            filters=_kind_and_tag_filter(params, kind_list, tag_list),
        )
        search = CandidateSearch(
            source=sql.SQL("agent.memories t"),
            where=where,
            select=_COLUMNS,
            params=params,
            language=self.language,
            query=query,
            semantic=semantic,
            weights=self.weights,
            importance_column=sql.SQL("t.importance"),
        )
        ranked = score_candidates(await search.run(using or self.db), self.weights)
        chosen = [(c, parts) for c, parts in ranked if parts.score >= min_score][:limit]
        if not chosen:
            return []
        touched = await (using or self.db).fetch_all(
            _SQL["touch_memories"],
            [candidate.row["id"] for candidate, _ in chosen],
        )
        access = {row["id"]: row for row in touched}
        recalled = []
        for candidate, parts in chosen:
            row = dict(candidate.row)
            row.update(access.get(row["id"], {}))
            memory = Memory.from_row(row)
            recalled.append(RecalledMemory(**vars(memory), score=parts.score, parts=parts))
        return recalled

    async def get(self, memory_id: int) -> Memory:
        """One visible memory; `NotFoundError` when there is none."""
        params = QueryParams()
        select = sql.SQL(
            "SELECT {columns} FROM agent.memories t WHERE t.id = {id} AND t.owner_id = {owner}"
            " AND {visible}"
        ).format(
            columns=_COLUMNS,
            id=params(memory_id),
            owner=params(await self.owner_id()),
            visible=scope_filter(params, self.visible_scopes()),
        )
        row = await self.db.fetch_one(select.as_string(), *params.values)
        if row is None:
            raise NotFoundError(f"memory {memory_id} not found")
        return Memory.from_row(row)

    async def list(
        self,
        *,
        scopes: Collection[str] | None = None,
        kinds: Collection[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[Memory]:
        """Visible memories, newest first."""
        limit = check_limit(limit, maximum=500)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be an integer >= 0")
        refs = self.visible_scopes(scopes)
        kind_list = _check_kinds(kinds)
        tag_list = None if tags is None else builtins.list(normalize_tags(tags))
        owner = await self.owner_id()
        if not refs:
            return []
        params = QueryParams()
        select = sql.SQL(
            "SELECT {columns} FROM agent.memories t WHERE t.owner_id = {owner} AND {visible}"
            " AND {filters} ORDER BY t.created_at DESC, t.id DESC LIMIT {limit} OFFSET {offset}"
        ).format(
            columns=_COLUMNS,
            owner=params(owner),
            visible=scope_filter(params, refs),
            filters=_kind_and_tag_filter(params, kind_list, tag_list),
            limit=params(limit),
            offset=params(offset),
        )
        rows = await self.db.fetch_all(select.as_string(), *params.values)
        return [Memory.from_row(row) for row in rows]


# --- by id, for callers that act for an owner (the REST API) --------------------------------


async def get_memory(db: Queries, memory_id: int, *, owner_id: int | None) -> Memory:
    """Memory `memory_id` if it belongs to `owner_id` (None: to anyone); else `NotFoundError`."""
    select = sql.SQL(
        "SELECT {columns} FROM agent.memories t"
        " WHERE t.id = $1 AND ($2::bigint IS NULL OR t.owner_id = $2)"
    ).format(columns=_COLUMNS)
    row = await db.fetch_one(select.as_string(), memory_id, owner_id)
    if row is None:
        raise NotFoundError(f"memory {memory_id} not found")
    return Memory.from_row(row)


async def delete_memory(db: Queries, memory_id: int, *, owner_id: int | None) -> None:
    """Delete memory `memory_id` of `owner_id` (None: of anyone); else `NotFoundError`."""
    deleted = await db.fetch_val(_SQL["delete_memory"], memory_id, owner_id)
    if deleted is None:
        raise NotFoundError(f"memory {memory_id} not found")


# --- configuration ------------------------------------------------------------------------


def embedder_from_settings(settings: Settings | None = None) -> EmbeddingProvider | None:
    """The embedding provider named by `GATHERING_EMBEDDING_PROVIDER` (None for "none")."""
    settings = settings or get_settings()
    return _embedder(settings.embedding_provider, settings.embedding_model)


@functools.lru_cache(maxsize=8)
def _embedder(provider: str, model: str | None) -> EmbeddingProvider | None:
    if provider == "none":
        return None
    from gathering.llm.registry import get_embedding_provider

    return get_embedding_provider(provider, model)
