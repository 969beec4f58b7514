"""The two modes and the defenses around them: loopback only, the Host allow-list, the Origin
check on requests and WebSocket upgrades, no permissive CORS, security headers, and the gate
every route sits behind."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import Depends, WebSocket
from live_server import free_port
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gathering.api.app import create_app
from gathering.api.security import Principal, current_principal, public_route
from gathering.api.security.hosts import allowed_hosts, host_name
from gathering.config import ensure_bind_allowed, is_loopback, load_settings
from gathering.errors import ConfigurationError, StartupError

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
PUBLIC_OPERATIONS = {
    ("get", "/health"),
    ("get", "/health/ready"),
    ("post", "/auth/login"),
    ("post", "/auth/refresh"),
    # its credential is the pipeline's webhook secret, in a header (docs/pipelines.md)
    ("post", "/pipelines/{pipeline_id}/webhook"),
}


def build(database_url: str, **overrides):
    application = create_app(settings=load_settings(database_url=database_url, **overrides))

    @application.websocket("/ws/circles/{name}")
    async def echo(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        message = await websocket.receive_json()
        await websocket.send_json({"type": "pong" if message.get("type") == "ping" else "echo"})
        await websocket.close()

    @application.websocket("/ws/whoami")
    async def whoami(websocket: WebSocket, who: Principal = Depends(current_principal)) -> None:
        await websocket.accept()
        await websocket.send_json({"user": who.user_id, "method": who.method})
        await websocket.close()

    @application.get("/open", dependencies=[Depends(public_route)])
    async def open_route() -> dict[str, bool]:
        return {"open": True}

    return application


@pytest.fixture
async def single(migrated_database_url):
    application = build(migrated_database_url)
    yield application
    await application.state.gathering.close()


@pytest.fixture
def single_sync(migrated_database_url):
    """For TestClient tests: its pools live in TestClient's loops; the database is dropped."""
    return build(migrated_database_url)


@pytest.fixture
def multi_sync(migrated_database_url):
    return build(migrated_database_url, auth="required", secret_key=KEY)


@pytest.fixture
async def multi(migrated_database_url):
    application = build(migrated_database_url, auth="required", secret_key=KEY)
    yield application
    await application.state.gathering.close()


def client_for(application, base_url: str = "http://test", **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url=base_url, **kwargs
    )


# --- the seed's contracts ---------------------------------------------------------------------


async def test_seed_style_client_needs_no_auth_header():
    from gathering.api.app import app

    async with client_for(app) as ac:
        response = await ac.get("/auth/me")
    assert response.status_code == 200
    assert response.json()["auth_method"] == "local"


def test_seed_style_websocket_works_in_single_user_mode(single_sync):
    app = single_sync
    client = TestClient(app)
    with client.websocket_connect("/ws/circles/test") as ws:
        ws.send_json({"type": "ping"})
        response = ws.receive_json()
        assert response["type"] == "pong"


# --- Host allow-list: DNS rebinding ----------------------------------------------------------


@pytest.mark.parametrize("host", ["attacker.example", "127.0.0.1.nip.io", "localhost.evil", ""])
async def test_foreign_host_headers_are_refused(single, host):
    async with client_for(single) as ac:
        response = await ac.get("/health", headers={"Host": host})
    assert response.status_code == 400
    assert response.json()["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "TEST", "test:80"])
async def test_loopback_and_configured_hosts_are_accepted(single, host):
    async with client_for(single) as ac:
        assert (await ac.get("/health", headers={"Host": host})).status_code == 200


async def test_the_refusal_names_the_host_and_how_to_allow_it(single, migrated_database_url):
    async with client_for(single) as ac:
        body = (await ac.get("/health", headers={"Host": "evil.example\x1b[2J"})).json()
    assert (
        "'evil.example\\x1b[2J'" in body["detail"] and "GATHERING_AUTH=required" in body["detail"]
    )
    multi = build(migrated_database_url, auth="required", secret_key=KEY)
    async with client_for(multi) as ac:
        body = (await ac.get("/health", headers={"Host": "api.example.com"})).json()
    assert "'api.example.com'" in body["detail"] and "GATHERING_ALLOWED_HOSTS" in body["detail"]


async def test_a_star_turns_the_host_check_off_in_multi_user_mode(migrated_database_url):
    application = build(migrated_database_url, auth="required", secret_key=KEY, allowed_hosts="*")
    async with client_for(application) as ac:
        response = await ac.get("/health", headers={"Host": "anything.example"})
    assert response.status_code == 200


@pytest.mark.parametrize("hosts", ["*", "api.example.com", "localhost,gathering.lan"])
def test_single_user_mode_refuses_a_star_or_foreign_names_at_start_up(hosts):
    # A page at evil.example that rebinds to 127.0.0.1 would drive the API as the owner.
    with pytest.raises(ConfigurationError, match="DNS rebinding") as refused:
        load_settings(allowed_hosts=hosts)
    assert "GATHERING_AUTH=required" in refused.value.message
    assert load_settings(auth="required", secret_key=KEY, allowed_hosts=hosts).allowed_hosts
    assert load_settings(allowed_hosts="localhost,127.0.0.1,[::1],app.localhost").allowed_hosts


async def test_an_in_process_clients_name_is_accepted_but_not_over_a_socket(migrated_database_url):
    # TestClient and ASGITransport name the server "testserver" / "test"; no browser can do that.
    # Over a real socket, the same Host is an ordinary foreign name and is refused.
    import asyncio

    import uvicorn

    application = build(migrated_database_url)
    async with client_for(application) as ac:
        assert (await ac.get("/health", headers={"Host": "test"})).status_code == 200
        assert (await ac.get("/health", headers={"Host": "testserver"})).status_code == 400
    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health")).status_code == 200
            for host in ("test", "testserver", "127.0.0.1.nip.io"):
                refused = await client.get("/health", headers={"Host": host})
                assert refused.status_code == 400, host
    finally:
        server.should_exit = True
        await serving


async def test_a_unix_sockets_name_is_not_taken_for_an_in_process_call(
    migrated_database_url, tmp_path, monkeypatch
):
    # Over a unix socket the scope's server is (path, None): a relative path looks like a name.
    import asyncio

    import uvicorn

    monkeypatch.chdir(tmp_path)
    application = build(migrated_database_url)
    server = uvicorn.Server(uvicorn.Config(application, uds="gathering.sock", log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "gathering.sock"))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            assert (await client.get("/health")).status_code == 200
            refused = await client.get("/health", headers={"Host": "gathering.sock"})
            assert refused.status_code == 400
    finally:
        server.should_exit = True
        await serving


def test_production_the_default_refuses_unsafe_set_ups():
    assert load_settings().env == "production"
    with pytest.raises(ConfigurationError, match="single-user mode") as refused:
        load_settings(host="0.0.0.0")
    assert "bound to 0.0.0.0" in refused.value.message
    with pytest.raises(ConfigurationError, match="shorter than 64") as refused:
        load_settings(auth="required", secret_key="k" * 40)
    assert "k" * 40 not in refused.value.message
    with pytest.raises(ConfigurationError, match="GATHERING_DEBUG_ENDPOINTS=true"):
        load_settings(debug_endpoints=True)
    development = load_settings(env="development", host="0.0.0.0", debug_endpoints=True)
    assert development.debug_endpoints
    assert load_settings(auth="required", secret_key=KEY, host="0.0.0.0").auth_required


def test_allowed_hosts_include_loopback_and_the_bind_host():
    hosts = allowed_hosts(
        load_settings(host="::1", allowed_hosts="api.example.com", auth="required", secret_key=KEY)
    )
    assert hosts is not None
    assert {"localhost", "127.0.0.1", "[::1]", "api.example.com"} <= hosts
    assert host_name("[::1]:8000") == "[::1]" and host_name("Example.COM:80") == "example.com"
    assert host_name("[::1") == "[::1"


# --- Origin check: cross-site requests ---------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost:9999", "file://"]
)
async def test_foreign_origins_are_refused(single, origin):
    async with client_for(single) as ac:
        get = await ac.get("/auth/me", headers={"Origin": origin})
        post = await ac.post("/auth/logout", headers={"Origin": origin})
    assert get.status_code == post.status_code == 403
    assert get.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in get.headers


async def test_same_origin_requests_pass(single):
    async with client_for(single, base_url="http://localhost:8000") as ac:
        response = await ac.get("/auth/me", headers={"Origin": "http://localhost:8000"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_cross_site_fetch_metadata_is_refused_but_a_navigation_is_not(single):
    async with client_for(single) as ac:
        fetch = await ac.get(
            "/auth/me", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
        )
        navigate = await ac.get(
            "/health", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
        )
    assert fetch.status_code == 403
    assert navigate.status_code == 200


async def test_cors_allows_exactly_the_configured_origins(migrated_database_url):
    application = build(migrated_database_url, cors_origins="https://app.example.com")
    async with client_for(application) as ac:
        preflight = await ac.options(
            "/auth/me",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        allowed = await ac.get("/auth/me", headers={"Origin": "https://app.example.com"})
        refused = await ac.get("/auth/me", headers={"Origin": "https://other.example.com"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-ratelimit-remaining" in allowed.headers["access-control-expose-headers"].lower()
    assert refused.status_code == 403


def test_cors_origins_must_be_listed_explicitly():
    from gathering.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="GATHERING_CORS_ORIGINS"):
        load_settings(cors_origins="*")
    with pytest.raises(ConfigurationError, match="not an origin"):
        load_settings(cors_origins="https://app.example.com/path")


# --- WebSocket upgrades ------------------------------------------------------------------------


def test_websocket_from_a_foreign_origin_is_refused(single_sync):
    with TestClient(single_sync) as client:
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect(
                "/ws/circles/test", headers={"Origin": "http://evil.example"}
            ):
                pass
    assert info.value.code == 1008


def test_websocket_with_a_foreign_host_is_refused(single_sync):
    with TestClient(single_sync) as client:
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/ws/circles/test", headers={"Host": "attacker.example"}):
                pass
    assert refused.value.code == 1008


def test_websocket_from_the_same_origin_is_accepted(single_sync):
    with TestClient(single_sync) as client:
        headers = {"Origin": "http://testserver"}
        with client.websocket_connect("/ws/circles/test", headers=headers) as ws:
            ws.send_json({"type": "ping"})
            assert ws.receive_json()["type"] == "pong"


def test_websockets_need_a_token_in_multi_user_mode(multi_sync):
    with TestClient(multi_sync) as client:
        assert client.portal is not None
        store = client.portal.call(multi_sync.state.security.services).users
        client.portal.call(store.create, "ws@example.com", PASSWORD)
        token = client.post(
            "/auth/login", json={"email": "ws@example.com", "password": PASSWORD}
        ).json()["access_token"]
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect("/ws/whoami"):
                pass
        assert info.value.code == 1008
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/ws/whoami?access_token=forged"):
                pass
        with client.websocket_connect(f"/ws/whoami?access_token={token}") as ws:
            assert ws.receive_json()["method"] == "token"
        bearer = {"Authorization": f"Bearer {token}"}
        with client.websocket_connect("/ws/whoami", headers=bearer) as ws:
            assert ws.receive_json()["method"] == "token"


# --- loopback only in single-user mode -----------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2", "::ffff:127.0.0.1"])
def test_single_user_mode_binds_loopback(host):
    assert is_loopback(host)
    ensure_bind_allowed(load_settings(), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"])
def test_single_user_mode_refuses_other_addresses(host):
    assert not is_loopback(host)
    with pytest.raises(StartupError, match="GATHERING_AUTH=required"):
        ensure_bind_allowed(load_settings(), host)
    ensure_bind_allowed(load_settings(auth="required", secret_key=KEY), host)


async def test_single_user_mode_refuses_requests_arriving_on_another_address(single):
    transport = httpx.ASGITransport(app=single)
    async with httpx.AsyncClient(transport=transport, base_url="http://192.168.1.5") as ac:
        response = await ac.get("/health", headers={"Host": "localhost"})
    assert response.status_code == 403
    assert response.json()["code"] == "loopback_only"


async def test_multi_user_mode_answers_on_any_address(multi):
    transport = httpx.ASGITransport(app=multi)
    async with httpx.AsyncClient(transport=transport, base_url="http://192.168.1.5") as ac:
        response = await ac.get("/health", headers={"Host": "localhost"})
    assert response.status_code == 200


# --- NUL bytes and security headers ---------------------------------------------------------------


async def test_nul_bytes_in_the_url_are_refused(single):
    async with client_for(single) as ac:
        query = await ac.get("/audit?event=a%00b")
        path = await ac.get("/health%00")
    assert query.status_code == path.status_code == 400


async def test_security_headers_are_on_every_response(single):
    async with client_for(single) as ac:
        ok = await ac.get("/health")
        missing = await ac.get("/nowhere")
        refused = await ac.get("/health", headers={"Host": "evil.example"})
        docs = await ac.get("/docs")
        auth = await ac.get("/auth/me")
    for response in (ok, missing, refused, auth):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert auth.headers["cache-control"] == "no-store"


async def test_hsts_is_sent_over_https(single):
    async with client_for(single, base_url="https://localhost") as ac:
        response = await ac.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=")


# --- the gate: every route needs credentials unless public ----------------------------------------


def _dummy(schema: dict) -> object:
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(
        schema.get("type", "string"), "x"
    )


@pytest.mark.parametrize("metrics_access", ["admin", "public"])
async def test_every_operation_needs_credentials_in_multi_user_mode(
    migrated_database_url, metrics_access
):
    """And the document says so: an operation is `security: []` exactly when it answers a
    caller without credentials (/metrics only when opened to anyone)."""
    application = build(
        migrated_database_url, auth="required", secret_key=KEY, metrics_access=metrics_access
    )
    spec = application.openapi()  # /openapi.json itself needs credentials (below)
    assert {"bearerAuth", "apiKeyAuth"} <= spec["components"]["securitySchemes"].keys()
    public = PUBLIC_OPERATIONS | {("get", "/open")}
    if metrics_access == "public":
        public |= {("get", "/metrics")}
    documented_public = {
        (method, path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    assert documented_public == public
    async with client_for(application) as ac:
        checked = 0
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                if (method, path) in public:
                    continue
                assert "401" in operation["responses"], (method, path)
                url = path
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path":
                        url = url.replace(
                            f"{{{parameter['name']}}}", str(_dummy(parameter.get("schema", {})))
                        )
                response = await ac.request(method.upper(), url, json={})
                assert response.status_code == 401, (method, path, response.text)
                checked += 1
        assert checked >= 5
        for path in ("/openapi.json", "/docs", "/redoc"):  # served outside the schema
            assert (await ac.get(path)).status_code == 401, path
        for method, path in public:
            response = await ac.request(method.upper(), path, json={})
            assert response.status_code != 401, (method, path)
    await application.state.gathering.close()


async def test_the_root_says_where_to_go_to_anyone(single, multi):
    for application in (single, multi):
        async with client_for(application) as ac:
            page = await ac.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # The dashboard's page (its build is made before the tests), public, with no inline
        # script: each one is a file of its own under /assets (the CSP allows no other).
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert scripts and all('src="/assets/' in tag for tag in scripts), scripts
