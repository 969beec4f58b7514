"""Per-endpoint rate-limit tiers: keyed by user (or address), 429 with Retry-After and
X-RateLimit-* headers, memory storage in one process and Redis shared by several instances."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Depends

from gathering.api.app import create_app
from gathering.api.security import public_route, rate_limit
from gathering.auth.users import UserStore
from gathering.config import load_settings

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
TIER_LIMITS = {
    "rate_limit_strict": "3/minute",
    "rate_limit_standard": "5/minute",
    "rate_limit_relaxed": "7/minute",
    "rate_limit_bulk": "2/minute",
}


def _routes() -> APIRouter:
    router = APIRouter(prefix="/limited", dependencies=[Depends(public_route)])

    @router.get("/strict", dependencies=[rate_limit("strict")])
    async def strict() -> dict[str, str]:
        return {"tier": "strict"}

    @router.get("/strict-too", dependencies=[rate_limit("strict")])
    async def strict_too() -> dict[str, str]:
        return {"tier": "strict"}

    @router.get("/relaxed", dependencies=[rate_limit("relaxed")])
    async def relaxed() -> dict[str, str]:
        return {"tier": "relaxed"}

    @router.post("/bulk", dependencies=[rate_limit("bulk")])
    async def bulk() -> dict[str, str]:
        return {"tier": "bulk"}

    @router.get("/default")
    async def default() -> dict[str, str]:
        return {"tier": "standard"}

    return router


@pytest.fixture
async def make_app(migrated_database_url) -> AsyncIterator:
    apps = []

    def _make(**overrides):
        options = {
            "database_url": migrated_database_url,
            "auth": "required",
            "secret_key": KEY,
            "rate_limit_enabled": True,
            **TIER_LIMITS,
        }
        application = create_app(settings=load_settings(**{**options, **overrides}))
        application.include_router(_routes())
        apps.append(application)
        return application

    yield _make
    for application in apps:
        await application.state.security.close()
        await application.state.gathering.close()


def client_for(application, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(address, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def exhaust(
    ac: httpx.AsyncClient, path: str, method: str = "GET", **kwargs
) -> list[httpx.Response]:
    """Call until the first 429 (at most 20 calls)."""
    responses = []
    for _ in range(20):
        response = await ac.request(method, path, **kwargs)
        responses.append(response)
        if response.status_code == 429:
            break
    return responses


async def test_over_the_limit_is_429_with_retry_after_headers_and_a_json_body(make_app):
    async with client_for(make_app()) as ac:
        responses = await exhaust(ac, "/limited/strict")
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    refused = responses[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) > 0
    body = refused.json()
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert body["status"] == 429 and body["code"] == "rate_limited"
    assert body["retry_after"] == int(refused.headers["retry-after"])


async def test_allowed_responses_count_down_in_the_headers(make_app):
    async with client_for(make_app()) as ac:
        remaining = [
            (await ac.get("/limited/strict")).headers["x-ratelimit-remaining"] for _ in range(3)
        ]
    assert remaining == ["2", "1", "0"]


@pytest.mark.parametrize(
    ("path", "method", "limit"),
    [
        ("/limited/strict", "GET", 3),
        ("/limited/default", "GET", 5),
        ("/limited/relaxed", "GET", 7),
        ("/limited/bulk", "POST", 2),
    ],
    ids=["strict", "standard-by-default", "relaxed", "bulk"],
)
async def test_each_tier_applies_its_own_limit(make_app, path, method, limit):
    async with client_for(make_app()) as ac:
        responses = await exhaust(ac, path, method)
    assert len(responses) == limit + 1
    assert responses[0].headers["x-ratelimit-limit"] == str(limit)
    assert responses[-1].status_code == 429


async def test_limits_are_per_endpoint(make_app):
    async with client_for(make_app()) as ac:
        await exhaust(ac, "/limited/strict")
        assert (await ac.get("/limited/strict-too")).status_code == 200


async def test_anonymous_callers_are_keyed_by_address(make_app):
    application = make_app()
    async with (
        client_for(application, "10.0.0.1") as one,
        client_for(application, "10.0.0.2") as two,
    ):
        await exhaust(one, "/limited/strict")
        assert (await one.get("/limited/strict")).status_code == 429
        assert (await two.get("/limited/strict")).status_code == 200


async def test_authenticated_callers_are_keyed_by_user_not_address(make_app):
    application = make_app(rate_limit_relaxed="2/minute")
    store = UserStore(await application.state.gathering.database())
    headers = []
    async with client_for(application) as ac:
        for _ in range(2):
            email = f"r-{secrets.token_hex(4)}@example.com"
            await store.create(email, PASSWORD)
            tokens = (
                await ac.post("/auth/login", json={"email": email, "password": PASSWORD})
            ).json()
            headers.append({"Authorization": f"Bearer {tokens['access_token']}"})
        first = await exhaust(ac, "/auth/me", headers=headers[0])
        assert first[-1].status_code == 429 and len(first) == 3
        assert (await ac.get("/auth/me", headers=headers[1])).status_code == 200
    async with client_for(application, "10.1.1.1") as elsewhere:
        assert (await elsewhere.get("/auth/me", headers=headers[0])).status_code == 429


async def test_a_tier_may_combine_limits_and_the_tightest_shows(make_app):
    async with client_for(make_app(rate_limit_strict="10/minute;2/hour")) as ac:
        responses = await exhaust(ac, "/limited/strict")
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-limit"] == "2"


async def test_failed_authentication_is_throttled_by_address(make_app):
    async with client_for(make_app()) as ac:
        responses = await exhaust(ac, "/auth/me", headers={"Authorization": "Bearer forged"})
    assert [r.status_code for r in responses[:-1]] == [401] * (len(responses) - 1)
    assert responses[-1].status_code == 429


async def test_login_is_in_the_strict_tier(make_app):
    async with client_for(make_app(login_attempts_per_ip="100/minute")) as ac:
        responses = await exhaust(
            ac, "/auth/login", "POST", json={"email": "x@example.com", "password": "p" * 12}
        )
    assert len(responses) == 4 and responses[-1].status_code == 429


async def test_disabled_rate_limits_add_no_headers_and_never_refuse(make_app):
    async with client_for(make_app(rate_limit_enabled=False)) as ac:
        responses = [await ac.post("/limited/bulk") for _ in range(5)]
    assert all(r.status_code == 200 for r in responses)
    assert "x-ratelimit-limit" not in responses[0].headers


def test_an_unknown_tier_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown rate-limit tier"):
        rate_limit("generous")  # type: ignore[arg-type]


def test_bad_tier_settings_are_refused_naming_the_variable():
    from gathering.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="GATHERING_RATE_LIMIT_BULK"):
        load_settings(rate_limit_bulk="lots")
    with pytest.raises(ConfigurationError, match="GATHERING_RATE_LIMIT_STORAGE"):
        load_settings(rate_limit_storage="memcached://localhost")


async def test_an_unreachable_storage_lets_requests_through(make_app):
    application = make_app(rate_limit_storage="redis://127.0.0.1:1/0")
    async with client_for(application) as ac:
        responses = [await ac.post("/limited/bulk") for _ in range(4)]
    assert all(r.status_code == 200 for r in responses)
    assert "x-ratelimit-limit" not in responses[-1].headers


# --- several instances sharing Redis -------------------------------------------------------------


async def _delete_keys(redis_url: str, pattern: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=100)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own on the session's Redis (see `redis_url`), emptied after."""
    prefix = f"gathering-test-{secrets.token_hex(6)}"
    yield prefix
    await _delete_keys(redis_url, f"{prefix}*")


async def test_two_instances_share_their_counts_through_redis(make_app, redis_url, redis_prefix):
    shared = {
        "rate_limit_storage": redis_url,
        "rate_limit_key_prefix": redis_prefix,
    }
    first, second = make_app(**shared), make_app(**shared)
    async with client_for(first) as a, client_for(second) as b:
        assert (await a.get("/limited/strict")).status_code == 200
        assert (await b.get("/limited/strict")).status_code == 200
        last = await a.get("/limited/strict")
        assert last.status_code == 200 and last.headers["x-ratelimit-remaining"] == "0"
        refused = await b.get("/limited/strict")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


async def test_failed_login_counts_are_shared_through_redis(make_app, redis_url, redis_prefix):
    shared = {
        "rate_limit_storage": redis_url,
        "rate_limit_key_prefix": redis_prefix,
        "login_attempts_per_account": "2/15 minutes",
        "rate_limit_strict": "100/minute",
    }
    first, second = make_app(**shared), make_app(**shared)
    body = {"email": "target@example.com", "password": "wrong password!!"}
    async with client_for(first) as a, client_for(second, "10.2.2.2") as b:
        assert (await a.post("/auth/login", json=body)).status_code == 401
        assert (await b.post("/auth/login", json=body)).status_code == 401
        assert (await a.post("/auth/login", json=body)).status_code == 429


async def test_separate_prefixes_do_not_share(make_app, redis_url, redis_prefix):
    one = make_app(rate_limit_storage=redis_url, rate_limit_key_prefix=redis_prefix)
    two = make_app(rate_limit_storage=redis_url, rate_limit_key_prefix=redis_prefix + "-other")
    async with client_for(one) as a, client_for(two) as b:
        await exhaust(a, "/limited/strict")
        assert (await b.get("/limited/strict")).status_code == 200
    await _delete_keys(redis_url, f"{redis_prefix}-other*")
