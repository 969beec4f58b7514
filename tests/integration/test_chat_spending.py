"""Spending guards on the chat routes (issue 11, item 9): their own rate tier, lower than
`standard`, and a cap on the turns one user has running at once. The model is the wire stub;
a held answer keeps a turn running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from gathering.api.security.spending import TurnAdmission
from gathering.auth.principal import Principal
from gathering.config import load_settings
from gathering.errors import RateLimitedError


@pytest.fixture
async def client_for(app_for, llm_stub_env) -> AsyncIterator:
    clients: list[httpx.AsyncClient] = []

    def make(**settings) -> httpx.AsyncClient:
        app = app_for(**settings)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    llm_stub_env.reset()


async def new_agent(client: httpx.AsyncClient, name: str) -> int:
    response = await client.post(
        "/agents", json={"name": name, "provider": "ollama", "model": "llama3.2"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_the_chat_tier_is_lower_than_standard_by_default():
    settings = load_settings()
    assert settings.rate_limit_chat == "30/minute" and settings.rate_limit_standard == "120/minute"


async def test_chat_routes_count_against_their_own_tier(client_for):
    client = client_for(rate_limit_enabled=True, rate_limit_chat="2/minute")
    agent = await new_agent(client, "Tiered")
    for text in ("one", "two"):
        assert (
            await client.post(f"/agents/{agent}/chat", json={"message": text})
        ).status_code == 200
    refused = await client.post(f"/agents/{agent}/chat", json={"message": "three"})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert (await client.get(f"/agents/{agent}")).status_code == 200  # other tiers are untouched


async def test_a_user_may_run_only_so_many_turns_at_once(client_for, llm_stub_env):
    client = client_for(chat_max_concurrent_per_user=1)
    first, second = await new_agent(client, "First"), await new_agent(client, "Second")
    hold = llm_stub_env.hold("slow question")
    running = asyncio.create_task(
        client.post(f"/agents/{first}/chat", json={"message": "slow question"})
    )
    await asyncio.to_thread(hold.arrived.wait, 30)
    refused = await client.post(f"/agents/{second}/chat", json={"message": "meanwhile"})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert "GATHERING_CHAT_MAX_CONCURRENT_PER_USER" in refused.json()["hint"]
    assert refused.headers["Retry-After"] == "5"
    streamed = await client.post(f"/agents/{second}/chat/stream", json={"message": "meanwhile"})
    assert streamed.status_code == 429
    hold.release()
    assert (await asyncio.wait_for(running, 30)).status_code == 200
    assert (await client.post(f"/agents/{second}/chat", json={"message": "now"})).status_code == 200


async def test_a_streamed_turn_holds_its_slot_until_the_turn_ends(client_for, llm_stub_env):
    client = client_for(chat_max_concurrent_per_user=1)
    first, second = await new_agent(client, "Streamer"), await new_agent(client, "Other")
    hold = llm_stub_env.hold("streamed")

    async def stream() -> str:
        async with client.stream(
            "POST", f"/agents/{first}/chat/stream", json={"message": "streamed"}
        ) as response:
            return "".join([chunk async for chunk in response.aiter_text()])

    streaming = asyncio.create_task(stream())
    await asyncio.to_thread(hold.arrived.wait, 30)
    assert (await client.post(f"/agents/{second}/chat", json={"message": "x"})).status_code == 429
    hold.release()
    assert "event: done" in await asyncio.wait_for(streaming, 30)
    for _ in range(100):  # the slot is given back as the turn's task ends
        response = await client.post(f"/agents/{second}/chat", json={"message": "y"})
        if response.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 200


def test_the_cap_is_per_user_and_slots_come_back_once():
    admission = TurnAdmission(limit=2)
    ada = Principal(user_id=1, email="ada@example.com", is_admin=False, method="token")
    bob = Principal(user_id=2, email="bob@example.com", is_admin=False, method="token")
    first, second = admission.admit(ada), admission.admit(ada)
    with pytest.raises(RateLimitedError):
        admission.admit(ada)
    with admission.admit(bob):
        assert admission.running(bob.user_id) == 1
    assert admission.running(bob.user_id) == 0
    first.release()
    first.release()  # idempotent: it does not free a slot it no longer holds
    assert admission.running(ada.user_id) == 1
    second.release()
    assert admission.running(ada.user_id) == 0
