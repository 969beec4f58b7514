"""SQL injection: a corpus of payloads through every string field of every endpoint.

The endpoints come from the app's OpenAPI document, so routes added later are covered without
touching this file. Each payload goes into one field at a time (path, query or JSON body; other
fields get ordinary values); no answer may be a 500, and afterwards a canary table, the users
and the schema must be exactly as before.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gathering.api.app import create_app
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.db import Database

PASSWORD = "correct horse battery staple"

PAYLOADS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "admin'--",
    "') OR ('a'='a",
    "1 OR 1=1",
    "1' ORDER BY 1--",
    "-1",
    "'; DROP TABLE sqli_canary; --",
    "'); DROP TABLE auth.users; --",
    "1; DELETE FROM sqli_canary",
    "'; UPDATE auth.users SET is_admin = true; --",
    "'; INSERT INTO auth.users (email, is_admin) VALUES ('evil@example.com', true); --",
    "' UNION SELECT secret FROM sqli_canary --",
    "' UNION SELECT NULL, NULL, NULL --",
    "'||(SELECT secret FROM sqli_canary LIMIT 1)||'",
    "'; SELECT pg_sleep(0); --",
    "'; COPY sqli_canary TO '/tmp/sqli'; --",
    "$$; DROP TABLE sqli_canary; $$",
    "$1",
    "\\'; DROP TABLE sqli_canary; --",
    "\\",
    "%27%20OR%201%3D1",
    "%",
    "_",
    "*",
    "\u02bc OR 1=1 --",
    "\uff07 OR 1=1 --",
    "😀' OR '1'='1",
    "\x00'; DROP TABLE sqli_canary; --",
    "line\nbreak'; --",
    '{"$gt": ""}',
    "null",
    "a" * 10_000,
]

CANARY = [(1, "alpha"), (2, "beta"), (3, "gamma")]


@pytest.fixture
async def app(migrated_database_url) -> AsyncIterator[Any]:
    application = create_app(
        settings=load_settings(
            database_url=migrated_database_url,
            auth="required",
            secret_key="k" * 64,
            login_attempts_per_account="100000/minute",
            login_attempts_per_ip="100000/minute",
        )
    )
    yield application
    await application.state.gathering.close()


async def snapshot(db: Database) -> dict[str, Any]:
    return {
        "canary": [
            (r["id"], r["secret"])
            for r in await db.fetch_all("SELECT * FROM sqli_canary ORDER BY id")
        ],
        "users": await db.fetch_all(
            "SELECT id, email, is_admin, is_active, password_hash FROM auth.users ORDER BY id"
        ),
        "tables": await db.fetch_all(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ),
    }


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    if "anyOf" in schema:  # Optional[X]: take the non-null branch
        branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return resolve(spec, branches[0]) if branches else {"type": "null"}
    return schema


def ordinary(spec: dict, schema: dict) -> Any:
    """A plain valid-looking value for `schema`."""
    schema = resolve(spec, schema)
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if kind == "string":
        if schema.get("format") == "date-time":
            return datetime.now(UTC).isoformat()
        if schema.get("format") == "email":
            return "someone@example.com"
        return "ordinary"
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        return [ordinary(spec, schema.get("items", {}))]
    if kind == "object":
        return {
            name: ordinary(spec, sub)
            for name, sub in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
    return None


def is_text(spec: dict, schema: dict) -> bool:
    schema = resolve(spec, schema)
    return schema.get("type", "string") == "string" and "enum" not in schema


def injection_points(spec: dict) -> Iterator[tuple[str, str, str, str, dict]]:
    """(method, path, location, field, operation) for every string field of every operation."""
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query") and is_text(
                    spec, parameter.get("schema", {})
                ):
                    yield method, path, parameter["in"], parameter["name"], operation
            content = operation.get("requestBody", {}).get("content", {})
            body = resolve(spec, content.get("application/json", {}).get("schema", {}))
            for name, sub in body.get("properties", {}).items():
                resolved = resolve(spec, sub)
                if is_text(spec, sub):
                    yield method, path, "body", name, operation
                elif resolved.get("type") == "array" and is_text(spec, resolved.get("items", {})):
                    yield method, path, "body[]", name, operation


def build_request(
    spec: dict, method: str, path: str, location: str, field: str, operation: dict, payload: str
) -> dict[str, Any]:
    url, params = path, {}
    for parameter in operation.get("parameters", []):
        value = payload if parameter["name"] == field and location == parameter["in"] else None
        if parameter["in"] == "path":
            chosen = value if value is not None else ordinary(spec, parameter.get("schema", {}))
            url = url.replace(f"{{{parameter['name']}}}", quote(str(chosen), safe=""))
        elif parameter["in"] == "query" and (value is not None or parameter.get("required")):
            params[parameter["name"]] = (
                value if value is not None else ordinary(spec, parameter["schema"])
            )
    request: dict[str, Any] = {"method": method.upper(), "url": url, "params": params}
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = resolve(spec, content["application/json"]["schema"])
        body = ordinary(spec, schema)
        if location == "body":
            body[field] = payload
        elif location == "body[]":
            body[field] = [payload]
        request["json"] = body
    return request


async def test_injection_corpus_through_every_string_field_leaves_the_database_intact(app):
    db = await app.state.gathering.database()
    await db.execute("CREATE TABLE sqli_canary (id int PRIMARY KEY, secret text NOT NULL)")
    for row in CANARY:
        await db.execute("INSERT INTO sqli_canary VALUES ($1, $2)", *row)
    email = f"admin-{secrets.token_hex(4)}@example.com"
    await UserStore(db).create(email, PASSWORD, is_admin=True)
    before = await snapshot(db)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        tokens = (await ac.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        spec = (await ac.get("/openapi.json", headers=headers)).json()
        points = list(injection_points(spec))
        covered = {(m, p) for m, p, *_ in points}
        assert {("post", "/auth/login"), ("post", "/auth/api-keys"), ("get", "/audit")} <= covered
        failures = []
        for method, path, location, field, operation in points:
            for payload in PAYLOADS:
                request = build_request(spec, method, path, location, field, operation, payload)
                response = await ac.request(**request, headers=headers)
                if response.status_code >= 500:
                    failures.append(
                        (method, path, location, field, payload[:40], response.text[:200])
                    )
        assert not failures, failures
        # the token used throughout is still good: nothing the payloads did logged it out
        assert (await ac.get("/auth/me", headers=headers)).status_code == 200

    after = await snapshot(db)
    # POST /users with an ordinary body creates its example account: a plain, active member.
    example = [u for u in after["users"] if u["email"] == "ada@example.com"]
    assert [(u["is_admin"], u["is_active"]) for u in example] in ([], [(False, True)])
    after["users"] = [u for u in after["users"] if u["email"] != "ada@example.com"]
    assert after == before
    assert (
        await db.fetch_val("SELECT count(*) FROM auth.users WHERE email = 'evil@example.com'") == 0
    )
    # payloads were stored as plain text where a field is stored
    stored = {r["name"] for r in await db.fetch_all("SELECT name FROM auth.api_keys")}
    assert "'; DROP TABLE sqli_canary; --" in stored


async def test_login_payloads_never_authenticate(app):
    db = await app.state.gathering.database()
    await UserStore(db).create("victim@example.com", PASSWORD)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as ac:
        for payload in PAYLOADS:
            for body in (
                {"email": payload, "password": payload},
                {"email": "victim@example.com", "password": payload},
            ):
                response = await ac.post("/auth/login", json=body)
                assert response.status_code in (401, 422), (body, response.text)


def test_the_corpus_walker_finds_fields_of_every_kind():
    spec = {
        "paths": {
            "/things/{name}": {
                "put": {
                    "parameters": [
                        {
                            "in": "path",
                            "name": "name",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "in": "query",
                            "name": "q",
                            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        },
                        {"in": "query", "name": "n", "schema": {"type": "integer"}},
                    ],
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/T"}}
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "T": {
                    "type": "object",
                    "required": ["title", "tags", "size"],
                    "properties": {
                        "title": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "size": {"type": "integer"},
                        "kind": {"enum": ["a", "b"]},
                    },
                }
            }
        },
    }
    points = [(loc, field) for _, _, loc, field, _ in injection_points(spec)]
    assert points == [("path", "name"), ("query", "q"), ("body", "title"), ("body[]", "tags")]
    request = build_request(
        spec,
        "put",
        "/things/{name}",
        "body[]",
        "tags",
        spec["paths"]["/things/{name}"]["put"],
        "x'y",
    )
    assert request["url"] == "/things/ordinary"
    assert request["json"] == {"title": "ordinary", "tags": ["x'y"], "size": 1}
    path_request = build_request(
        spec,
        "put",
        "/things/{name}",
        "path",
        "name",
        spec["paths"]["/things/{name}"]["put"],
        "a/b'",
    )
    assert path_request["url"] == "/things/a%2Fb%27"
