"""What anonymous callers and clients must not learn: readiness details (database user, host
and name), internal endpoints and upstream bodies in model-provider errors, and, in multi-user
mode, the API documentation and the metrics (security issue 11, item 6)."""

from __future__ import annotations

import json
import logging
import secrets

import httpx
import pytest

import gathering.api.errors
from gathering.api.lifecycle import Component, Health
from gathering.auth.users import UserStore
from gathering.config import get_settings
from gathering.observability import configure_logging

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
SCRAPE_TOKEN = "scrape-" + "t" * 40
MULTI = {"auth": "required", "secret_key": KEY}


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def login(app, client: httpx.AsyncClient, *, is_admin: bool) -> dict[str, str]:
    """Create an account and return the headers of its access token."""
    email = f"u-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, is_admin=is_admin)
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


VAULT_DETAIL = "cannot reach vault at 10.1.2.3:8200 as svc-gathering"


class _Unwell(Component):
    """A component whose health detail is internal (as the database's would be)."""

    name = "vault"

    async def health(self) -> Health:
        return Health(False, VAULT_DETAIL)


# --- readiness --------------------------------------------------------------------------------


async def test_anonymous_readiness_names_components_but_gives_no_database_details():
    from gathering.api.app import create_app
    from gathering.config import load_settings

    settings = load_settings(
        database_url="postgresql://leaky_user@127.0.0.1:1/leaky_db", db_connect_timeout=1, **MULTI
    )
    async with client_for(create_app(settings=settings)) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] == {"ok": False}
    assert "database" in body["reason"]
    for secret in ("leaky_user", "leaky_db", "127.0.0.1", ":1"):
        assert secret not in response.text, secret


async def test_admins_get_readiness_details_and_other_callers_do_not(app_for):
    app = app_for(**MULTI)
    app.state.gathering.lifecycle.add(_Unwell())
    async with client_for(app) as client:
        admin = await login(app, client, is_admin=True)
        user = await login(app, client, is_admin=False)
        anonymous = await client.get("/health/ready")
        as_user = await client.get("/health/ready", headers=user)
        as_admin = await client.get("/health/ready", headers=admin)
        forged = await client.get("/health/ready", headers={"Authorization": "Bearer forged"})
    for response in (anonymous, as_user, forged):
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["checks"]["vault"] == {"ok": False}
        assert response.json()["checks"]["database"] == {"ok": True}
        assert response.json()["reason"] == "not ready: vault"
        assert "10.1.2.3" not in response.text and "svc-gathering" not in response.text
    assert as_admin.status_code == 503 and as_admin.headers["retry-after"]
    detailed = as_admin.json()
    assert detailed["checks"]["vault"]["detail"] == VAULT_DETAIL
    assert "migrations current" in detailed["checks"]["database"]["detail"]
    assert detailed["reason"] == f"vault: {VAULT_DETAIL}"


async def test_single_user_callers_are_the_admin_and_see_details(app_for):
    app = app_for()
    app.state.gathering.lifecycle.add(_Unwell())
    async with client_for(app) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["vault"]["detail"] == VAULT_DETAIL
    assert "migrations current" in response.json()["checks"]["database"]["detail"]


# --- API documentation and metrics in multi-user mode -----------------------------------------

DOC_PATHS = ("/openapi.json", "/docs", "/redoc")


async def test_docs_need_credentials_in_multi_user_mode_by_default(app_for):
    app = app_for(**MULTI)
    async with client_for(app) as client:
        anonymous = [await client.get(path) for path in DOC_PATHS]
        user = await login(app, client, is_admin=False)
        signed_in = [await client.get(path, headers=user) for path in DOC_PATHS]
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in anonymous)
    assert [r.status_code for r in signed_in] == [200, 200, 200]
    assert "/health/ready" in signed_in[0].json()["paths"]
    assert "swagger-ui" in signed_in[1].text and "/openapi.json" in signed_in[1].text
    assert "redoc" in signed_in[2].text
    assert "cdn.jsdelivr.net" in signed_in[1].headers["content-security-policy"]


async def test_docs_can_be_made_public(app_for):
    app = app_for(docs_access="public", **MULTI)
    async with client_for(app) as client:
        responses = [await client.get(path) for path in DOC_PATHS]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "/agents" in responses[0].json()["paths"]


async def test_docs_and_metrics_stay_open_to_the_local_owner_in_single_user_mode(app_for):
    app = app_for()
    async with client_for(app) as client:
        responses = [await client.get(path) for path in (*DOC_PATHS, "/metrics")]
    assert [r.status_code for r in responses] == [200, 200, 200, 200]


async def test_metrics_are_for_admins_and_the_scrape_token(app_for):
    app = app_for(metrics_token=SCRAPE_TOKEN, **MULTI)
    async with client_for(app) as client:
        admin = await login(app, client, is_admin=True)
        user = await login(app, client, is_admin=False)
        anonymous = await client.get("/metrics")
        as_user = await client.get("/metrics", headers=user)
        as_admin = await client.get("/metrics", headers=admin)
        scraper = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        wrong = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}x"})
    assert anonymous.status_code == 401
    assert as_user.status_code == 403
    assert wrong.status_code == 401
    for response in (as_admin, scraper):
        assert response.status_code == 200
        assert "gathering_http_requests_total" in response.text


async def test_metrics_can_be_made_public(app_for):
    app = app_for(metrics_access="public", **MULTI)
    async with client_for(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "gathering_http_requests_total" in response.text


def test_a_short_scrape_token_is_refused():
    from gathering.config import load_settings
    from gathering.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as refused:
        load_settings(metrics_token="short-token")
    assert "GATHERING_METRICS_TOKEN" in refused.value.message
    assert "short-token" not in refused.value.message


# --- model-provider errors --------------------------------------------------------------------


@pytest.fixture
def unreachable_ollama(monkeypatch):
    """Ollama configured at an internal address where nothing listens."""
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:1")
    get_settings.cache_clear()
    yield "127.0.0.1:1"
    get_settings.cache_clear()


@pytest.fixture
def app_logs(caplog, uncached_logs):
    """The structlog events the app logs while the test runs (through the stdlib pipeline)."""
    configure_logging(get_settings().model_copy(update={"log_format": "json"}))
    uncached_logs(gathering.api.errors)

    def read() -> list[dict]:
        return [record.msg for record in caplog.records if isinstance(record.msg, dict)]

    yield read
    logging.getLogger().handlers.clear()


async def _agent(client: httpx.AsyncClient, provider: str, model: str) -> int:
    response = await client.post(
        "/agents", json={"name": f"a{secrets.token_hex(3)}", "provider": provider, "model": model}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def test_provider_errors_reach_clients_without_internal_endpoints(
    app_for, unreachable_ollama, app_logs
):
    app = app_for()
    async with client_for(app) as client:
        agent_id = await _agent(client, "ollama", "llama3.2")
        reply = await client.post(
            f"/agents/{agent_id}/chat",
            json={"message": "hello"},
            headers={"X-Request-ID": "req-llm-leak"},
        )
        async with client.stream(
            "POST", f"/agents/{agent_id}/chat/stream", json={"message": "again"}
        ) as streamed:
            frames = "".join([chunk async for chunk in streamed.aiter_text()])
        history = await client.get(f"/agents/{agent_id}/history")  # the stored failed turns
    assert history.status_code == 200
    failures = [m["content"] for m in history.json() if m["role"] == "error"]
    assert len(failures) == 2 and all("could not be reached" in text for text in failures)
    assert unreachable_ollama not in history.text and "http://" not in history.text
    assert reply.status_code == 503
    body = reply.json()
    assert body["code"] == "provider_unavailable"
    assert "request id req-llm-leak" in body["detail"]
    assert "OLLAMA_HOST" in body["hint"]  # what to do, without the address
    assert frames.startswith("event: error")
    error_frame = json.loads(frames.split("data: ", 1)[1].split("\n", 1)[0])
    assert error_frame["code"] == "provider_unavailable"
    for text in (reply.text, frames):
        assert unreachable_ollama not in text and "http://" not in text
    logged = [e for e in app_logs() if e.get("event") == "model provider error"]
    assert any(
        unreachable_ollama in e["message"] and e["request_id"] == "req-llm-leak" for e in logged
    )


async def test_provider_errors_do_not_quote_the_upstream_body(app_for, llm_stub_env):
    app = app_for()
    llm_stub_env.context_limit_chars = 5
    try:
        async with client_for(app) as client:
            agent_id = await _agent(client, "openai", "gpt-4o")
            reply = await client.post(
                f"/agents/{agent_id}/chat", json={"message": "a message far over five chars"}
            )
    finally:
        llm_stub_env.reset()
    assert reply.status_code == 422
    assert reply.json()["code"] == "context_too_long"
    assert "maximum context length" not in reply.text
    assert "context window" in reply.json()["detail"]
    assert llm_stub_env.url not in reply.text
