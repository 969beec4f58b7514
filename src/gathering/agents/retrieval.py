"""Hybrid retrieval shared by long-term memory and the knowledge base.

Candidates come from two channels over the rows a caller may see:

- **full text** (always): the query through `websearch_to_tsquery` (safe with any input); when
  that strict query matches nothing, a loose OR of the query's words;
- **semantic** (when an embedding provider is configured): the nearest vectors by cosine
  distance (pgvector), comparing only vectors made by the same model. When the provider fails
  or is slow, a search runs on full text alone (`embed_query`).

Each candidate then gets a score in [0, 1], a weighted sum of relevance, importance and recency
(see `RankingWeights` and docs/memory.md).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

import structlog
from psycopg import sql

from gathering.db.database import Queries, Row
from gathering.db.named_queries import queries_of
from gathering.errors import FeatureUnavailableError, InvalidInputError, LLMError
from gathering.llm.embeddings import BaseEmbeddingProvider, EmbeddingProvider
from gathering.llm.token_estimate import estimate_tokens
from gathering.usage.ledger import record_embedding

Scope: TypeAlias = Literal["agent", "circle", "project", "global"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
MatchKind: TypeAlias = Literal["strict", "loose", "semantic"]

MAX_QUERY_CHARS = 4_000
MAX_SCOPE_ID_CHARS = 200
EMBEDDING_BATCH_SIZE = 64
DEFAULT_EMBED_TIMEOUT = 10.0
_CONFIG_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Told why a search ran on full text alone, e.g.
# "embeddings unavailable (provider_unavailable): full-text recall only".
DegradedCallback: TypeAlias = Callable[[str], Awaitable[None]]

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.agents")


@dataclass(frozen=True)
class ScopeRef:
    """One scope a search may look in: `ScopeRef("circle", "c-42")`; an `id` of None means
    every scope of that kind (for "global", the only one)."""

    scope: Scope
    id: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidInputError(
                f"unknown scope {self.scope!r}", hint=f"one of {', '.join(SCOPES)}"
            )
        if self.scope == "global" and self.id is not None:
            raise InvalidInputError("the global scope takes no scope id")
        if self.id is not None:
            check_scope_id(self.id)


ScopeLike: TypeAlias = ScopeRef | Scope | tuple[Scope, str | None]


def scope_refs(scopes: Iterable[ScopeLike]) -> list[ScopeRef]:
    """`ScopeRef`s from refs, bare scope names ("global") or `(scope, id)` pairs."""
    refs = []
    for item in scopes:
        if isinstance(item, ScopeRef):
            refs.append(item)
        elif isinstance(item, str):
            refs.append(ScopeRef(item))
        elif isinstance(item, tuple) and len(item) == 2:
            refs.append(ScopeRef(item[0], item[1]))
        else:
            raise InvalidInputError(f"not a scope: {item!r}")
    return refs


def check_scope_id(scope_id: str) -> str:
    """`scope_id` when it is a usable scope id (non-blank, at most 200 characters)."""
    if not isinstance(scope_id, str) or not scope_id.strip():
        raise InvalidInputError("a scope id must be a non-empty string")
    if len(scope_id) > MAX_SCOPE_ID_CHARS:
        raise InvalidInputError(f"a scope id has at most {MAX_SCOPE_ID_CHARS} characters")
    return scope_id


def scope_target(
    scope: str, scope_id: str | None, *, default_agent_id: int | None = None
) -> tuple[Scope, str | None, int | None]:
    """Validate where a row goes: `(scope, scope_id, agent_id)` as stored.

    An agent-scoped row names its agent in `scope_id` (the agent id as text) and `agent_id`;
    circle and project rows need a scope id; global rows take none.
    """
    if scope not in SCOPES:
        raise InvalidInputError(f"unknown scope {scope!r}", hint=f"one of {', '.join(SCOPES)}")
    if scope == "global":
        if scope_id is not None:
            raise InvalidInputError("the global scope takes no scope_id")
        return "global", None, None
    if scope == "agent":
        if scope_id is None:
            if default_agent_id is None:
                raise InvalidInputError("the agent scope needs the agent's id as scope_id")
            return "agent", str(default_agent_id), default_agent_id
        if not scope_id.strip().isdigit():
            raise InvalidInputError(f"scope_id {scope_id!r} is not an agent id")
        agent_id = int(scope_id.strip())
        return "agent", str(agent_id), agent_id
    if scope_id is None:
        raise InvalidInputError(f"the {scope} scope needs a scope_id")
    return scope, check_scope_id(scope_id), None


def check_text(value: str, what: str, *, max_chars: int) -> str:
    """`value` when it is non-blank text within `max_chars`, free of NUL characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > max_chars:
        raise InvalidInputError(f"{what} has {len(value)} characters; at most {max_chars}")
    if "\x00" in value:
        raise InvalidInputError(f"{what} must not contain NUL characters")
    return value


def check_limit(limit: int, *, maximum: int = 100) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidInputError(f"limit must be an integer from 1 to {maximum}")
    return limit


def check_language(language: str) -> str:
    """A text-search configuration name ("english", "french", "simple", ...)."""
    if not isinstance(language, str) or not _CONFIG_NAME.match(language):
        raise InvalidInputError(f"{language!r} is not a text-search configuration name")
    return language


async def ensure_language(db: Queries, language: str) -> None:
    """Raise `InvalidInputError` unless the server has the text-search configuration."""
    found = await db.fetch_val(_SQL["text_search_config_exists"], language)
    if found is None:
        raise InvalidInputError(
            f"PostgreSQL has no text-search configuration {language!r}",
            hint="list them with `SELECT cfgname FROM pg_ts_config`",
        )


# --- ranking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingWeights:
    """How candidates are scored (see docs/memory.md).

    `score = (relevance·r + importance·i + recency·t) / (r + i + t)`, where relevance is
    `(1 - semantic_share)·text + semantic_share·similarity` for rows with a comparable vector
    (else the text part alone), and recency is `0.5 ** (age / half_life_days)`.
    """

    relevance: float = 0.6
    importance: float = 0.2
    recency: float = 0.2
    semantic_share: float = 0.6
    half_life_days: float = 30.0
    # Rows found only by the semantic channel must be at least this similar to the query.
    min_similarity: float = 0.3
    # How many rows each channel contributes before scoring.
    candidates: int = 50

    def __post_init__(self) -> None:
        weights = (self.relevance, self.importance, self.recency)
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise InvalidInputError("ranking weights must be finite, >= 0, and not all 0")
        if not 0 <= self.semantic_share <= 1:
            raise InvalidInputError("semantic_share must be within 0..1")
        if not self.half_life_days > 0:
            raise InvalidInputError("half_life_days must be > 0")
        if not -1 <= self.min_similarity <= 1:
            raise InvalidInputError("min_similarity must be within -1..1")
        if self.candidates < 1:
            raise InvalidInputError("candidates must be >= 1")


@dataclass(frozen=True)
class ScoreParts:
    """Why a row ranked where it did; every part is in [0, 1]."""

    score: float
    relevance: float
    text: float
    semantic: float | None
    importance: float
    recency: float
    match: MatchKind


@dataclass(frozen=True)
class Candidate:
    """A row found by at least one channel, with the raw signals the scorer needs."""

    row: Row
    text_rank: float | None
    coverage: float | None
    match: MatchKind
    similarity: float | None
    age_seconds: float
    importance: float = 0.0


def score_candidates(
    candidates: Sequence[Candidate], weights: RankingWeights
) -> list[tuple[Candidate, ScoreParts]]:
    """Score and sort candidates, best first (ties: newest id first).

    The text part is half how much of the query a row covers (share of the query's words it
    contains) and half its `ts_rank_cd` relative to the best lexical match in this search.
    """
    best_rank = max((c.text_rank or 0.0 for c in candidates), default=0.0)
    total = weights.relevance + weights.importance + weights.recency
    scored = []
    for candidate in candidates:
        text = 0.0
        if candidate.text_rank is not None:
            rank_part = candidate.text_rank / best_rank if best_rank > 0 else 0.0
            text = _unit(0.5 * (candidate.coverage or 0.0) + 0.5 * rank_part)
        semantic = None if candidate.similarity is None else _unit(candidate.similarity)
        if semantic is None:
            relevance = text
        else:
            relevance = (1 - weights.semantic_share) * text + weights.semantic_share * semantic
        recency = 0.5 ** (max(candidate.age_seconds, 0.0) / 86_400 / weights.half_life_days)
        importance = _unit(candidate.importance)
        score = (
            weights.relevance * relevance
            + weights.importance * importance
            + weights.recency * recency
        ) / total
        parts = ScoreParts(
            score=round(score, 6),
            relevance=round(relevance, 6),
            text=round(text, 6),
            semantic=None if semantic is None else round(semantic, 6),
            importance=round(importance, 6),
            recency=round(recency, 6),
            match=candidate.match,
        )
        scored.append((candidate, parts))
    scored.sort(key=lambda item: (item[1].score, int(item[0].row["id"])), reverse=True)
    return scored


def _unit(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


# --- candidate search -----------------------------------------------------------------------


class QueryParams:
    """Collects bound parameters and hands out their `$n` placeholders as SQL fragments."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> sql.SQL:
        self.values.append(value)
        return sql.SQL(f"${len(self.values)}")


def scope_filter(
    params: QueryParams, refs: Sequence[ScopeRef], *, alias: str = "t"
) -> sql.Composed:
    """SQL that is true for rows of `alias` inside one of `refs` (a semi-join on two arrays)."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM unnest({scopes}::text[], {ids}::text[]) AS v(scope, scope_id)"
        " WHERE v.scope = {t}.scope AND (v.scope_id IS NULL OR v.scope_id = {t}.scope_id))"
    ).format(
        scopes=params([ref.scope for ref in refs]),
        ids=params([ref.id for ref in refs]),
        t=sql.Identifier(alias),
    )


_NO_IMPORTANCE = sql.SQL("0::real")
_CREATED_AT = sql.SQL("t.created_at")


@dataclass
class SemanticQuery:
    """The query's vector and the model that made it."""

    vector: list[float]
    model: str


@dataclass
class CandidateSearch:
    """One hybrid search over `source` (a FROM clause in which the searched table is `t`),
    limited to the rows for which `where` holds; `select` names the columns to return."""

    source: sql.Composable
    where: sql.Composable
    select: sql.Composable
    params: QueryParams
    language: str
    query: str
    semantic: SemanticQuery | None
    weights: RankingWeights
    importance_column: sql.Composable | None = None
    created_column: sql.Composable | None = None

    def _query(self) -> sql.Composed:
        p = self.params
        lexical = sql.SQL(
            "q AS (SELECT websearch_to_tsquery({language}::regconfig, {text}) AS strict_q,"
            " (SELECT agent.tsquery_or_agg(plainto_tsquery('simple', lexeme))"
            "  FROM unnest(to_tsvector({language}::regconfig, {text}))) AS loose_q,"
            " tsvector_to_array(to_tsvector({language}::regconfig, {text})) AS lexemes),"
            " strict_hits AS (SELECT t.id, ts_rank_cd(t.tsv, q.strict_q) AS rank,"
            " 'strict'::text AS how, t.tsv FROM {source}, q"
            " WHERE ({where}) AND t.tsv @@ q.strict_q"
            " ORDER BY rank DESC, t.id DESC LIMIT {per_channel}),"
            " loose_hits AS (SELECT t.id, ts_rank_cd(t.tsv, q.loose_q) AS rank,"
            " 'loose'::text AS how, t.tsv FROM {source}, q"
            " WHERE NOT EXISTS (SELECT 1 FROM strict_hits) AND ({where}) AND t.tsv @@ q.loose_q"
            " ORDER BY rank DESC, t.id DESC LIMIT {per_channel}),"
            " lexical AS (SELECT h.id, h.rank, h.how,"
            " cardinality(ARRAY(SELECT unnest(tsvector_to_array(h.tsv))"
            "   INTERSECT SELECT unnest(q.lexemes)))::float8"
            "   / greatest(cardinality(q.lexemes), 1) AS coverage"
            " FROM (SELECT * FROM strict_hits UNION ALL SELECT * FROM loose_hits) h, q)"
        ).format(
            language=p(self.language),
            text=p(self.query),
            per_channel=p(self.weights.candidates),
            source=self.source,
            where=self.where,
        )
        if self.semantic is None:
            similarity: sql.Composable = sql.SQL("NULL::float8")
            channels = sql.SQL(
                "{lexical}, candidates AS (SELECT l.id, l.rank, l.how, l.coverage FROM lexical l)"
            ).format(lexical=lexical)
        else:
            vector = p(vector_literal(self.semantic.vector))
            comparable = sql.SQL(
                "t.embedding_model = {model} AND vector_dims(t.embedding) = {dims}"
            ).format(model=p(self.semantic.model), dims=p(len(self.semantic.vector)))
            similarity = sql.SQL(
                "CASE WHEN {comparable} THEN 1 - (t.embedding <=> {vector}::vector) END"
            ).format(comparable=comparable, vector=vector)
            channels = sql.SQL(
                "{lexical}, semantic AS (SELECT t.id FROM {source} WHERE ({where})"
                " AND {comparable} ORDER BY t.embedding <=> {vector}::vector, t.id DESC"
                " LIMIT {per_channel}),"
                " candidates AS (SELECT coalesce(l.id, s.id) AS id, l.rank, l.how, l.coverage"
                " FROM lexical l FULL JOIN semantic s ON s.id = l.id)"
            ).format(
                lexical=lexical,
                source=self.source,
                where=self.where,
                comparable=comparable,
                vector=vector,
                per_channel=p(self.weights.candidates),
            )
        return sql.SQL(
            "WITH {channels} SELECT {select}, c.rank AS _rank, c.how AS _how,"
            " c.coverage AS _coverage, {similarity} AS _similarity, {importance} AS _importance,"
            " extract(epoch FROM now() - {created})::float8 AS _age"
            " FROM candidates c, {source} WHERE t.id = c.id"
        ).format(
            channels=channels,
            select=self.select,
            similarity=similarity,
            importance=self.importance_column or _NO_IMPORTANCE,
            created=self.created_column or _CREATED_AT,
            source=self.source,
        )

    async def run(self, db: Queries) -> list[Candidate]:
        """The candidates, unscored (see `score_candidates`)."""
        query = self._query().as_string()
        rows = await db.fetch_all(query, *self.params.values)
        candidates = []
        for row in rows:
            rank, how, coverage = row.pop("_rank"), row.pop("_how"), row.pop("_coverage")
            similarity, importance = row.pop("_similarity"), row.pop("_importance")
            age = row.pop("_age")
            if similarity is not None and math.isnan(similarity):
                similarity = None  # a zero vector has no direction
            if how is None and (similarity is None or similarity < self.weights.min_similarity):
                continue
            candidates.append(
                Candidate(
                    row=row,
                    text_rank=None if rank is None else float(rank),
                    coverage=None if coverage is None else float(coverage),
                    match="semantic" if how is None else how,
                    similarity=similarity,
                    age_seconds=float(age),
                    importance=float(importance),
                )
            )
        return candidates


# --- vectors ------------------------------------------------------------------------------


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form of `vector`."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def embedding_model_name(embedder: EmbeddingProvider) -> str:
    """What a stored vector records as its model: `provider/model`."""
    return f"{embedder.name}/{embedder.model}"


async def embed_texts(
    embedder: EmbeddingProvider,
    texts: Sequence[str],
    *,
    batch_size: int = EMBEDDING_BATCH_SIZE,
    retry: bool = True,
    ledger: Queries | None = None,
) -> list[list[float]]:
    """Vectors for `texts`, asked for in batches; every vector checked to be finite and of one
    length. `retry=False` makes one attempt (for providers that support it, ours do). With
    `ledger`, each batch is written to the usage ledger (its tokens estimated)."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        started = time.monotonic()
        if retry or not isinstance(embedder, BaseEmbeddingProvider):
            vectors.extend(await embedder.embed(batch))
        else:
            vectors.extend(await embedder.embed(batch, retry=False))
        spent = round((time.monotonic() - started) * 1000)
        tokens = sum(estimate_tokens(text) for text in batch)
        await record_embedding(ledger, embedder.name, embedder.model, tokens, spent)
    if len(vectors) != len(texts):
        raise LLMError(f"{embedder.name} returned {len(vectors)} vectors for {len(texts)} texts")
    lengths = {len(vector) for vector in vectors}
    if 0 in lengths or len(lengths) > 1:
        raise LLMError(f"{embedder.name} returned vectors of unequal or zero length")
    if not all(math.isfinite(x) for vector in vectors for x in vector):
        raise LLMError(f"{embedder.name} returned a vector with non-finite values")
    return vectors


def check_embed_timeout(timeout: float) -> float:
    """`timeout` when it is a usable number of seconds (finite and > 0)."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidInputError("embed_timeout must be a number of seconds > 0")
    return float(timeout)


async def embed_query(
    embedder: EmbeddingProvider,
    query: str,
    *,
    time_limit: float,
    on_degraded: DegradedCallback | None,
    fallback: str,
    ledger: Queries | None = None,
) -> SemanticQuery | None:
    """The query's vector, or None when the provider fails (`LLMError`) or takes longer than
    `time_limit` seconds (its retries included): the search then runs on full text alone.

    That degradation is logged once (a warning with the error code, never the message, which
    may quote a key) and reported to `on_degraded` as
    "embeddings unavailable (<code>): <fallback>". Cancellation propagates.
    """
    try:
        async with asyncio.timeout(time_limit):
            (vector,) = await embed_texts(embedder, [query], retry=False, ledger=ledger)
    except LLMError as error:
        code = error.code
    except TimeoutError:
        code = "timeout"
    else:
        return SemanticQuery(vector, embedding_model_name(embedder))
    log.warning(
        "embeddings_degraded",
        provider=embedder.name,
        model=embedder.model,
        error=code,
        fallback=fallback,
    )
    if on_degraded is not None:
        await on_degraded(f"embeddings unavailable ({code}): {fallback}")
    return None


@dataclass(frozen=True)
class VectorSupport:
    """Whether the server has pgvector, and whether the memory tables have vector columns."""

    extension: bool
    columns: bool


async def vector_support(db: Queries) -> VectorSupport:
    row = await db.fetch_one(_SQL["vector_support"])
    assert row is not None
    return VectorSupport(extension=bool(row["extension"]), columns=bool(row["columns"]))


async def require_vectors(db: Queries) -> None:
    """Raise `FeatureUnavailableError` unless semantic search can run on this database."""
    support = await vector_support(db)
    if not support.extension:
        raise FeatureUnavailableError(
            "pgvector is not installed on this PostgreSQL server, so memories and documents "
            "cannot be searched by embeddings",
            hint="install the pgvector extension (the embedded database has it), or set "
            "GATHERING_EMBEDDING_PROVIDER=none to search by full text only",
        )
    if not support.columns:
        raise FeatureUnavailableError(
            "pgvector was installed after the memory tables were created; they have no "
            "embedding columns",
            hint="add them with `ALTER TABLE agent.memories ADD COLUMN embedding vector; "
            "ALTER TABLE agent.chunks ADD COLUMN embedding vector;`, or set "
            "GATHERING_EMBEDDING_PROVIDER=none",
        )


async def local_owner_id(db: Queries) -> int:
    """The id of the built-in local owner (single-user mode's user)."""
    owner = await db.fetch_val(_SQL["local_owner_id"])
    if owner is None:
        raise InvalidInputError(
            "there is no local owner user; pass owner_id",
            hint="the local owner row is created by migration 0003",
        )
    return int(owner)
