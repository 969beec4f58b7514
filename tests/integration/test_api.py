"""The HTTP API skeleton: health probes, errors, OpenAPI."""

from __future__ import annotations

import httpx
import pytest

from gathering.api.app import app, create_app
from gathering.config import load_settings


@pytest.fixture
async def client():
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


def _client_for(application) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test")


async def test_health_is_alive(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_when_database_is_migrated(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True, "detail": "migrations current, pgvector on"}


async def test_not_ready_when_database_is_unreachable():
    settings = load_settings(
        database_url="postgresql://nobody@127.0.0.1:1/none", db_connect_timeout=2
    )
    async with _client_for(create_app(settings=settings)) as ac:
        response = await ac.get("/health/ready")
    assert response.status_code == 503
    assert "127.0.0.1:1" in response.json()["reason"]


async def test_not_ready_when_migrations_are_pending(fresh_database_url):
    settings = load_settings(database_url=fresh_database_url, auto_migrate=False)
    application = create_app(settings=settings)
    try:
        async with _client_for(application) as ac:
            response = await ac.get("/health/ready")
    finally:
        await application.state.gathering.close()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert "0001_initial.sql" in body["reason"]


async def test_testing_app_gets_its_own_database(app):
    async with _client_for(app) as ac:
        response = await ac.get("/health/ready")
    assert response.status_code == 200
    database = await app.state.gathering.database()
    assert "gathering_test_" in await database.fetch_val("SELECT current_database()")


async def test_unknown_route_is_problem_json(client):
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


async def test_openapi_and_docs_are_served(client):
    spec = (await client.get("/openapi.json")).json()
    assert "/health/ready" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


def test_lifespan_connects_and_closes(migrated_database_url):
    from starlette.testclient import TestClient

    application = create_app(settings=load_settings(database_url=migrated_database_url))
    with TestClient(application) as tc:
        assert tc.get("/health/ready").status_code == 200
    assert application.state.gathering._database is not None
    assert not application.state.gathering._database.is_connected


@pytest.mark.asyncio
async def test_list_agents(client):
    response = await client.get("/agents")
    assert response.status_code == 200
    assert isinstance(response.json(), list)


@pytest.mark.asyncio
async def test_create_agent(client):
    response = await client.post(
        "/agents",
        json={"name": "NewAgent", "provider": "anthropic", "model": "claude-sonnet-4-20250514"},
    )
    assert response.status_code == 201
    assert response.json()["name"] == "NewAgent"


def test_operation_ids_are_stable_tag_function_names():
    # A generated client names its methods after these: they must not drift with the path.
    spec = create_app().openapi()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert {"agents-chat", "agents-create_agent", "auth-login", "health-ready"} <= set(ids)
    assert all(op_id.count("-") == 1 and "/" not in op_id for op_id in ids)
