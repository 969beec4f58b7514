"""`/memories` over HTTP: agents' memories and the knowledge base, validation, not-found,
ownership in multi-user mode, API-key scopes, embeddings, and pgvector missing (501)."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Sequence

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gathering.api.app import create_app
from gathering.api.routers.memories import get_embedder
from gathering.auth.users import UserStore
from gathering.config import load_settings

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


class BagOfWordsEmbedder:
    """A deterministic `EmbeddingProvider`: hashed words plus a shared "beverage" feature."""

    name = "fake"
    model = "bow-32"

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * 32
        for word in re.findall(r"[a-z]+", text.lower()):
            features = [(word, 1.0)]
            if word in {"tea", "coffee", "drink", "beverage"}:
                features.append(("concept:beverage", 3.0))
            for feature, weight in features:
                digest = hashlib.sha256(feature.encode()).digest()
                vector[int.from_bytes(digest[:4], "big") % 32] += weight
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    async def dimension(self) -> int:
        return 32


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def single(app_for):
    return app_for()


@pytest.fixture
async def api(single):
    async with client_for(single) as client:
        yield client


async def create_agent(client, headers=None, name: str = "Ada") -> int:
    response = await client.post(
        "/agents", json={"name": name, "provider": "openai", "model": "gpt-4o"}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


# --- memories ---------------------------------------------------------------------------------


async def test_remember_list_recall_and_forget(api):
    agent = await create_agent(api)
    created = await api.post(
        f"/memories/agents/{agent}",
        json={
            "content": "User prefers green tea",
            "kind": "preference",
            "importance": 0.8,
            "tags": ["Drinks"],
        },
    )
    assert created.status_code == 201, created.text
    memory = created.json()
    assert memory["agent_id"] == agent and memory["scope"] == "agent"
    assert memory["scope_id"] == str(agent) and memory["tags"] == ["drinks"]
    assert memory["importance"] == pytest.approx(0.8) and memory["access_count"] == 0
    await api.post(f"/memories/agents/{agent}", json={"content": "User lives in Paris"})
    await api.post(
        f"/memories/agents/{agent}", json={"content": "Standup is at 9:30", "scope": "global"}
    )

    listed = await api.get(f"/memories/agents/{agent}")
    assert [m["content"] for m in listed.json()] == [
        "Standup is at 9:30",
        "User lives in Paris",
        "User prefers green tea",
    ]
    only_global = await api.get(f"/memories/agents/{agent}", params={"scope": "global"})
    assert [m["content"] for m in only_global.json()] == ["Standup is at 9:30"]
    tagged = await api.get(f"/memories/agents/{agent}", params={"tag": "drinks", "limit": 5})
    assert [m["id"] for m in tagged.json()] == [memory["id"]]

    recalled = await api.post(
        f"/memories/agents/{agent}/recall", json={"query": "what does the user prefer to drink?"}
    )
    assert recalled.status_code == 200, recalled.text
    body = recalled.json()
    assert body["semantic"] is False
    assert body["results"][0]["id"] == memory["id"]
    top = body["results"][0]
    assert top["access_count"] == 1 and 0 < top["score"] <= 1
    assert set(top["parts"]) == {
        "score",
        "relevance",
        "text",
        "semantic",
        "importance",
        "recency",
        "match",
    }
    assert top["parts"]["match"] == "loose"

    assert (await api.get(f"/memories/{memory['id']}")).json()["content"] == (
        "User prefers green tea"
    )
    assert (await api.delete(f"/memories/{memory['id']}")).status_code == 204
    assert (await api.get(f"/memories/{memory['id']}")).status_code == 404
    assert (await api.delete(f"/memories/{memory['id']}")).status_code == 404


async def test_shared_scopes_through_the_api(api):
    ada, bob = await create_agent(api, name="Ada"), await create_agent(api, name="Bob")
    shared = await api.post(
        f"/memories/agents/{ada}",
        json={
            "content": "Research circle budget is 10k",
            "scope": "circle",
            "scope_id": "research",
        },
    )
    assert shared.status_code == 201 and shared.json()["agent_id"] is None
    assert shared.json()["source_agent_id"] == ada
    outsider = await api.post(f"/memories/agents/{bob}/recall", json={"query": "budget"})
    assert outsider.json()["results"] == []
    member = await api.post(
        f"/memories/agents/{bob}/recall", json={"query": "budget", "circle_ids": ["research"]}
    )
    assert [m["id"] for m in member.json()["results"]] == [shared.json()["id"]]
    listed = await api.get(f"/memories/agents/{bob}", params={"circle_id": "research"})
    assert [m["id"] for m in listed.json()] == [shared.json()["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 8001},
        {"content": "nul \u0000"},
        {"content": "ok", "kind": "gossip"},
        {"content": "ok", "importance": 1.5},
        {"content": "ok", "importance": "high"},
        {"content": "ok", "tags": "drinks"},
        {"content": "ok", "tags": [""]},
        {"content": "ok", "tags": ["t"] * 33},
        {"content": "ok", "scope": "universe"},
        {"content": "ok", "scope": "circle"},
        {"content": "ok", "scope": "global", "scope_id": "x"},
        {"content": "ok", "scope": "agent", "scope_id": "1"},
        {"content": "ok", "surprise": True},
    ],
)
async def test_invalid_memory_bodies_are_422_with_field_errors(api, body):
    agent = await create_agent(api)
    response = await api.post(f"/memories/agents/{agent}", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "x" * 4001},
        {"query": "x", "limit": 0},
        {"query": "x", "limit": 101},
        {"query": "x", "min_score": 2},
        {"query": "x", "scopes": ["everywhere"]},
        {"query": "x", "kinds": ["gossip"]},
        {"query": "x", "circle_ids": [""]},
    ],
)
async def test_invalid_recall_bodies_are_422(api, body):
    agent = await create_agent(api)
    response = await api.post(f"/memories/agents/{agent}/recall", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/memories/agents/999999", {"content": "x"}),
        ("get", "/memories/agents/999999", None),
        ("post", "/memories/agents/999999/recall", {"query": "x"}),
        ("get", "/memories/999999", None),
        ("delete", "/memories/999999", None),
        ("get", "/memories/knowledge/999999", None),
        ("delete", "/memories/knowledge/999999", None),
    ],
)
async def test_unknown_ids_are_404(api, method, path, body):
    response = await api.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/memories/0",
        "/memories/agents/0",
        f"/memories/{2**63}",
        "/memories/knowledge/0",
    ],
)
async def test_out_of_range_ids_are_422(api, path):
    assert (await api.get(path)).status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/memories/abc", None),
        # Ids are whole numbers in the path itself: these are other routes, not bad ids.
        ("DELETE", "/memories/knowledge", "GET, POST"),
        ("GET", "/memories/knowledge/search", "POST"),
    ],
)
async def test_a_path_that_is_no_id_is_no_route(api, method, path, allowed):
    response = await api.request(method, path)
    assert response.status_code == (405 if allowed else 404)
    assert response.headers.get("allow") == allowed


async def test_bad_list_parameters_are_422(api):
    agent = await create_agent(api)
    for params in (
        {"limit": 0},
        {"offset": -1},
        {"scope": "galaxy"},
        {"kind": "gossip"},
        {"tag": "x" * 65},
        {"circle_id": "x" * 201},
    ):
        response = await api.get(f"/memories/agents/{agent}", params=params)
        assert response.status_code == 422, params


# --- knowledge --------------------------------------------------------------------------------

RUNBOOK = (
    "Releases go out every Tuesday.\n\n"
    "To roll back a release, run `deploy rollback --to previous` from the ops host.\n\n"
    "Never deploy on Fridays."
)


async def test_knowledge_round_trip(api):
    created = await api.post(
        "/memories/knowledge",
        json={
            "title": "Deployment runbook",
            "content": RUNBOOK,
            "category": "ops",
            "source": "wiki://ops",
            "metadata": {"team": "platform"},
        },
    )
    assert created.status_code == 201, created.text
    document = created.json()
    assert document["chunk_count"] == 1 and document["size_chars"] == len(RUNBOOK)
    assert document["content"] is None and document["scope"] == "global"
    await api.post(
        "/memories/knowledge", json={"title": "Vacation", "content": "25 days.", "category": "hr"}
    )

    listed = await api.get("/memories/knowledge")
    assert [d["title"] for d in listed.json()] == ["Vacation", "Deployment runbook"]
    ops = await api.get("/memories/knowledge", params={"category": "ops"})
    assert [d["id"] for d in ops.json()] == [document["id"]]
    scoped = await api.get("/memories/knowledge", params={"scope": "circle", "scope_id": "x"})
    assert scoped.json() == []

    full = await api.get(f"/memories/knowledge/{document['id']}")
    assert full.json()["content"] == RUNBOOK and full.json()["metadata"] == {"team": "platform"}

    found = await api.post(
        "/memories/knowledge/search", json={"query": "how do I roll back a release?"}
    )
    assert found.status_code == 200, found.text
    hit = found.json()["results"][0]
    assert hit["document_id"] == document["id"] and "deploy rollback" in hit["content"]
    assert hit["document_title"] == "Deployment runbook" and found.json()["semantic"] is False
    scoped_search = await api.post(
        "/memories/knowledge/search",
        json={"query": "rollback", "scopes": [{"scope": "circle", "scope_id": "research"}]},
    )
    assert scoped_search.json()["results"] == []
    in_hr = await api.post(
        "/memories/knowledge/search", json={"query": "rollback", "category": "hr"}
    )
    assert in_hr.json()["results"] == []

    assert (await api.delete(f"/memories/knowledge/{document['id']}")).status_code == 204
    assert (await api.get(f"/memories/knowledge/{document['id']}")).status_code == 404


async def test_agent_scoped_documents(api):
    agent = await create_agent(api)
    created = await api.post(
        "/memories/knowledge",
        json={
            "title": "Notes",
            "content": "Agent only rollback notes.",
            "scope": "agent",
            "scope_id": str(agent),
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["scope_id"] == str(agent)
    missing = await api.post(
        "/memories/knowledge",
        json={"title": "Notes", "content": "x", "scope": "agent", "scope_id": "999999"},
    )
    assert missing.status_code == 404
    found = await api.post(
        "/memories/knowledge/search",
        json={"query": "rollback", "scopes": [{"scope": "agent", "scope_id": str(agent)}]},
    )
    assert len(found.json()["results"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "t"},
        {"title": "", "content": "c"},
        {"title": "t", "content": "   "},
        {"title": "t", "content": "c", "category": ""},
        {"title": "t", "content": "c", "scope": "circle"},
        {"title": "t", "content": "c", "scope": "global", "scope_id": "x"},
        {"title": "t", "content": "c", "scope": "agent", "scope_id": "me"},
        {"title": "t", "content": "c", "metadata": ["x"]},
        {"title": "t", "content": "c", "metadata": {"a\u0000": 1}},
        {"title": "t", "content": "c", "metadata": {"a": {"nested": 1}}},
        {"title": "t", "content": "c", "source": ""},
        {"title": "t", "content": "c\u0000"},
        {"title": "t", "content": "c", "extra": 1},
    ],
)
async def test_invalid_document_bodies_are_422(api, body):
    response = await api.post("/memories/knowledge", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize(
    "body",
    [
        {"query": ""},
        {"query": "x", "limit": 500},
        {"query": "x", "scopes": [{"scope": "global", "scope_id": "x"}]},
        {"query": "x", "scopes": [{"scope": "agent", "scope_id": "abc"}]},
        {"query": "x", "scopes": [{"scope": "nowhere"}]},
    ],
)
async def test_invalid_search_bodies_are_422(api, body):
    response = await api.post("/memories/knowledge/search", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "Infinity", "NaN"])
async def test_non_finite_numbers_are_422(api, number):
    """JSON has no infinity: 1e400 overflows to one, and Python's parser takes NaN too."""
    body = f'{{"title": "t", "content": "c", "metadata": {{"x": {number}}}}}'
    response = await api.post(
        "/memories/knowledge", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"]


async def test_oversized_metadata_is_422(api):
    response = await api.post(
        "/memories/knowledge",
        json={"title": "t", "content": "c", "metadata": {"big": "x" * 70_000}},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"


# --- embeddings -------------------------------------------------------------------------------


async def test_semantic_recall_and_search_with_an_embedder(single, api):
    single.dependency_overrides[get_embedder] = BagOfWordsEmbedder
    agent = await create_agent(api)
    tea = (
        await api.post(f"/memories/agents/{agent}", json={"content": "User prefers green tea"})
    ).json()
    assert tea["embedding_model"] == "fake/bow-32"
    recalled = (
        await api.post(f"/memories/agents/{agent}/recall", json={"query": "favourite beverage"})
    ).json()
    assert recalled["semantic"] is True
    assert [m["id"] for m in recalled["results"]] == [tea["id"]]
    assert recalled["results"][0]["parts"]["match"] == "semantic"
    await api.post("/memories/knowledge", json={"title": "Kitchen", "content": "Coffee machine."})
    found = (await api.post("/memories/knowledge/search", json={"query": "beverage"})).json()
    assert found["semantic"] is True and found["results"][0]["document_title"] == "Kitchen"


def test_get_embedder_follows_the_settings(migrated_database_url):
    app = create_app(
        settings=load_settings(database_url=migrated_database_url, embedding_provider="none")
    )

    class FakeRequest:
        pass

    request = FakeRequest()
    request.app = app  # type: ignore[attr-defined]
    assert get_embedder(request) is None  # type: ignore[arg-type]


@pytest.fixture
def plain_database_url(no_vector_server_url):
    """An empty database on a server without pgvector (the machine's PostgreSQL 15)."""
    name = f"gathering_test_{secrets.token_hex(6)}"
    with psycopg.connect(no_vector_server_url, autocommit=True, connect_timeout=2) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(no_vector_server_url, dbname=name)
    with psycopg.connect(no_vector_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def test_embeddings_without_pgvector_are_501(plain_database_url):
    app = create_app(settings=load_settings(database_url=plain_database_url))
    app.dependency_overrides[get_embedder] = BagOfWordsEmbedder
    try:
        async with client_for(app) as client:
            agent = await create_agent(client)
            response = await client.post(f"/memories/agents/{agent}", json={"content": "tea"})
            assert response.status_code == 501
            assert response.json()["code"] == "feature_unavailable"
            assert "pgvector is not installed" in response.json()["detail"]
            del app.dependency_overrides[get_embedder]
            stored = await client.post(f"/memories/agents/{agent}", json={"content": "tea"})
            assert stored.status_code == 201
    finally:
        await app.state.gathering.close()


# --- multi-user -------------------------------------------------------------------------------


@pytest.fixture
def multi(app_for):
    return app_for(auth="required", secret_key=KEY)


async def account(app, client, *, is_admin: bool = False) -> dict[str, str]:
    email = f"u-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, is_admin=is_admin)
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_someone_elses_resources_are_404_and_admins_see_all(multi):
    async with client_for(multi) as client:
        alice, mallory = await account(multi, client), await account(multi, client)
        admin = await account(multi, client, is_admin=True)
        assert (await client.get("/memories/knowledge")).status_code == 401

        agent = await create_agent(client, alice)
        memory = (
            await client.post(
                f"/memories/agents/{agent}", headers=alice, json={"content": "Alice likes tea"}
            )
        ).json()
        document = (
            await client.post(
                "/memories/knowledge",
                headers=alice,
                json={"title": "Alice's runbook", "content": "Rollback."},
            )
        ).json()

        for method, path, body in [
            ("post", f"/memories/agents/{agent}", {"content": "x"}),
            ("get", f"/memories/agents/{agent}", None),
            ("post", f"/memories/agents/{agent}/recall", {"query": "tea"}),
            ("get", f"/memories/{memory['id']}", None),
            ("delete", f"/memories/{memory['id']}", None),
            ("get", f"/memories/knowledge/{document['id']}", None),
            ("delete", f"/memories/knowledge/{document['id']}", None),
            (
                "post",
                "/memories/knowledge",
                {"title": "t", "content": "c", "scope": "agent", "scope_id": str(agent)},
            ),
        ]:
            response = await client.request(method, path, json=body, headers=mallory)
            assert response.status_code == 404, (method, path, response.text)
        assert (await client.get("/memories/knowledge", headers=mallory)).json() == []
        search = await client.post(
            "/memories/knowledge/search", headers=mallory, json={"query": "rollback"}
        )
        assert search.json()["results"] == []

        # Mallory's own knowledge is hers alone.
        own = await client.post(
            "/memories/knowledge",
            headers=mallory,
            json={"title": "Mallory's", "content": "Rollback tricks."},
        )
        assert own.status_code == 201
        assert [
            d["id"] for d in (await client.get("/memories/knowledge", headers=alice)).json()
        ] == [document["id"]]

        # Admins see and manage everyone's.
        assert len((await client.get("/memories/knowledge", headers=admin)).json()) == 2
        recalled = await client.post(
            f"/memories/agents/{agent}/recall", headers=admin, json={"query": "tea"}
        )
        assert [m["id"] for m in recalled.json()["results"]] == [memory["id"]]
        assert (await client.get(f"/memories/{memory['id']}", headers=admin)).status_code == 200
        by_admin = await client.post(
            "/memories/knowledge",
            headers=admin,
            json={
                "title": "For Alice's agent",
                "content": "c",
                "scope": "agent",
                "scope_id": str(agent),
            },
        )
        assert by_admin.status_code == 201
        assert by_admin.json()["owner_id"] == memory["owner_id"]
        assert (await client.delete(f"/memories/{memory['id']}", headers=admin)).status_code == 204

        db = await multi.state.gathering.database()
        denials = await db.fetch_val(
            "SELECT count(*) FROM auth.audit_log WHERE event = 'permission.denied'"
        )
        assert denials >= 5


async def test_api_key_scopes_are_enforced(multi):
    async with client_for(multi) as client:
        alice = await account(multi, client)
        agent = await create_agent(client, alice)
        created = await client.post(
            "/auth/api-keys", headers=alice, json={"name": "reader", "scopes": ["memories:read"]}
        )
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        assert (await client.get(f"/memories/agents/{agent}", headers=key)).status_code == 200
        denied = await client.post(f"/memories/agents/{agent}", headers=key, json={"content": "x"})
        assert denied.status_code == 403
        assert (
            await client.post(
                "/memories/knowledge", headers=key, json={"title": "t", "content": "c"}
            )
        ).status_code == 403


async def test_a_huge_number_in_an_id_path_is_no_route_not_a_crash(api):
    for path in ("/memories/" + "1" * 5000, "/memories/knowledge/" + "9" * 5000):
        assert (await api.get(path)).status_code == 404
