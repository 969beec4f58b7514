"""Knowledge in an agent's prompt: `KnowledgeScope` (the agent's `knowledge` setting) and
`knowledge_for_prompt` on a real PostgreSQL — selection by category and document, what an
agent may see, the character budget, and full-text search while embeddings are down."""

from __future__ import annotations

import socket

import pytest
from db_rows import new_agent, new_user

from gathering.agents.knowledge import KnowledgeBase, KnowledgeScope, knowledge_for_prompt
from gathering.db import Database
from gathering.errors import InvalidInputError
from gathering.llm import OpenAIEmbeddingProvider, RetryPolicy

RUNBOOK = """\
To roll back a release, run `deploy rollback --to previous` from the ops host. The rollback
takes about two minutes; watch the error rate dashboard while it runs.
"""
VACATION = "Everyone gets 25 days of paid leave a year; unused days carry over until March."
RELEASE_NOTES = "The May release added dark mode and a faster rollback of failed imports."


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the scope ------------------------------------------------------------------------------


def test_none_means_no_knowledge_and_all_means_everything():
    assert KnowledgeScope.from_value(None) is None
    everything = KnowledgeScope.from_value("all")
    assert everything == KnowledgeScope() and everything.is_all
    assert everything.to_value() == "all"
    assert KnowledgeScope.from_value(everything) is everything


@pytest.mark.parametrize(
    ("value", "categories", "document_ids"),
    [
        ({"categories": ["Ops", "ops", " Run   Books "]}, ("ops", "run books"), ()),
        ({"documents": [3, 3, 5]}, (), (3, 5)),
        ({"categories": ["hr"], "documents": [7]}, ("hr",), (7,)),
        ({"categories": [], "documents": [1]}, (), (1,)),
        ({"categories": ["hr"], "documents": None}, ("hr",), ()),
        ({"categories": [f"c{i}" for i in range(50)]}, tuple(f"c{i}" for i in range(50)), ()),
        ({"documents": list(range(1, 51))}, (), tuple(range(1, 51))),
    ],
)
def test_a_selection_of_categories_and_documents(value, categories, document_ids):
    scope = KnowledgeScope.from_value(value)
    assert scope is not None and not scope.is_all
    assert (scope.categories, scope.document_ids) == (categories, document_ids)
    assert scope.to_value() == {"categories": list(categories), "documents": list(document_ids)}
    assert KnowledgeScope.from_value(scope.to_value()) == scope


@pytest.mark.parametrize(
    "value",
    [
        "ALL",
        "everything",
        "",
        5,
        True,
        ["ops"],
        {},
        {"categories": []},
        {"categories": [], "documents": []},
        {"categories": None, "documents": None},
        {"tags": ["x"]},
        {"categories": ["ops"], "extra": 1},
        {"categories": "ops"},
        {"categories": [""]},
        {"categories": ["x" * 101]},
        {"categories": [1]},
        {"categories": [f"c{i}" for i in range(51)]},
        {"documents": 3},
        {"documents": [0]},
        {"documents": [-1]},
        {"documents": [True]},
        {"documents": ["3"]},
        {"documents": [1.0]},
        {"documents": [2**63]},
        {"documents": list(range(1, 52))},
    ],
)
def test_invalid_knowledge_is_refused_with_a_hint(value):
    with pytest.raises(InvalidInputError) as error:
        KnowledgeScope.from_value(value)
    assert error.value.hint


def test_a_scope_built_directly_is_checked_too():
    assert KnowledgeScope(categories=("OPS",)).categories == ("ops",)
    with pytest.raises(InvalidInputError):
        KnowledgeScope(document_ids=(0,))


# --- in the prompt --------------------------------------------------------------------------


@pytest.fixture
async def library(db: Database) -> dict[str, int]:
    """Documents of the local owner (global, this agent's, another agent's) and of a
    stranger; the ids of the agent, the stranger and each document."""
    agent, other_agent = await new_agent(db), await new_agent(db)
    kb = KnowledgeBase(db)
    ids = {
        "agent": agent,
        "runbook": (await kb.add_document("Deployment runbook", RUNBOOK, category="ops")).id,
        "vacation": (await kb.add_document("Vacation policy", VACATION, category="hr")).id,
        "notes": (await kb.add_document("Release notes", RELEASE_NOTES, category="product")).id,
        "own": (
            await kb.add_document(
                "Agent checklist",
                "Before a rollback, tell the channel.",
                category="ops",
                scope="agent",
                scope_id=str(agent),
            )
        ).id,
        "other_agent": (
            await kb.add_document(
                "Other checklist",
                "Rollback secrets of another agent.",
                category="ops",
                scope="agent",
                scope_id=str(other_agent),
            )
        ).id,
    }
    ids["stranger"] = await new_user(db)
    stranger = KnowledgeBase(db, owner_id=ids["stranger"])
    ids["foreign"] = (
        await stranger.add_document("Foreign runbook", "Their rollback steps.", category="ops")
    ).id
    return ids


def titles(section: str | None) -> set[str]:
    assert section is not None
    return {line[1:].rsplit(", part", 1)[0] for line in section.splitlines() if line[:1] == "["}


async def test_all_gives_the_owners_global_documents_and_the_agents_own(db, library):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    section = await knowledge_for_prompt(kb, KnowledgeScope(), "rollback", budget_chars=4000)
    assert titles(section) == {"Deployment runbook", "Release notes", "Agent checklist"}
    assert section is not None and section.startswith("[")  # no heading: the caller titles it
    assert '"To roll back a release, run `deploy rollback --to previous`' in section


async def test_a_category_selection(db, library):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    ops = KnowledgeScope(categories=("ops",))
    section = await knowledge_for_prompt(kb, ops, "rollback", budget_chars=4000)
    assert titles(section) == {"Deployment runbook", "Agent checklist"}
    hr = KnowledgeScope(categories=("hr",))
    assert titles(await knowledge_for_prompt(kb, hr, "paid leave days", budget_chars=4000)) == {
        "Vacation policy"
    }
    assert await knowledge_for_prompt(kb, hr, "rollback", budget_chars=4000) is None


async def test_a_document_selection_never_reaches_past_what_the_agent_sees(db, library):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    named = KnowledgeScope(
        document_ids=(library["notes"], library["other_agent"], library["foreign"])
    )
    section = await knowledge_for_prompt(kb, named, "rollback", budget_chars=4000)
    assert titles(section) == {"Release notes"}
    both = KnowledgeScope(categories=("hr",), document_ids=(library["runbook"],))
    section = await knowledge_for_prompt(kb, both, "rollback days", budget_chars=4000)
    assert titles(section) == {"Vacation policy", "Deployment runbook"}


async def test_another_owners_agent_sees_none_of_it(db, library):
    kb = KnowledgeBase(db, agent_id=await new_agent(db, owner_id=library["stranger"]))
    section = await knowledge_for_prompt(kb, KnowledgeScope(), "rollback", budget_chars=4000)
    assert titles(section) == {"Foreign runbook"}


async def test_the_budget_and_the_limit(db, library):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    everything = KnowledgeScope()
    for budget in (120, 200, 400):
        section = await knowledge_for_prompt(kb, everything, "rollback", budget_chars=budget)
        assert section is not None and len(section) <= budget
    assert await knowledge_for_prompt(kb, everything, "rollback", budget_chars=40) is None
    assert await knowledge_for_prompt(kb, everything, "rollback", budget_chars=0) is None
    one = await knowledge_for_prompt(kb, everything, "rollback", budget_chars=4000, limit=1)
    assert len(titles(one)) == 1
    with pytest.raises(InvalidInputError):
        await knowledge_for_prompt(kb, everything, "rollback", budget_chars=-1)


@pytest.mark.parametrize("query", ["", "   \n", "\x00", "kubernetes helm chart"])
async def test_a_blank_or_unmatched_query_gives_nothing(db, library, query):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    assert await knowledge_for_prompt(kb, KnowledgeScope(), query, budget_chars=4000) is None


async def test_a_long_message_is_searched_by_its_beginning(db, library):
    kb = KnowledgeBase(db, agent_id=library["agent"])
    message = "How do I roll back? " + "x" * 10_000 + " \x00"
    section = await knowledge_for_prompt(kb, KnowledgeScope(), message, budget_chars=4000)
    assert "Deployment runbook" in titles(section)


async def test_full_text_only_while_embeddings_are_down(db, library):
    reasons: list[str] = []

    async def on_degraded(reason: str) -> None:
        reasons.append(reason)

    down = OpenAIEmbeddingProvider(
        api_key="sk-test",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        retry=RetryPolicy(max_attempts=1),
    )
    kb = KnowledgeBase(db, agent_id=library["agent"], embedder=down, on_degraded=on_degraded)
    ops = KnowledgeScope(categories=("ops",))
    section = await knowledge_for_prompt(kb, ops, "rollback", budget_chars=4000)
    assert titles(section) == {"Deployment runbook", "Agent checklist"}
    assert reasons == ["embeddings unavailable (provider_unavailable): full-text search only"]
