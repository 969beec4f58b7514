"""The personas library over HTTP: the built-in personas (real base prompts, read-only, listed
with the stored ones); a stored persona made, read, changed and deleted by its owner, changed by
an admin, refused to another member, a viewer and an API key without `personas:write`; bad
input refused with 422; and an agent made from a library persona gets a copy of it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from task_api import (
    api_key,
    login,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    stub_fixture,  # noqa: F401 - the fixture "stub"
)

from gathering.catalog.personas import BUILTIN_PERSONAS

Json = dict[str, Any]
Multi = tuple[FastAPI, httpx.AsyncClient]
BUILTINS = ["architect", "developer", "reviewer", "researcher", "writer"]
PIRATE = {
    "name": "pirate",
    "description": "Talks like a pirate",
    "persona": {"role": "pirate captain", "traits": ["bold"], "base_prompt": "Say arr."},
}


async def test_the_built_in_personas_are_listed_real_and_read_only(multi: Multi) -> None:
    app, client = multi
    member = await login(app, client)
    listed = await client.get("/personas", headers=member)
    assert listed.status_code == 200, listed.text
    builtins = [p for p in listed.json() if p["builtin"]]
    assert [p["name"] for p in builtins] == BUILTINS
    for persona in builtins:
        assert persona["id"] is None and persona["owner_id"] is None
        assert persona["persona"]["role"] and persona["description"]
        assert len(persona["persona"]["base_prompt"]) > 800, persona["name"]  # not a one-liner

    one = await client.get("/personas/reviewer", headers=member)
    assert one.status_code == 200 and one.json()["persona"]["role"] == "code reviewer"

    admin = await login(app, client, "admin")
    for method, body in (("PATCH", {"description": "mine now"}), ("DELETE", None)):
        refused = await client.request(method, "/personas/architect", json=body, headers=admin)
        assert refused.status_code == 409, refused.text
        assert "built in" in refused.json()["detail"] and "copy" in refused.json()["hint"]
    taken = await client.post("/personas", json={**PIRATE, "name": "writer"}, headers=admin)
    assert taken.status_code == 409, taken.text
    assert (await client.get("/personas/architect", headers=admin)).json()["description"] == (
        BUILTIN_PERSONAS["architect"].description
    )


async def test_a_stored_persona_belongs_to_its_owner_and_admins(multi: Multi) -> None:
    app, client = multi
    owner, other = await login(app, client), await login(app, client)
    admin, viewer = await login(app, client, "admin"), await login(app, client, "viewer")

    made = await client.post("/personas", json=PIRATE, headers=owner)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["builtin"] is False and isinstance(body["id"], int)
    assert body["persona"]["traits"] == ["bold"] and body["persona"]["language"] == "en"
    again = await client.post("/personas", json=PIRATE, headers=other)
    assert again.status_code == 409, again.text

    # Everyone reads the library; only the owner or an admin changes a stored persona.
    for headers in (other, viewer):
        names = [p["name"] for p in (await client.get("/personas", headers=headers)).json()]
        assert names == [*BUILTINS, "pirate"]
    for headers, status in ((other, 403), (viewer, 403)):
        changed = await client.patch("/personas/pirate", json={"description": "x"}, headers=headers)
        assert changed.status_code == status, changed.text
        gone = await client.delete("/personas/pirate", headers=headers)
        assert gone.status_code == status, gone.text
    assert (
        await client.post("/personas", json={**PIRATE, "name": "v"}, headers=viewer)
    ).status_code == 403

    by_admin = await client.patch(
        "/personas/pirate", json={"persona": {"role": "admiral"}}, headers=admin
    )
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["persona"] == {
        **body["persona"],
        "role": "admiral",
        "traits": [],
        "base_prompt": "",
    }
    described = await client.patch(
        "/personas/pirate", json={"description": "an admiral now"}, headers=owner
    )
    assert described.status_code == 200, described.text
    assert described.json()["id"] == body["id"]
    assert described.json()["persona"]["role"] == "admiral"  # what was left out stays
    assert described.json()["updated_at"] > body["updated_at"]
    renamed = await client.patch("/personas/pirate", json={"name": "buccaneer"}, headers=owner)
    assert renamed.status_code == 422, renamed.text  # a name stays: copy it to rename it

    assert (await client.delete("/personas/pirate", headers=owner)).status_code == 204
    assert (await client.get("/personas/pirate", headers=owner)).status_code == 404
    assert (await client.delete("/personas/pirate", headers=owner)).status_code == 404
    gone = await client.patch("/personas/pirate", json={"description": "x"}, headers=admin)
    assert gone.status_code == 404, gone.text


async def test_api_keys_need_the_personas_scopes(multi: Multi) -> None:
    app, client = multi
    member = await login(app, client)
    reader = await api_key(client, member, "personas:read")
    writer = await api_key(client, member, "personas:write")
    other = await api_key(client, member, "agents:write")
    assert (await client.get("/personas", headers=reader)).status_code == 200
    assert (await client.get("/personas", headers=other)).status_code == 403
    assert (await client.post("/personas", json=PIRATE, headers=reader)).status_code == 403
    assert (await client.post("/personas", json=PIRATE, headers=writer)).status_code == 201


async def test_bad_personas_are_refused_with_422(multi: Multi) -> None:
    app, client = multi
    member = await login(app, client)
    for bad in (
        {**PIRATE, "name": "Pirate Captain"},
        {**PIRATE, "name": "7seas"},
        {**PIRATE, "name": "p" * 64},
        {**PIRATE, "description": "d" * 2001},
        {**PIRATE, "persona": {"base_prompt": "x" * 20_001}},
        {**PIRATE, "persona": {"role": "nul\u0000"}},
        {**PIRATE, "persona": {"traits": ["t"] * 21}},
        {**PIRATE, "persona": {"mood": "grumpy"}},
        {**PIRATE, "owner_id": 1},
    ):
        refused = await client.post("/personas", json=bad, headers=member)
        assert refused.status_code == 422, (bad, refused.text)
    too_long = await client.get("/personas/" + "p" * 200, headers=member)
    assert too_long.status_code == 422, too_long.text
    assert (await client.get("/personas", headers=member)).json()[-1]["name"] == "writer"


async def test_an_agent_is_made_from_a_copy_of_a_library_persona(multi: Multi) -> None:
    app, client = multi
    member = await login(app, client)
    agent = {"provider": "ollama", "model": "llama3.2"}

    made = await client.post(
        "/agents", json={**agent, "name": "Archie", "persona_name": "architect"}, headers=member
    )
    assert made.status_code == 201, made.text
    assert made.json()["persona"] == BUILTIN_PERSONAS["architect"].persona.model_dump(mode="json")

    await client.post("/personas", json=PIRATE, headers=member)
    made = await client.post(
        "/agents", json={**agent, "name": "Jack", "persona_name": "pirate"}, headers=member
    )
    assert made.status_code == 201, made.text
    assert made.json()["persona"]["role"] == "pirate captain"
    await client.patch("/personas/pirate", json={"persona": {"role": "landlubber"}}, headers=member)
    await client.delete("/personas/pirate", headers=member)
    kept = await client.get(f"/agents/{made.json()['id']}", headers=member)
    assert kept.json()["persona"]["role"] == "pirate captain"  # a copy, not a link

    unknown = await client.post(
        "/agents", json={**agent, "name": "Nobody", "persona_name": "nobody"}, headers=member
    )
    assert unknown.status_code == 404, unknown.text
    both = await client.post(
        "/agents",
        json={**agent, "name": "Both", "persona_name": "writer", "persona": {"role": "x"}},
        headers=member,
    )
    assert both.status_code == 422 and "not both" in both.text
