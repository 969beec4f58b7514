"""The knowledge base: chunking (examples and properties), documents on a real PostgreSQL,
hybrid search by words and by meaning (by words alone while embeddings are down), selections
of categories and documents, and an agent's view of the knowledge."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import socket
from collections.abc import Sequence

import pytest
from db_rows import new_agent, new_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gathering.agents.knowledge import (
    Document,
    KnowledgeBase,
    TextChunk,
    chunk_text,
)
from gathering.agents.retrieval import RankingWeights, ScopeRef
from gathering.agents.system_prompt import format_knowledge_for_prompt
from gathering.db import Database
from gathering.errors import FeatureUnavailableError, InvalidInputError, LLMError, NotFoundError
from gathering.llm import OpenAIEmbeddingProvider, RetryPolicy

CONCEPTS = {"rollback": "undo", "revert": "undo", "undo": "undo", "restore": "undo"}


class BagOfWordsEmbedder:
    """A deterministic `EmbeddingProvider`: hashed word counts plus a heavily weighted shared
    feature for words that mean the same, normalised. Records each batch's size."""

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.batches: list[int] = []

    @property
    def name(self) -> str:
        return "fake"

    @property
    def model(self) -> str:
        return f"bow-{self.dimensions}"

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in re.findall(r"[a-z]+", text.lower()):
            base = word.removesuffix("s") if len(word) > 3 else word
            features = [(base, 1.0)]
            if concept := CONCEPTS.get(word) or CONCEPTS.get(base):
                features.append(("concept:" + concept, 3.0))
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


RUNBOOK = """\
Deployment runbook

Releases go out every Tuesday after the standup. Build the image, push it to the registry and
run the smoke tests against staging before anything reaches production.

To roll back a release, run `deploy rollback --to previous` from the ops host. The rollback
takes about two minutes; watch the error rate dashboard while it runs.

Never deploy on Fridays. If an emergency fix cannot wait, page the on-call lead first.
"""

VACATION = """\
Everyone gets 25 days of paid leave a year. Ask your manager at least two weeks ahead;
unused days carry over until March.
"""


# --- chunking -------------------------------------------------------------------------------


def test_short_text_is_one_chunk():
    assert chunk_text("  Hello world.  ") == [TextChunk(0, 2, 14, "Hello world.")]


def test_blank_text_has_no_chunks():
    assert chunk_text("") == []
    assert chunk_text(" \n\n\t ") == []


def test_paragraphs_are_packed_up_to_the_target():
    text = "First para.\n\nSecond para.\n\nThird para that is longer."
    chunks = chunk_text(text, target_chars=30, overlap_chars=0)
    assert [c.content for c in chunks] == [
        "First para.\n\nSecond para.",
        "Third para that is longer.",
    ]


def test_long_paragraphs_are_split_by_sentences_then_words():
    text = "One two three. Four five six! Seven eight nine? " + "word " * 12
    chunks = chunk_text(text, target_chars=20, overlap_chars=0)
    assert [c.content for c in chunks][:3] == [
        "One two three.",
        "Four five six!",
        "Seven eight nine?",
    ]
    assert all(len(c.content) <= 20 for c in chunks)
    assert " ".join(c.content for c in chunks[3:]).split() == ["word"] * 12


def test_a_word_longer_than_the_target_is_cut_into_pieces():
    word = "x" * 45
    chunks = chunk_text(f"short {word} tail", target_chars=10, overlap_chars=2)
    assert [c.content for c in chunks] == ["short", *["x" * 10] * 4, "xxxxx tail"]


def test_chunks_overlap_by_whole_sentences():
    sentences = [f"Sentence number {i} is here." for i in range(10)]
    text = " ".join(sentences)
    chunks = chunk_text(text, target_chars=90, overlap_chars=30)
    assert len(chunks) > 1
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they overlap ...
        assert before.end - after.start <= 30  # ... by at most the overlap
        assert after.content.split(".")[0] + "." in sentences  # starting at a sentence


def test_quotes_and_brackets_stay_with_their_sentence():
    text = 'He said "stop." Then (after a pause.) she left.'
    chunks = chunk_text(text, target_chars=16, overlap_chars=0)
    assert [c.content for c in chunks] == [
        'He said "stop."',
        "Then (after a",
        "pause.)",
        "she left.",
    ]


@pytest.mark.parametrize(
    ("target", "overlap"), [(0, 0), (10, 10), (10, -1), (10, 11), (True, 0), (10, 2.5)]
)
def test_invalid_chunk_sizes_are_refused(target, overlap):
    with pytest.raises(InvalidInputError):
        chunk_text("text", target, overlap)


TEXT = st.lists(
    st.sampled_from(
        [*"abcdefghij ABC.!?,;'\"()\n\t-\u2013\u2026\u00e9\u201d", "  ", "\n\n", ". ", "word"]
    ),
    max_size=300,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, target=st.integers(1, 120), data=st.data())
def test_chunking_properties(text, target, data):
    overlap = data.draw(st.integers(0, target - 1))
    chunks = chunk_text(text, target, overlap)

    covered = set()
    for seq, chunk in enumerate(chunks):
        assert chunk.seq == seq
        assert chunk.content == text[chunk.start : chunk.end]
        assert chunk.content == chunk.content.strip() and chunk.content
        assert len(chunk.content) <= target  # even a word longer than that is cut
        covered.update(range(chunk.start, chunk.end))
    # Every non-blank character is in some chunk.
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start and before.end < after.end
        assert before.end - after.start <= overlap


# --- documents ------------------------------------------------------------------------------


@pytest.fixture
async def kb(db: Database) -> KnowledgeBase:
    return KnowledgeBase(db, target_chars=300, overlap_chars=60)


async def test_add_get_list_and_delete_a_document(db, kb):
    document = await kb.add_document(
        "  Deployment   runbook ",
        RUNBOOK,
        category=" Ops ",
        source="wiki://ops/deploy",
        metadata={"team": "platform", "version": 3},
    )
    assert isinstance(document, Document)
    assert (document.title, document.category, document.scope) == (
        "Deployment runbook",
        "ops",
        "global",
    )
    assert document.source == "wiki://ops/deploy"
    assert document.metadata == {"team": "platform", "version": 3}
    assert document.size_chars == len(RUNBOOK) and document.content is None
    assert document.chunk_count == len(chunk_text(RUNBOOK, 300, 60)) > 1
    assert document.owner_id == await db.fetch_val("SELECT id FROM auth.users WHERE is_local_owner")
    rows = await db.fetch_all(
        "SELECT seq, start_char, end_char, content FROM agent.chunks WHERE document_id = $1"
        " ORDER BY seq",
        document.id,
    )
    for row in rows:
        assert RUNBOOK[row["start_char"] : row["end_char"]] == row["content"]

    full = await kb.get_document(document.id)
    assert full.content == RUNBOOK
    other = await kb.add_document("Vacation policy", VACATION, category="hr")
    assert [d.id for d in await kb.list_documents()] == [other.id, document.id]
    assert [d.id for d in await kb.list_documents(category="OPS")] == [document.id]
    assert [d.id for d in await kb.list_documents(limit=1, offset=1)] == [document.id]

    await kb.delete_document(document.id)
    assert (
        await db.fetch_val("SELECT count(*) FROM agent.chunks WHERE document_id = $1", document.id)
        == 0
    )
    with pytest.raises(NotFoundError, match=f"document {document.id} not found"):
        await kb.get_document(document.id)
    with pytest.raises(NotFoundError):
        await kb.delete_document(document.id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": ""}, "title must not be empty"),
        ({"title": "x" * 501}, "at most 500"),
        ({"content": " "}, "content must not be empty"),
        ({"content": "a\x00b"}, "NUL"),
        ({"category": ""}, "category"),
        ({"scope": "galaxy"}, "unknown scope"),
        ({"scope": "circle"}, "needs a scope_id"),
        ({"scope": "global", "scope_id": "x"}, "no scope_id"),
        ({"scope": "agent"}, "agent's id"),
        ({"scope": "agent", "scope_id": "seven"}, "not an agent id"),
        ({"source": ""}, "source"),
        ({"metadata": ["not", "a", "dict"]}, "JSON object"),
        ({"metadata": {"when": object()}}, "not JSON-serialisable"),
        ({"metadata": {"nan": float("nan")}}, "not JSON-serialisable"),
        ({"metadata": {"x": "a\x00"}}, "NUL"),
        ({"metadata": {"big": "x" * 70_000}}, "larger than"),
    ],
)
async def test_add_document_rejects_bad_input(kb, kwargs, message):
    arguments = {"title": "Title", "content": "Some content."} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        await kb.add_document(**arguments)


async def test_invalid_settings_are_refused(db):
    with pytest.raises(InvalidInputError):
        KnowledgeBase(db, target_chars=100, overlap_chars=100)
    with pytest.raises(InvalidInputError, match="text-search configuration"):
        KnowledgeBase(db, language="no such config")
    with pytest.raises(InvalidInputError, match="klingon"):
        await KnowledgeBase(db, language="klingon").search("x")


async def test_scopes_and_agent_documents(db, kb):
    agent = await new_agent(db)
    private = await kb.add_document(
        "Agent notes", "Rollback notes for this agent only.", scope="agent", scope_id=str(agent)
    )
    circle = await kb.add_document(
        "Circle notes",
        "Rollback notes for the research circle.",
        scope="circle",
        scope_id="research",
    )
    everyone = await kb.add_document("Shared notes", "Rollback notes for everyone.")
    assert (private.scope, private.scope_id) == ("agent", str(agent))

    def ids(hits):
        return {hit.document_id for hit in hits}

    assert ids(await kb.search("rollback notes")) == {private.id, circle.id, everyone.id}
    assert ids(await kb.search("rollback notes", scopes=["global"])) == {everyone.id}
    assert ids(await kb.search("rollback notes", scopes="global")) == {everyone.id}
    assert ids(await kb.search("rollback notes", scopes=[("circle", "research"), "global"])) == {
        circle.id,
        everyone.id,
    }
    assert ids(await kb.search("rollback notes", scopes=[ScopeRef("circle", "other")])) == set()
    assert ids(await kb.search("rollback notes", scopes=[ScopeRef("agent", str(agent))])) == {
        private.id
    }
    assert await kb.search("rollback notes", scopes=[]) == []
    assert [d.id for d in await kb.list_documents(scopes=["circle"])] == [circle.id]

    await db.execute("DELETE FROM agent.agents WHERE id = $1", agent)
    with pytest.raises(NotFoundError):
        await kb.get_document(private.id)


async def test_owners_are_kept_apart(db):
    stranger = await new_user(db)
    mine = KnowledgeBase(
        db, owner_id=await db.fetch_val("SELECT id FROM auth.users WHERE is_local_owner")
    )
    theirs = KnowledgeBase(db, owner_id=stranger)
    everyone = KnowledgeBase(db)  # owner None: every owner's, for admins
    my_doc = await mine.add_document("Rollback guide", "How to roll back a release.")
    their_doc = await theirs.add_document("Rollback guide", "Their own rollback steps.")
    assert their_doc.owner_id == stranger
    assert [h.document_id for h in await mine.search("rollback")] == [my_doc.id]
    assert [h.document_id for h in await theirs.search("rollback")] == [their_doc.id]
    assert {h.document_id for h in await everyone.search("rollback")} == {my_doc.id, their_doc.id}
    assert [d.id for d in await theirs.list_documents()] == [their_doc.id]
    with pytest.raises(NotFoundError):
        await theirs.get_document(my_doc.id)
    with pytest.raises(NotFoundError):
        await theirs.delete_document(my_doc.id)
    # Someone else's agent is not found, like a missing one.
    my_agent = await new_agent(db)
    with pytest.raises(NotFoundError, match=f"agent {my_agent} not found"):
        await theirs.add_document("x", "y", scope="agent", scope_id=str(my_agent))
    with pytest.raises(NotFoundError, match="agent 999999 not found"):
        await everyone.add_document("x", "y", scope="agent", scope_id="999999")
    on_agent = await everyone.add_document("Agent doc", "y", scope="agent", scope_id=str(my_agent))
    assert on_agent.owner_id == my_doc.owner_id


# --- search ---------------------------------------------------------------------------------


async def test_search_finds_the_passage_that_answers_the_question(kb):
    runbook = await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    await kb.add_document("Vacation policy", VACATION, category="hr")
    hits = await kb.search("how do I roll back a release?")
    assert hits[0].document_id == runbook.id
    assert "deploy rollback --to previous" in hits[0].content
    assert hits[0].document_title == "Deployment runbook" and hits[0].category == "ops"
    assert RUNBOOK[hits[0].start : hits[0].end] == hits[0].content
    assert hits[0].parts.match == "strict" and hits[0].score == hits[0].parts.relevance
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_loose_fallback_and_title_matches(kb):
    await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    vacation = await kb.add_document("Vacation policy", VACATION, category="hr")
    hits = await kb.search("how many vacation days carry over")
    assert hits[0].document_id == vacation.id
    titled = await kb.search("policy")  # only in the title
    assert [h.document_id for h in titled] == [vacation.id]
    assert await kb.search("kubernetes helm chart") == []


async def test_category_limit_and_min_score(kb):
    await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    await kb.add_document("Vacation policy", VACATION, category="hr")
    assert {h.category for h in await kb.search("days", category="hr")} == {"hr"}
    assert await kb.search("release", category="hr") == []
    assert len(await kb.search("release", limit=1)) == 1
    every = await kb.search("release", limit=100)
    assert all(
        h.score >= every[0].score for h in await kb.search("release", min_score=every[0].score)
    )
    for bad in ({"query": ""}, {"query": "x", "limit": 0}, {"query": "x", "min_score": -1}):
        with pytest.raises(InvalidInputError):
            await kb.search(**bad)


async def test_semantic_search_and_batched_embeddings(db):
    embedder = BagOfWordsEmbedder()
    kb = KnowledgeBase(db, embedder=embedder, target_chars=80, overlap_chars=0)
    long_text = "\n\n".join(f"Section {i} talks about topic number {i}." for i in range(150))
    big = await kb.add_document("Topics", long_text)
    assert big.chunk_count > 64 and big.embedding_model == "fake/bow-64"
    assert max(embedder.batches) == 64 and sum(embedder.batches) == big.chunk_count
    runbook = await kb.add_document("Deployment runbook", RUNBOOK)
    hits = await kb.search("revert", limit=3)  # the text says "roll back" / "rollback"
    assert hits and hits[0].document_id == runbook.id
    assert hits[0].parts.match == "semantic" and "rollback" in hits[0].content
    assert all(h.parts.semantic is not None for h in hits)


async def test_categories_and_document_ids_select_documents(kb):
    runbook = await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    vacation = await kb.add_document("Vacation policy", VACATION, category="hr")
    notes = await kb.add_document(
        "Release notes", "The release of May added dark mode.", category="product"
    )

    async def found(**selection):
        return {h.document_id for h in await kb.search("release days", limit=20, **selection)}

    assert await found() == {runbook.id, vacation.id, notes.id}
    assert await found(categories=["HR", " ops "]) == {runbook.id, vacation.id}
    assert await found(document_ids=[notes.id]) == {notes.id}
    # Given both, a document needs to be in one of the categories or among the ids.
    assert await found(categories=["hr"], document_ids=[notes.id]) == {vacation.id, notes.id}
    assert await found(categories=["hr"], category="ops") == set()  # `category` still applies
    assert await found(categories=[]) == set() and await found(document_ids=[]) == set()
    for bad in (
        {"categories": "ops"},
        {"categories": [""]},
        {"document_ids": [0]},
        {"document_ids": [True]},
        {"document_ids": ["3"]},
        {"document_ids": 3},
    ):
        with pytest.raises(InvalidInputError):
            await kb.search("release", **bad)


async def test_an_agents_knowledge_base_sees_its_owners_global_and_its_own_documents(db, kb):
    agent, other_agent = await new_agent(db), await new_agent(db)
    shared = await kb.add_document("Shared runbook", "Rollback with deploy rollback.")
    mine = await kb.add_document(
        "Agent notes", "Rollback notes.", scope="agent", scope_id=str(agent)
    )
    theirs = await kb.add_document(
        "Other notes", "Rollback notes.", scope="agent", scope_id=str(other_agent)
    )
    circle = await kb.add_document(
        "Circle notes", "Rollback notes.", scope="circle", scope_id="research"
    )
    stranger = await new_user(db)
    foreign = await KnowledgeBase(db, owner_id=stranger).add_document("Foreign", "Rollback.")

    view = KnowledgeBase(db, agent_id=agent)
    assert {h.document_id for h in await view.search("rollback")} == {shared.id, mine.id}
    assert {d.id for d in await view.list_documents()} == {shared.id, mine.id}
    assert (await view.get_document(mine.id)).id == mine.id
    for hidden in (theirs, circle, foreign):
        with pytest.raises(NotFoundError):
            await view.get_document(hidden.id)
        with pytest.raises(NotFoundError):
            await view.delete_document(hidden.id)
    # An agent-scoped document it adds is its own; another agent's scope is refused.
    added = await view.add_document("More notes", "Rollback again.", scope="agent")
    assert (added.scope_id, added.owner_id) == (str(agent), shared.owner_id)
    with pytest.raises(InvalidInputError, match="belongs to agent"):
        await view.add_document("x", "y", scope="agent", scope_id=str(other_agent))
    # An agent of another owner, or no agent at all, is not found.
    with pytest.raises(NotFoundError, match=f"agent {agent} not found"):
        await KnowledgeBase(db, owner_id=stranger, agent_id=agent).search("rollback")
    with pytest.raises(NotFoundError, match="agent 999999 not found"):
        await KnowledgeBase(db, agent_id=999999).list_documents()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_search_falls_back_to_full_text_while_embeddings_are_down(db, kb):
    runbook = await kb.add_document("Deployment runbook", RUNBOOK)
    reasons: list[str] = []

    async def on_degraded(reason: str) -> None:
        reasons.append(reason)

    down = OpenAIEmbeddingProvider(
        api_key="sk-test",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        retry=RetryPolicy(max_attempts=1),
    )
    offline = KnowledgeBase(db, embedder=down, on_degraded=on_degraded)
    hits = await offline.search("how do I roll back a release?")
    assert hits[0].document_id == runbook.id and hits[0].parts.semantic is None
    assert reasons == ["embeddings unavailable (provider_unavailable): full-text search only"]
    # Adding a document still needs the embeddings, and stores nothing without them.
    with pytest.raises(LLMError):
        await offline.add_document("Vacation policy", VACATION)
    assert [d.id for d in await kb.list_documents()] == [runbook.id]


async def test_knowledge_without_pgvector(db, no_vector_server_url):
    async with Database(url=no_vector_server_url, test=True) as plain:
        kb = KnowledgeBase(plain)
        document = await kb.add_document("Deployment runbook", RUNBOOK)
        assert (await kb.search("roll back"))[0].document_id == document.id
        semantic = KnowledgeBase(plain, embedder=BagOfWordsEmbedder())
        with pytest.raises(FeatureUnavailableError, match="pgvector is not installed"):
            await semantic.add_document("x", "y")
        with pytest.raises(FeatureUnavailableError, match="pgvector is not installed"):
            await semantic.search("x")


async def test_adding_inside_a_callers_transaction(db):
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            kb = KnowledgeBase(tx)
            await kb.add_document("Doomed", "This will be rolled back.")
            assert len(await kb.list_documents()) == 1
            raise RuntimeError("abort")
    assert await KnowledgeBase(db).list_documents() == []


async def test_weights_can_favour_recent_documents(db):
    kb = KnowledgeBase(db, weights=RankingWeights(relevance=0.5, importance=0, recency=0.5))
    old = await kb.add_document("Old rollback guide", "Rollback steps.")
    new = await kb.add_document("New rollback guide", "Rollback steps.")
    await db.execute(
        "UPDATE agent.documents SET created_at = now() - interval '90 days' WHERE id = $1", old.id
    )
    hits = await kb.search("rollback steps")
    assert [h.document_id for h in hits] == [new.id, old.id]
    assert hits[1].parts.recency == pytest.approx(0.125, abs=1e-3)


async def test_format_knowledge_for_prompt(kb):
    await kb.add_document("Deployment runbook", RUNBOOK)
    hits = await kb.search("roll back a release")
    section = format_knowledge_for_prompt(hits, budget_chars=2000)
    assert section.startswith(
        "Relevant knowledge (most relevant first):\n[Deployment runbook, part"
    )
    assert "deploy rollback --to previous" in section and len(section) <= 2000
    cut = format_knowledge_for_prompt(hits, budget_chars=160)
    assert len(cut) <= 160 and cut.endswith('…"')
    assert format_knowledge_for_prompt(hits, budget_chars=60) == ""
    assert format_knowledge_for_prompt([], budget_chars=2000) == ""
    bare = format_knowledge_for_prompt(hits[:1], budget_chars=2000, heading="")
    assert bare.startswith("[Deployment runbook, part") and bare.endswith('"')
    with pytest.raises(InvalidInputError):
        format_knowledge_for_prompt(hits, budget_chars=-5)
