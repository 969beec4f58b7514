"""Long-term memory on a real PostgreSQL: remember, recall (full text, and by meaning through a
deterministic embedder or OpenAI at the HTTP wire), scopes, ranking, forget, pgvector absent,
and recall by full text alone while the embedding provider is down."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from db_rows import new_agent, new_user
from structlog.testing import capture_logs

from gathering.agents import retrieval
from gathering.agents.long_term_memory import (
    LongTermMemory,
    Memory,
    RecalledMemory,
    delete_memory,
    embedder_from_settings,
    get_memory,
)
from gathering.agents.retrieval import (
    RankingWeights,
    ScopeRef,
    scope_refs,
    vector_support,
)
from gathering.agents.system_prompt import format_memories_for_prompt
from gathering.config import load_settings
from gathering.db import Database
from gathering.errors import (
    FeatureUnavailableError,
    InvalidInputError,
    LLMError,
    NotFoundError,
)
from gathering.llm import OllamaEmbeddingProvider, OpenAIEmbeddingProvider, RetryPolicy

# Words that mean much the same share a heavily weighted "concept" feature besides their own.
CONCEPTS = {
    "tea": "beverage",
    "coffee": "beverage",
    "drink": "beverage",
    "beverage": "beverage",
    "juice": "beverage",
    "paris": "city",
    "berlin": "city",
    "city": "city",
    "town": "city",
}
CONCEPT_WEIGHT = 3.0


class BagOfWordsEmbedder:
    """A deterministic `EmbeddingProvider`: hashed word counts plus concept features,
    normalised to unit length. Records the size of every batch it is given."""

    def __init__(self, dimensions: int = 64, model: str = "bow-64") -> None:
        self.dimensions = dimensions
        self._model = model
        self.batches: list[int] = []

    @property
    def name(self) -> str:
        return "fake"

    @property
    def model(self) -> str:
        return self._model

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in re.findall(r"[a-z]+", text.lower()):
            base = word.removesuffix("s") if len(word) > 3 else word
            features = [(base, 1.0)]
            concept = CONCEPTS.get(word) or CONCEPTS.get(base)
            if concept:
                features.append(("concept:" + concept, CONCEPT_WEIGHT))
            for feature, weight in features:
                digest = hashlib.sha256(feature.encode()).digest()
                vector[int.from_bytes(digest[:4], "big") % self.dimensions] += weight
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        return [self.vector(text) for text in texts]

    async def dimension(self) -> int:
        return self.dimensions


async def local_owner(db: Database) -> int:
    return int(await db.fetch_val("SELECT id FROM auth.users WHERE is_local_owner"))


@pytest.fixture
async def agent_id(db: Database) -> int:
    return await new_agent(db, "Ada")


@pytest.fixture
async def memory(db: Database, agent_id: int) -> LongTermMemory:
    return LongTermMemory(db, agent_id=agent_id)


async def remember_facts(memory: LongTermMemory) -> dict[str, Memory]:
    facts = {
        "tea": ("User prefers green tea", "preference", 0.8),
        "coffee": ("The user's favourite drink is coffee with oat milk", "preference", 0.6),
        "paris": ("User lives in Paris", "fact", 0.5),
        "deploy": ("Never deploy on Fridays; the team is off", "instruction", 0.9),
    }
    return {
        key: await memory.remember(content, kind=kind, importance=importance)
        for key, (content, kind, importance) in facts.items()
    }


# --- remember ---------------------------------------------------------------------------------


async def test_remember_stores_a_memory_for_the_agent_and_its_owner(db, memory, agent_id):
    stored = await memory.remember(
        "  User prefers green tea  ", kind="preference", importance=0.8, tags=["Drinks", "drinks"]
    )
    assert stored.content == "User prefers green tea"
    assert (stored.kind, stored.importance, stored.tags) == ("preference", 0.8, ("drinks",))
    assert (stored.scope, stored.scope_id, stored.agent_id) == ("agent", str(agent_id), agent_id)
    assert stored.source_agent_id == agent_id
    assert stored.owner_id == await local_owner(db) == await memory.owner_id()
    assert stored.embedding_model is None and stored.access_count == 0
    assert stored.last_accessed_at is None
    row = await db.fetch_one("SELECT tsv::text AS tsv FROM agent.memories WHERE id = $1", stored.id)
    assert "'prefer'" in row["tsv"] and "'tea'" in row["tsv"]


async def test_remember_defaults(memory):
    stored = await memory.remember("The sky is blue")
    assert (stored.kind, stored.importance, stored.scope, stored.tags) == ("fact", 0.5, "agent", ())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": ""}, "must not be empty"),
        ({"content": "   \n"}, "must not be empty"),
        ({"content": "x" * 8001}, "at most 8000"),
        ({"content": "nul \x00 byte"}, "NUL"),
        ({"content": "ok", "kind": "gossip"}, "unknown memory kind"),
        ({"content": "ok", "importance": 1.5}, "importance"),
        ({"content": "ok", "importance": -0.1}, "importance"),
        ({"content": "ok", "importance": float("nan")}, "importance"),
        ({"content": "ok", "importance": True}, "importance"),
        ({"content": "ok", "tags": "one-string"}, "list of strings"),
        ({"content": "ok", "tags": [""]}, "non-empty"),
        ({"content": "ok", "tags": ["x" * 65]}, "64"),
        ({"content": "ok", "tags": [f"t{i}" for i in range(33)]}, "at most 32"),
        ({"content": "ok", "scope": "universe"}, "unknown scope"),
        ({"content": "ok", "scope": "circle"}, "needs a scope_id"),
        ({"content": "ok", "scope": "circle", "scope_id": " "}, "non-empty"),
        ({"content": "ok", "scope": "global", "scope_id": "x"}, "takes no scope_id"),
        ({"content": "ok", "scope": "agent", "scope_id": "abc"}, "not an agent id"),
    ],
)
async def test_remember_rejects_bad_input(memory, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        await memory.remember(**kwargs)


async def test_an_agent_cannot_write_another_agents_private_memory(db, memory):
    other = await new_agent(db)
    with pytest.raises(InvalidInputError, match="belongs to agent"):
        await memory.remember("secret", scope="agent", scope_id=str(other))


async def test_agent_scope_needs_an_agent(db):
    shared = LongTermMemory(db, agent_id=None)
    with pytest.raises(InvalidInputError, match="needs a LongTermMemory with agent_id"):
        await shared.remember("private?")
    stored = await shared.remember("Office closes at 6pm", scope="global")
    assert stored.owner_id == await local_owner(db)
    assert stored.source_agent_id is None


async def test_unknown_agent_and_foreign_owner_are_not_found(db, agent_id):
    with pytest.raises(NotFoundError, match="agent 987654 not found"):
        await LongTermMemory(db, agent_id=987654).remember("x")
    stranger = await new_user(db)
    with pytest.raises(NotFoundError, match=f"agent {agent_id} not found"):
        await LongTermMemory(db, agent_id=agent_id, owner_id=stranger).recall("x")


async def test_unknown_language_is_reported(db, agent_id):
    with pytest.raises(InvalidInputError, match="text-search configuration"):
        LongTermMemory(db, agent_id=agent_id, language="Robert'); DROP TABLE x; --")
    with pytest.raises(InvalidInputError, match="no text-search configuration 'klingon'"):
        await LongTermMemory(db, agent_id=agent_id, language="klingon").remember("x")


async def test_french_memories_use_french_stemming(db, agent_id):
    memory = LongTermMemory(db, agent_id=agent_id, language="french")
    await memory.remember("L'utilisateur préfère le thé vert")
    [found] = await memory.recall("préférences de thé")
    assert found.content == "L'utilisateur préfère le thé vert"


# --- recall: full text --------------------------------------------------------------------------


async def test_recall_answers_a_naturally_phrased_question(memory):
    facts = await remember_facts(memory)
    results = await memory.recall("what does the user prefer to drink?")
    ids = [r.id for r in results]
    # Both drink preferences come before the unrelated facts; "Paris" shares only "user".
    assert set(ids[:2]) == {facts["tea"].id, facts["coffee"].id}
    assert ids.index(facts["paris"].id) == 2
    assert facts["deploy"].id not in ids
    assert all(isinstance(r, RecalledMemory) and r.parts.match == "loose" for r in results)
    assert results[0].score >= results[1].score >= results[2].score


async def test_a_strict_match_is_preferred_and_needs_no_fallback(memory):
    facts = await remember_facts(memory)
    results = await memory.recall("green tea")
    assert [r.id for r in results] == [facts["tea"].id]
    assert results[0].parts.match == "strict"
    assert results[0].parts.text > 0.5


async def test_stemming_matches_word_forms(memory):
    facts = await remember_facts(memory)
    assert [r.id for r in await memory.recall("drinks")] == [facts["coffee"].id]
    assert [r.id for r in await memory.recall("deploying on friday")] == [facts["deploy"].id]


async def test_websearch_syntax_is_honoured(memory):
    facts = await remember_facts(memory)
    results = await memory.recall("user -coffee -paris")
    assert [r.id for r in results] == [facts["tea"].id]
    assert [r.id for r in await memory.recall('"green tea"')] == [facts["tea"].id]


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE agent.memories; --",
        'unbalanced "quote',
        "tea & | ! ( ) :* <->",
        "the and of to",  # stop words only
        "\\' OR 1=1 --",
        "ünïcödé ✓ 🍵",
    ],
)
async def test_any_query_text_is_safe(db, memory, query):
    await remember_facts(memory)
    results = await memory.recall(query)
    assert isinstance(results, list)
    assert await db.fetch_val("SELECT count(*) FROM agent.memories") == 4


async def test_nothing_relevant_gives_no_results(memory):
    await remember_facts(memory)
    assert await memory.recall("quantum chromodynamics") == []


async def test_recall_updates_access_statistics(db, memory):
    facts = await remember_facts(memory)
    [first] = await memory.recall("green tea")
    assert first.access_count == 1 and first.last_accessed_at is not None
    [second] = await memory.recall("green tea")
    assert second.access_count == 2
    untouched = await get_memory(db, facts["paris"].id, owner_id=None)
    assert untouched.access_count == 0 and untouched.last_accessed_at is None


async def test_importance_decides_between_equally_relevant_memories(memory):
    low = await memory.remember("The user likes jazz", importance=0.1)
    high = await memory.remember("The user likes opera", importance=0.9)
    results = await memory.recall("what music does the user like")
    assert [r.id for r in results] == [high.id, low.id]
    assert results[0].parts.relevance == results[1].parts.relevance
    assert results[0].parts.importance == pytest.approx(0.9)


async def test_recency_decays_with_a_half_life(db, memory):
    old = await memory.remember("The user likes jazz")
    new = await memory.remember("The user likes opera")
    await db.execute(
        "UPDATE agent.memories SET created_at = now() - interval '60 days' WHERE id = $1", old.id
    )
    results = await memory.recall("user likes")
    assert [r.id for r in results] == [new.id, old.id]
    assert results[0].parts.recency == pytest.approx(1.0, abs=1e-3)
    assert results[1].parts.recency == pytest.approx(0.25, abs=1e-3)  # two half-lives
    slow = LongTermMemory(
        memory.db, agent_id=memory.agent_id, weights=RankingWeights(half_life_days=60)
    )
    aged = {r.id: r for r in await slow.recall("user likes")}[old.id]
    assert aged.parts.recency == pytest.approx(0.5, abs=1e-3)


async def test_score_is_the_documented_weighted_sum(memory):
    await remember_facts(memory)
    weights = memory.weights
    for result in await memory.recall("user drink preferences"):
        parts = result.parts
        expected = (
            weights.relevance * parts.relevance
            + weights.importance * parts.importance
            + weights.recency * parts.recency
        ) / (weights.relevance + weights.importance + weights.recency)
        assert result.score == pytest.approx(expected, abs=1e-5)
        assert parts.semantic is None and parts.relevance == parts.text


async def test_relevance_only_weights_ignore_importance(db, agent_id):
    memory = LongTermMemory(
        db, agent_id=agent_id, weights=RankingWeights(relevance=1, importance=0, recency=0)
    )
    await memory.remember("tea", importance=0.0)
    await memory.remember("tea, tea and more tea with a tea cake", importance=1.0)
    results = await memory.recall("tea")
    assert results[0].parts.text >= results[1].parts.text
    assert [r.score for r in results] == [r.parts.relevance for r in results]


@pytest.mark.parametrize(
    "weights",
    [
        {"relevance": 0, "importance": 0, "recency": 0},
        {"relevance": -1},
        {"semantic_share": 1.5},
        {"half_life_days": 0},
        {"min_similarity": 2},
        {"candidates": 0},
    ],
)
def test_invalid_weights_are_refused(weights):
    with pytest.raises(InvalidInputError):
        RankingWeights(**weights)


async def test_limit_and_min_score(memory):
    await remember_facts(memory)
    everything = await memory.recall("user", limit=10)
    assert len(everything) == 3
    assert len(await memory.recall("user", limit=1)) == 1
    best = everything[0].score
    top = await memory.recall("user", min_score=best)
    assert [r.id for r in top] == [r.id for r in everything if r.score >= best]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "must not be empty"),
        ({"query": "x" * 4001}, "at most 4000"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "limit": 101}, "limit"),
        ({"query": "x", "limit": True}, "limit"),
        ({"query": "x", "min_score": 1.5}, "min_score"),
        ({"query": "x", "scopes": "global"}, "not one string"),
        ({"query": "x", "scopes": ["everywhere"]}, "unknown scope"),
        ({"query": "x", "kinds": ["gossip"]}, "unknown memory kind"),
    ],
)
async def test_recall_rejects_bad_input(memory, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        await memory.recall(**kwargs)


async def test_kinds_and_tags_filter(memory):
    tea = await memory.remember("User prefers tea", kind="preference", tags=["drinks", "home"])
    await memory.remember("User drank tea at the office", kind="event", tags=["drinks"])
    assert [r.id for r in await memory.recall("tea", kinds=["preference"])] == [tea.id]
    assert [r.id for r in await memory.recall("tea", tags=["HOME", "drinks"])] == [tea.id]
    assert len(await memory.recall("tea", tags=["drinks"])) == 2
    assert await memory.recall("tea", tags=["work"]) == []


# --- scopes and owners ----------------------------------------------------------------------


async def test_scopes_decide_what_an_agent_sees(db):
    ada, bob = await new_agent(db, "Ada"), await new_agent(db, "Bob")
    ada_memory = LongTermMemory(db, agent_id=ada, circle_ids=["research"], project_ids=["apollo"])
    private = await ada_memory.remember("Ada's private note about tea")
    circle = await ada_memory.remember(
        "Research circle tea budget", scope="circle", scope_id="research"
    )
    project = await ada_memory.remember(
        "Apollo project tea supplier", scope="project", scope_id="apollo"
    )
    shared = await ada_memory.remember("Everyone gets tea on Mondays", scope="global")

    seen_by_ada = {r.id for r in await ada_memory.recall("tea", limit=10)}
    assert seen_by_ada == {private.id, circle.id, project.id, shared.id}

    bob_alone = LongTermMemory(db, agent_id=bob)
    assert {r.id for r in await bob_alone.recall("tea", limit=10)} == {shared.id}
    bob_in_circle = LongTermMemory(db, agent_id=bob, circle_ids=["research"])
    assert {r.id for r in await bob_in_circle.recall("tea", limit=10)} == {circle.id, shared.id}

    only_global = await ada_memory.recall("tea", scopes=["global"])
    assert [r.id for r in only_global] == [shared.id]
    assert {r.id for r in await ada_memory.recall("tea", scopes=["agent", "project"])} == {
        private.id,
        project.id,
    }
    assert await LongTermMemory(db, agent_id=bob).recall("tea", scopes=["circle"]) == []

    listed = await ada_memory.list()
    assert [m.id for m in listed] == [shared.id, project.id, circle.id, private.id]
    assert [m.id for m in await bob_alone.list()] == [shared.id]
    assert [m.id for m in await ada_memory.list(scopes=["circle"])] == [circle.id]
    assert len(await ada_memory.list(limit=2, offset=1)) == 2
    assert [m.id for m in await ada_memory.list(kinds=["fact"], tags=[])] == [m.id for m in listed]


async def test_owners_never_see_each_others_memories(db):
    mine = LongTermMemory(db, agent_id=await new_agent(db, "Ada"))
    theirs_owner = await new_user(db)
    theirs = LongTermMemory(db, agent_id=await new_agent(db, "Eve", owner_id=theirs_owner))
    note = await mine.remember("Company tea policy", scope="global")
    assert note.owner_id == await local_owner(db)
    assert await theirs.recall("tea policy") == []
    assert await theirs.list() == []
    with pytest.raises(NotFoundError):
        await theirs.forget(note.id)
    with pytest.raises(NotFoundError):
        await get_memory(db, note.id, owner_id=theirs_owner)
    with pytest.raises(NotFoundError):
        await delete_memory(db, note.id, owner_id=theirs_owner)
    assert (await get_memory(db, note.id, owner_id=None)).id == note.id
    shared = LongTermMemory(db, agent_id=None, owner_id=theirs_owner)
    stored = await shared.remember("Their own tea policy", scope="global")
    assert [r.id for r in await theirs.recall("tea policy")] == [stored.id]


async def test_forget(db, memory):
    facts = await remember_facts(memory)
    await memory.forget(facts["tea"].id)
    assert [r.id for r in await memory.recall("green tea")] == []
    with pytest.raises(NotFoundError, match=f"memory {facts['tea'].id} not found"):
        await memory.forget(facts["tea"].id)
    other = LongTermMemory(db, agent_id=await new_agent(db))
    with pytest.raises(NotFoundError):
        await other.forget(facts["paris"].id)  # another agent's private memory
    assert (await memory.get(facts["paris"].id)).content == "User lives in Paris"
    with pytest.raises(NotFoundError):
        await other.get(facts["paris"].id)
    await delete_memory(db, facts["paris"].id, owner_id=await local_owner(db))
    with pytest.raises(NotFoundError):
        await delete_memory(db, facts["paris"].id, owner_id=None)


async def test_deleting_an_agent_deletes_its_private_memories_only(db):
    agent = await new_agent(db)
    memory = LongTermMemory(db, agent_id=agent)
    private = await memory.remember("private tea")
    shared = await memory.remember("shared tea", scope="global")
    await db.execute("DELETE FROM agent.agents WHERE id = $1", agent)
    with pytest.raises(NotFoundError):
        await get_memory(db, private.id, owner_id=None)
    kept = await get_memory(db, shared.id, owner_id=None)
    assert kept.source_agent_id is None


async def test_the_schema_enforces_owner_and_scope_rules(db, agent_id):
    stranger = await new_user(db)
    with pytest.raises(InvalidInputError, match="belongs to another owner"):
        await db.execute(
            "INSERT INTO agent.memories (owner_id, agent_id, scope, scope_id, content)"
            " VALUES ($1, $2, 'agent', $3, 'x')",
            stranger,
            agent_id,
            str(agent_id),
        )
    row = await db.execute(
        "INSERT INTO agent.memories (agent_id, scope, scope_id, content)"
        " VALUES ($1, 'agent', $2, 'x') RETURNING owner_id",
        agent_id,
        str(agent_id),
    )
    assert row["owner_id"] == await local_owner(db)
    for scope, scope_id, agent in [
        ("global", "x", None),
        ("circle", None, None),
        ("agent", "1", None),
        ("global", None, agent_id),
    ]:
        with pytest.raises(InvalidInputError, match="memories_scope_target"):
            await db.execute(
                "INSERT INTO agent.memories (agent_id, scope, scope_id, content)"
                " VALUES ($1, $2, $3, 'x')",
                agent,
                scope,
                scope_id,
            )
    with pytest.raises(InvalidInputError):
        await db.execute("INSERT INTO agent.memories (scope, content) VALUES ('global', ' ')")


async def test_memory_works_inside_a_callers_transaction(db, agent_id):
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            memory = LongTermMemory(tx, agent_id=agent_id)
            await memory.remember("to be rolled back")
            assert len(await memory.list()) == 1
            raise RuntimeError("abort")
    assert await LongTermMemory(db, agent_id=agent_id).list() == []


async def test_concurrent_recalls_and_remembers(db, memory):
    await remember_facts(memory)
    results = await asyncio.gather(
        *[memory.recall("user drink") for _ in range(8)],
        *[memory.remember(f"note {i} about tea") for i in range(8)],
    )
    assert all(isinstance(r, list) and r for r in results[:8])
    counts = await db.fetch_val(
        "SELECT max(access_count) FROM agent.memories WHERE content LIKE '%coffee%'"
    )
    assert counts == 8


def test_scope_refs_accept_names_pairs_and_refs():
    assert scope_refs(["global", ("circle", "c1"), ScopeRef("agent", "7")]) == [
        ScopeRef("global"),
        ScopeRef("circle", "c1"),
        ScopeRef("agent", "7"),
    ]
    with pytest.raises(InvalidInputError):
        scope_refs([42])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        ScopeRef("global", "x")
    with pytest.raises(InvalidInputError):
        ScopeRef("circle", "x" * 201)


# --- recall by meaning --------------------------------------------------------------------------


async def test_semantic_recall_finds_memories_without_shared_words(db, agent_id):
    embedder = BagOfWordsEmbedder()
    memory = LongTermMemory(db, agent_id=agent_id, embedder=embedder)
    tea = await memory.remember("User prefers green tea", kind="preference")
    await memory.remember("The deploy pipeline runs nightly")
    assert tea.embedding_model == "fake/bow-64"
    results = await memory.recall("favourite beverage?")
    assert [r.id for r in results] == [tea.id]
    assert results[0].parts.match == "semantic"
    assert results[0].parts.text == 0 and results[0].parts.semantic > 0.3


async def test_hybrid_recall_combines_words_and_meaning(db, agent_id):
    memory = LongTermMemory(db, agent_id=agent_id, embedder=BagOfWordsEmbedder())
    facts = await remember_facts(memory)
    results = await memory.recall("what does the user like to drink")
    assert set(r.id for r in results[:2]) == {facts["tea"].id, facts["coffee"].id}
    for result in results:
        assert result.parts.semantic is not None
        share = memory.weights.semantic_share
        expected = (1 - share) * result.parts.text + share * result.parts.semantic
        assert result.parts.relevance == pytest.approx(expected, abs=1e-5)


async def test_vectors_of_another_model_are_not_compared(db, agent_id):
    old = LongTermMemory(db, agent_id=agent_id, embedder=BagOfWordsEmbedder(32, "bow-32"))
    tea = await old.remember("User prefers green tea")
    new = LongTermMemory(db, agent_id=agent_id, embedder=BagOfWordsEmbedder())
    assert await new.recall("favourite beverage") == []  # only the old model's vector exists
    [by_words] = await new.recall("green tea")
    assert by_words.id == tea.id and by_words.parts.semantic is None
    assert await new.embed_missing(batch_size=1) == 1
    [by_meaning] = await new.recall("favourite beverage")
    assert by_meaning.id == tea.id and by_meaning.embedding_model == "fake/bow-64"
    assert await new.embed_missing() == 0


async def test_embed_missing_needs_an_embedder(memory):
    with pytest.raises(InvalidInputError, match="needs a LongTermMemory with an embedder"):
        await memory.embed_missing()


class BrokenEmbedder(BagOfWordsEmbedder):
    def __init__(self, vectors: list[list[float]]) -> None:
        super().__init__()
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.vectors


@pytest.mark.parametrize(
    ("vectors", "message"),
    [([], "0 vectors for 1"), ([[]], "zero length"), ([[float("nan"), 1.0]], "non-finite")],
)
async def test_bad_vectors_from_a_provider_are_an_llm_error(db, agent_id, vectors, message):
    memory = LongTermMemory(db, agent_id=agent_id, embedder=BrokenEmbedder(vectors))
    with pytest.raises(LLMError, match=message):
        await memory.remember("x")
    assert await LongTermMemory(db, agent_id=agent_id).list() == []


class OpenAIWire:
    """A local HTTP server answering `POST /v1/embeddings` the way OpenAI does, with vectors
    from the bag-of-words embedder; or with a queued error. Records every request.

    (respx cannot intercept the `openai` SDK here: it sends through `httpx2`, not `httpx`.)
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict]] = []
        self.errors: list[tuple[int, dict]] = []
        wire = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                headers = {key.lower(): value for key, value in self.headers.items()}
                wire.requests.append((self.path, headers, body))
                status, payload = wire.errors.pop(0) if wire.errors else (200, wire.reply(body))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @staticmethod
    def reply(body: dict) -> dict:
        embedder = BagOfWordsEmbedder(16)
        data = [
            {"object": "embedding", "index": index, "embedding": embedder.vector(text)}
            for index, text in enumerate(body["input"])
        ]
        return {
            "object": "list",
            "data": list(reversed(data)),  # the index, not the order, says which is which
            "model": body["model"],
            "usage": {"prompt_tokens": 5, "total_tokens": 5},
        }


@pytest.fixture
def openai_wire():
    wire = OpenAIWire()
    wire.thread.start()
    yield wire
    wire.server.shutdown()
    wire.server.server_close()
    wire.thread.join(timeout=5)


def openai_provider(wire: OpenAIWire) -> OpenAIEmbeddingProvider:
    return OpenAIEmbeddingProvider(
        api_key="sk-test",
        base_url=wire.base_url,
        retry=RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.001),
    )


async def test_openai_embeddings_at_the_http_wire(db, agent_id, openai_wire):
    memory = LongTermMemory(db, agent_id=agent_id, embedder=openai_provider(openai_wire))
    tea = await memory.remember("User prefers green tea")
    await memory.remember("Standup is at 9:30")
    results = await memory.recall("what beverage does the user like?")
    assert tea.embedding_model == "openai/text-embedding-3-small"
    assert results[0].id == tea.id and results[0].parts.semantic is not None
    path, headers, first = openai_wire.requests[0]
    assert path == "/v1/embeddings"
    assert headers["authorization"] == "Bearer sk-test"
    assert first == {
        "input": ["User prefers green tea"],
        "model": "text-embedding-3-small",
        "encoding_format": "float",
    }
    assert openai_wire.requests[-1][2]["input"] == ["what beverage does the user like?"]


async def test_openai_failure_stores_nothing(db, agent_id, openai_wire):
    openai_wire.errors.append(
        (401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}})
    )
    memory = LongTermMemory(db, agent_id=agent_id, embedder=openai_provider(openai_wire))
    with pytest.raises(LLMError, match=r"(?i)key|auth"):
        await memory.remember("x")
    assert len(openai_wire.requests) == 1
    assert await db.fetch_val("SELECT count(*) FROM agent.memories") == 0


# --- while the embedding provider is down -------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DegradedReasons(list[str]):
    """An `on_degraded` callback that keeps what it is told."""

    async def __call__(self, reason: str) -> None:
        self.append(reason)


async def remember_without_vectors(db: Database, agent_id: int) -> dict[str, Memory]:
    return await remember_facts(LongTermMemory(db, agent_id=agent_id))


def single_attempt() -> RetryPolicy:
    return RetryPolicy(max_attempts=1)


async def test_recall_falls_back_to_full_text_while_the_provider_is_down(
    db, agent_id, uncached_logs
):
    uncached_logs(retrieval)
    facts = await remember_without_vectors(db, agent_id)
    reasons = DegradedReasons()
    down = OpenAIEmbeddingProvider(
        api_key="sk-test-secret",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        retry=single_attempt(),
    )
    memory = LongTermMemory(db, agent_id=agent_id, embedder=down, on_degraded=reasons)
    with capture_logs() as logs:
        results = await memory.recall("green tea")
    assert [r.id for r in results] == [facts["tea"].id]
    assert results[0].parts.semantic is None and results[0].parts.match == "strict"
    assert reasons == ["embeddings unavailable (provider_unavailable): full-text recall only"]
    warnings = [entry for entry in logs if entry["event"] == "embeddings_degraded"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["error"] == "provider_unavailable"
    assert "sk-test-secret" not in repr(logs)

    # Each recall tries again, and says so again; writes still fail and store nothing.
    assert await memory.recall("what does the user like to drink?")
    assert len(reasons) == 2
    with pytest.raises(LLMError):
        await memory.remember("User is allergic to nuts")
    assert await db.fetch_val("SELECT count(*) FROM agent.memories") == len(facts)


async def test_an_agent_without_memories_still_recalls_while_the_provider_is_down(db, agent_id):
    reasons = DegradedReasons()
    down = OllamaEmbeddingProvider(host=f"http://127.0.0.1:{closed_port()}", retry=single_attempt())
    memory = LongTermMemory(db, agent_id=agent_id, embedder=down, on_degraded=reasons)
    assert await memory.recall("anything at all?") == []
    assert reasons == ["embeddings unavailable (provider_unavailable): full-text recall only"]


async def test_recall_degrades_on_a_provider_error_and_recovers(db, agent_id, openai_wire):
    reasons = DegradedReasons()
    memory = LongTermMemory(
        db, agent_id=agent_id, embedder=openai_provider(openai_wire), on_degraded=reasons
    )
    tea = await memory.remember("User prefers green tea")
    openai_wire.errors.append((503, {"error": {"message": "overloaded", "type": "server_error"}}))
    [by_words] = await memory.recall("green tea")
    assert by_words.id == tea.id and by_words.parts.semantic is None
    assert reasons == ["embeddings unavailable (provider_unavailable): full-text recall only"]
    # The provider is back: recall by meaning again, with no new report.
    [by_meaning] = await memory.recall("favourite beverage?")
    assert by_meaning.id == tea.id and by_meaning.parts.semantic is not None
    assert len(reasons) == 1


async def test_a_provider_that_does_not_answer_is_given_up_on(db, agent_id):
    facts = await remember_without_vectors(db, agent_id)
    reasons = DegradedReasons()
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host, port = silent.getsockname()
        slow = OpenAIEmbeddingProvider(api_key="sk-test", base_url=f"http://{host}:{port}/v1")
        memory = LongTermMemory(
            db, agent_id=agent_id, embedder=slow, embed_timeout=0.2, on_degraded=reasons
        )
        results = await memory.recall("green tea")
    assert [r.id for r in results] == [facts["tea"].id]
    assert reasons == ["embeddings unavailable (timeout): full-text recall only"]


class HangingEmbedder(BagOfWordsEmbedder):
    """An embedder that never answers; `started` is set once it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_cancelling_a_recall_is_not_taken_for_an_outage(db, agent_id):
    reasons = DegradedReasons()
    embedder = HangingEmbedder()
    memory = LongTermMemory(db, agent_id=agent_id, embedder=embedder, on_degraded=reasons)
    recall = asyncio.create_task(memory.recall("green tea"))
    await embedder.started.wait()
    recall.cancel()
    with pytest.raises(asyncio.CancelledError):
        await recall
    assert reasons == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "10"])
async def test_invalid_embed_timeouts_are_refused(db, agent_id, timeout):
    with pytest.raises(InvalidInputError, match="embed_timeout"):
        LongTermMemory(db, agent_id=agent_id, embed_timeout=timeout)


def test_embedder_from_settings():
    assert embedder_from_settings(load_settings(embedding_provider="none")) is None
    provider = embedder_from_settings(load_settings(embedding_provider="openai"))
    assert isinstance(provider, OpenAIEmbeddingProvider)
    assert provider.model == "text-embedding-3-small"
    custom = embedder_from_settings(
        load_settings(embedding_provider="ollama", embedding_model="mxbai-embed-large")
    )
    assert custom is not None and (custom.name, custom.model) == ("ollama", "mxbai-embed-large")


# --- without pgvector -----------------------------------------------------------------------


@pytest.fixture
async def plain_postgres(no_vector_server_url):
    """A migrated database on a server without pgvector (the machine's PostgreSQL 15)."""
    database = Database(url=no_vector_server_url, test=True)
    await database.connect()
    yield database
    await database.disconnect()


async def test_without_pgvector_full_text_works_and_embeddings_are_refused(plain_postgres):
    db = plain_postgres
    support = await vector_support(db)
    assert (support.extension, support.columns) == (False, False)
    agent = await new_agent(db)
    plain = LongTermMemory(db, agent_id=agent)
    tea = await plain.remember("User prefers green tea")
    assert [r.id for r in await plain.recall("what does the user prefer?")] == [tea.id]

    semantic = LongTermMemory(db, agent_id=agent, embedder=BagOfWordsEmbedder())
    for attempt in (semantic.remember("x"), semantic.recall("tea"), semantic.embed_missing()):
        with pytest.raises(FeatureUnavailableError, match="pgvector is not installed") as error:
            await attempt
        assert "GATHERING_EMBEDDING_PROVIDER=none" in (error.value.hint or "")
        assert error.value.http_status == 501


async def test_pgvector_installed_after_the_migration_is_explained(db):
    # The embedded server has pgvector; dropping the columns mimics a late installation.
    await db.execute("ALTER TABLE agent.memories DROP COLUMN embedding")
    memory = LongTermMemory(db, agent_id=await new_agent(db), embedder=BagOfWordsEmbedder())
    with pytest.raises(FeatureUnavailableError, match="installed after") as error:
        await memory.recall("tea")
    assert "ADD COLUMN embedding vector" in (error.value.hint or "")


# --- the prompt section ---------------------------------------------------------------------


async def test_format_memories_for_prompt(memory):
    facts = await remember_facts(memory)
    recalled = await memory.recall("what does the user prefer to drink?")
    section = format_memories_for_prompt(recalled, budget_chars=1000)
    lines = section.splitlines()
    assert lines[0] == "Relevant long-term memories (most relevant first):"
    day = facts["tea"].created_at.strftime("%Y-%m-%d")
    assert f"- [preference, {day}] User prefers green tea" in lines
    assert len(lines) == 1 + len(recalled)
    assert len(section) <= 1000


async def test_format_memories_respects_the_budget(memory):
    long = await memory.remember("word " * 200)
    short = await memory.remember("short one")
    section = format_memories_for_prompt([short, long], budget_chars=200)
    assert len(section) <= 200
    assert section.splitlines()[1].endswith("short one")
    assert section.endswith("…")
    assert "  " not in section  # whitespace collapsed
    assert format_memories_for_prompt([short, long], budget_chars=90).count("\n") == 1
    assert format_memories_for_prompt([long], budget_chars=60) == ""
    assert format_memories_for_prompt([], budget_chars=1000) == ""
    bare = format_memories_for_prompt([short], budget_chars=30, heading="")
    assert bare == f"- [fact, {short.created_at:%Y-%m-%d}] short one" and len(bare) == 30
    assert format_memories_for_prompt([short], budget_chars=29, heading="") == ""
    with pytest.raises(InvalidInputError):
        format_memories_for_prompt([short], budget_chars=-1)
