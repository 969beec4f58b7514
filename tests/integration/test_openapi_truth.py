"""The schema says exactly what the server accepts and answers (issue 20), for the cases a
hostile review found beyond the fixed-seed contract run: each value the schema allows is
accepted, each it refuses is refused, and each answer is documented."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from gathering.auth.users import UserStore

KEY = "k" * 64
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(app_for, llm_stub_env):
    return app_for(auth="required", secret_key=KEY)


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        yield ac


@pytest.fixture
async def admin(app, client) -> dict[str, str]:
    email = f"a-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role="admin")
    login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _schema(app) -> dict:
    return app.openapi()


def _property(app, model: str, name: str) -> dict:
    return _schema(app)["components"]["schemas"][model]["properties"][name]


def _documented(app, method: str, path: str, status: int) -> bool:
    return str(status) in _schema(app)["paths"][path][method.lower()]["responses"]


def _allows(field: dict, value: str) -> bool:
    """Whether the field's pattern (of its string branch, for an optional field) matches."""
    [text] = [f for f in field.get("anyOf", [field]) if f.get("type") == "string"]
    return re.search(text["pattern"], value) is not None


async def test_emails_and_passwords_the_schema_allows_are_accepted(app, client, admin):
    email = _property(app, "UserCreateRequest", "email")
    password = _property(app, "UserCreateRequest", "password")
    assert not _allows(email, "abc") and not _allows(email, "q x@example.com")
    assert not _allows(email, "a\x85b@example.com")  # ECMAScript's \s lacks U+0085
    assert not _allows(password, "a passphrase with \x00 in it")
    for address in ("ada@example.com", "ÅDA+tag@example.com"):
        created = await client.post(
            "/users", json={"email": address, "password": PASSWORD}, headers=admin
        )
        assert created.status_code == 201, created.text
    bad = await client.post("/users", json={"email": "abc", "password": PASSWORD}, headers=admin)
    assert bad.status_code == 422


async def test_a_project_with_nul_is_refused_by_the_schema(app, client, admin):
    assert not _allows(_property(app, "AgentCreate", "project"), "a\x00b")
    assert _allows(_property(app, "AgentCreate", "project"), "")
    body = {"name": "p", "provider": "openai", "project": "a\u0000b"}
    refused = await client.post("/agents", json=body, headers=admin)
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"][-1] == "project"


async def test_logout_with_an_api_key_is_a_documented_403(app, client, admin):
    created = await client.post(
        "/auth/api-keys", json={"name": "k", "scopes": ["*"]}, headers=admin
    )
    answer = await client.post("/auth/logout", headers={"X-API-Key": created.json()["key"]})
    assert answer.status_code == 403 and _documented(app, "POST", "/auth/logout", 403)
    assert "API key" in answer.json()["detail"]


async def test_a_wrong_current_password_is_a_documented_403(app, client, admin):
    body = {"current_password": "not my password", "new_password": "a brand new passphrase"}
    answer = await client.post("/users/me/password", json=body, headers=admin)
    assert answer.status_code == 403 and _documented(app, "POST", "/users/me/password", 403)
    assert answer.json()["details"] == {"field": "current_password"}


async def test_metrics_document_their_text_body(app, client, admin):
    answer = await client.get("/metrics", headers=admin)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    content = _schema(app)["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in content


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("2026-11-30T08:00:00Z", True),
        ("2026-11-30T08:00:00.123+02:00", True),
        ("2026-12-31T23:59:60Z", False),  # a leap second: datetime cannot hold it
        ("0000-01-01T00:00:00Z", False),  # year 0: neither can it
    ],
)
async def test_date_times_in_the_schema_match_what_is_accepted(app, client, admin, value, accepted):
    parameters = _schema(app)["paths"]["/audit"]["get"]["parameters"]
    [since] = [p for p in parameters if p["name"] == "since"]
    assert _allows(since["schema"], value) is accepted
    answer = await client.get("/audit", params={"since": value}, headers=admin)
    assert (answer.status_code == 200) is accepted, answer.text
