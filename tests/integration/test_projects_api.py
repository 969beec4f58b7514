"""Projects over HTTP: made (an empty directory; a registered one, by admins only, under an
allowed root and away from the data directory), listed, read, changed and deleted (with the
directory it made; a registered one is kept); its stack detected and its context text built;
members and their permissions (a stranger gets 404, a reader 403 on changes, a viewer never
writes); agents and circles linked (the owner's only); an agent linked to a project works in
its directory and gets its context in the prompt; the project's WebSocket subject."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from asgi_ws import ASGIWebSocket
from fastapi import FastAPI
from task_api import (
    api_fixture,  # noqa: F401 - the fixture "api"
    api_key,
    call,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    stub_fixture,  # noqa: F401 - the fixture "stub"
    tools_fixture,  # noqa: F401 - the fixture "tools"
)

from gathering.testing import LLMStubServer

Json = dict[str, Any]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def _project(client: httpx.AsyncClient, name: str = "app", **more: Any) -> Json:
    headers = more.pop("h", None)
    made = await client.post("/projects", json={"name": name, **more}, headers=headers)
    assert made.status_code == 201, made.text
    body: Json = made.json()
    return body


async def test_a_project_is_made_read_changed_and_deleted(api: httpx.AsyncClient) -> None:
    made = await _project(api, description="The app")
    directory = Path(made["directory"])
    assert (
        await asyncio.to_thread(directory.is_dir)
        and made["origin"] == "created"
        and made["source"] is None
    )
    assert made["permissions"] == ["read", "write", "terminal"]
    assert made["agents"] == [] and made["circles"] == []
    assert (await api.get(f"/projects/{made['id']}")).json()["description"] == "The app"
    assert [p["name"] for p in (await api.get("/projects")).json()] == ["app"]

    again = await api.post("/projects", json={"name": "app"})
    assert again.status_code == 409, again.text

    changed = await api.patch(
        f"/projects/{made['id']}",
        json={"settings": {"commands": {"test": "make check"}, "conventions": "tabs, never"}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["commands"]["test"] == "make check"
    context = (await api.get(f"/projects/{made['id']}/context")).json()["context"]
    assert "make check" in context and "tabs, never" in context

    document = await api.post(
        "/knowledge",
        json={
            "title": "Plan",
            "content": "the plan",
            "scope": "project",
            "scope_id": str(made["id"]),
        },
    )
    assert document.status_code == 201, document.text

    gone = await api.delete(f"/projects/{made['id']}")
    assert gone.status_code == 204
    assert not await asyncio.to_thread(directory.exists)
    # The project's documents stay their owners'.
    assert (await api.get(f"/knowledge/{document.json()['id']}")).status_code == 200
    assert (await api.get(f"/projects/{made['id']}")).status_code == 404


async def test_bad_input_is_refused(api: httpx.AsyncClient) -> None:
    for body in (
        {"name": "Has Spaces"},
        {"name": "../up"},
        {"name": "ok", "unknown": 1},
        {"name": "ok", "clone_from": "/a", "directory": "/b"},
        {"name": "ok", "settings": {"commands": {"test": "a\nb"}}},
        {"name": "ok", "settings": {"allow_network": "yes"}},
    ):
        answer = await api.post("/projects", json=body)
        assert answer.status_code == 422, (body, answer.text)


async def test_the_stack_is_detected_and_the_context_built(api: httpx.AsyncClient) -> None:
    made = await _project(api)
    root = Path(made["directory"])
    files = {
        "pyproject.toml": '[project]\nname="x"\n[tool.pytest.ini_options]\n',
        "src/main.py": "print('hi')\n",
        "README.md": "# X\nA tool that says hi.\n",
        "node_modules/skipped.js": "",
    }
    await asyncio.to_thread(_write, root, files)
    refreshed = await api.post(f"/projects/{made['id']}/stack")
    assert refreshed.status_code == 200, refreshed.text
    stack = refreshed.json()["stack"]
    assert stack["languages"][0] == {"name": "python", "files": 1}
    assert stack["package_managers"] == ["pip"] and stack["test_command"] == "pytest"
    context = (await api.get(f"/projects/{made['id']}/context")).json()["context"]
    assert "A tool that says hi." in context and "src/main.py" in context
    assert "skipped.js" not in context


async def test_registering_a_directory_is_for_admins_under_allowed_roots(
    app_for: Any, tmp_path: Path
) -> None:
    allowed = tmp_path / "code"
    outside = tmp_path / "elsewhere"
    files = {"code/existing/keep.txt": "mine", "code/existing/sub/x": "", "elsewhere/x": ""}
    await asyncio.to_thread(_write, tmp_path, files)
    await asyncio.to_thread((allowed / "link-out").symlink_to, outside)
    app = app_for(project_register_roots=[str(allowed)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        for directory, status in (
            (str(allowed / "existing"), 201),
            (str(allowed / "existing"), 409),  # a directory belongs to one project
            (str(allowed / "existing" / "sub"), 409),  # and what is inside it
            (str(allowed), 403),  # the root itself
            (str(allowed / "link-out"), 403),  # a symlink that leads out
            (str(outside), 403),
            ("relative/path", 422),
            (str(allowed / "missing"), 404),
        ):
            name = f"p{status}-{len(directory)}"
            answer = await client.post("/projects", json={"name": name, "directory": directory})
            assert answer.status_code == status, (directory, answer.text)
        project = (await client.get("/projects")).json()[0]
        assert project["origin"] == "registered"
        assert (await client.delete(f"/projects/{project['id']}")).status_code == 204
    assert await asyncio.to_thread(_read, allowed / "existing" / "keep.txt") == "mine"


async def test_registering_needs_an_allow_list_and_stays_off_the_data_dir(
    app_for: Any, tmp_path: Path
) -> None:
    from gathering.config import get_settings

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_for()), base_url="http://testserver"
    ) as client:
        answer = await client.post("/projects", json={"name": "x", "directory": str(tmp_path)})
        assert answer.status_code == 403 and "not enabled" in answer.text
    data = get_settings().data_dir
    app = app_for(project_register_roots=[str(data.parent)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        answer = await client.post("/projects", json={"name": "x", "directory": str(data)})
        assert answer.status_code == 403 and "data directory" in answer.text


async def test_members_and_permissions(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    owner, other, stranger = [await login(app, client) for _ in range(3)]
    viewer = await login(app, client, "viewer")
    made = await _project(client, h=owner)
    pid = made["id"]
    me = (await client.get("/auth/me", headers=other)).json()["id"]
    viewer_id = (await client.get("/auth/me", headers=viewer)).json()["id"]

    # A stranger sees nothing: 404, like a project that does not exist.
    for path in (f"/projects/{pid}", f"/projects/{pid}/context", f"/projects/{pid}/activity"):
        assert (await client.get(path, headers=stranger)).status_code == 404
    assert (await client.get("/projects", headers=stranger)).json() == []
    assert (await client.post(f"/projects/{pid}/stack", headers=stranger)).status_code == 404

    added = await client.put(f"/projects/{pid}/members/{me}", json={}, headers=owner)
    assert added.status_code == 200, added.text
    assert added.json()["permissions"] == ["read"]
    seen = await client.get(f"/projects/{pid}", headers=other)
    assert seen.status_code == 200 and seen.json()["permissions"] == ["read"]
    assert [p["id"] for p in (await client.get("/projects", headers=other)).json()] == [pid]
    # Read only: no stack refresh (write), no changes (owner's), no members.
    assert (await client.post(f"/projects/{pid}/stack", headers=other)).status_code == 403
    assert (await client.patch(f"/projects/{pid}", json={}, headers=other)).status_code == 403
    refused = await client.put(f"/projects/{pid}/members/{me}", json={}, headers=other)
    assert refused.status_code == 403

    writes = {"permissions": ["write", "terminal"]}
    upgraded = await client.put(f"/projects/{pid}/members/{me}", json=writes, headers=owner)
    assert upgraded.json()["permissions"] == ["read", "write", "terminal"]
    assert (await client.post(f"/projects/{pid}/stack", headers=other)).status_code == 200
    # A viewer with every permission still only reads.
    await client.put(f"/projects/{pid}/members/{viewer_id}", json=writes, headers=owner)
    assert (await client.get(f"/projects/{pid}", headers=viewer)).status_code == 200
    assert (await client.post(f"/projects/{pid}/stack", headers=viewer)).status_code == 403

    owner_id = made["owner_id"]
    itself = await client.put(f"/projects/{pid}/members/{owner_id}", json={}, headers=owner)
    assert itself.status_code == 409
    nobody = await client.put(f"/projects/{pid}/members/999999", json={}, headers=owner)
    assert nobody.status_code == 404
    listed = (await client.get(f"/projects/{pid}/members", headers=other)).json()
    assert {m["user_id"] for m in listed} == {me, viewer_id}

    removed = await client.delete(f"/projects/{pid}/members/{me}", headers=owner)
    assert removed.status_code == 204
    assert (await client.get(f"/projects/{pid}", headers=other)).status_code == 404
    again = await client.delete(f"/projects/{pid}/members/{me}", headers=owner)
    assert again.status_code == 404

    # Names are per owner: another user may use the same one.
    assert (await client.post("/projects", json={"name": "app"}, headers=other)).status_code == 201


async def test_api_keys_need_the_projects_scopes(multi: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = multi
    owner = await login(app, client)
    reader = await api_key(client, owner, "projects:read")
    writer = await api_key(client, owner, "projects:write")
    other = await api_key(client, owner, "agents:read")
    made = await _project(client, h=writer)
    assert (await client.get(f"/projects/{made['id']}", headers=reader)).status_code == 200
    assert (await client.get(f"/projects/{made['id']}", headers=other)).status_code == 403
    refused = await client.post("/projects", json={"name": "b"}, headers=reader)
    assert refused.status_code == 403


async def test_links_are_the_owners_agents_and_circles(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    owner, other = await login(app, client), await login(app, client)
    pid = (await _project(client, h=owner))["id"]
    mine = await make_agent(client, "Mine", headers=owner)
    theirs = await make_agent(client, "Theirs", headers=other)
    circle = await client.post("/circles", json={"name": "crew"}, headers=owner)
    assert circle.status_code == 201, circle.text
    circle_id = circle.json()["id"]

    linked = await client.put(f"/projects/{pid}/agents/{mine}", headers=owner)
    assert linked.status_code == 200, linked.text
    assert [a["name"] for a in linked.json()["agents"]] == ["Mine"]
    linked = await client.put(f"/projects/{pid}/circles/{circle_id}", headers=owner)
    assert [c["name"] for c in linked.json()["circles"]] == ["crew"]
    assert (await client.put(f"/projects/{pid}/agents/{theirs}", headers=owner)).status_code == 404
    assert (await client.put(f"/projects/{pid}/agents/999999", headers=owner)).status_code == 404
    assert (await client.put(f"/projects/{pid}/tools/{mine}", headers=owner)).status_code in (
        404,
        405,
        422,
    )

    # One project per agent: linking it elsewhere moves it.
    second = (await _project(client, "second", h=owner))["id"]
    await client.put(f"/projects/{second}/agents/{mine}", headers=owner)
    assert (await client.get(f"/projects/{pid}", headers=owner)).json()["agents"] == []

    assert (
        await client.delete(f"/projects/{second}/agents/{mine}", headers=owner)
    ).status_code == 204
    assert (
        await client.delete(f"/projects/{second}/agents/{mine}", headers=owner)
    ).status_code == 404
    unlinked = await client.delete(f"/projects/{pid}/circles/{circle_id}", headers=owner)
    assert unlinked.status_code == 204


async def test_a_linked_agent_works_in_the_project_and_is_told_about_it(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    made = await _project(api, settings={"conventions": "Write tests first."})
    root = Path(made["directory"])
    agent_id = await make_agent(api, "Builder", tools=("write_file",))
    linked = await api.put(f"/projects/{made['id']}/agents/{agent_id}")
    assert linked.status_code == 200, linked.text

    stub.add_reply(call("write_file", path="notes/plan.md", content="# Plan\n"), "Written.")
    answer = await api.post(f"/agents/{agent_id}/chat", json={"message": "write the plan"})
    assert answer.status_code == 200, answer.text
    assert await asyncio.to_thread(_read, root / "notes" / "plan.md") == "# Plan\n"
    system = json.dumps(stub.requests[0].json)
    assert "Write tests first." in system and "project 'app'" in system
    activity = (await api.get(f"/projects/{made['id']}/activity")).json()
    assert [(a["agent_id"], a["action"], a["path"]) for a in activity] == [
        (agent_id, "agent.tool", "notes/plan.md")
    ]
    assert activity[0]["detail"]["tool"] == "write_file"

    # Unlinked, it works in its own workspace again.
    await api.delete(f"/projects/{made['id']}/agents/{agent_id}")
    stub.add_reply(call("write_file", path="other.md", content="x"), "Done.")
    assert (
        await api.post(f"/agents/{agent_id}/chat", json={"message": "again"})
    ).status_code == 200
    assert await asyncio.to_thread(_read, root / "other.md") is None


async def test_the_project_subject_is_for_those_who_may_read_it(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    owner, stranger = await login(app, client), await login(app, client)
    pid = (await _project(client, h=owner))["id"]

    async def subscribe(headers: dict[str, str]) -> Json:
        token = headers["Authorization"].removeprefix("Bearer ")
        async with ASGIWebSocket(app, "/ws", query=f"access_token={token}") as ws:
            await ws.send_json({"type": "subscribe", "subjects": [f"project:{pid}"]})
            answer: Json = await ws.receive_json(timeout=10)
            return answer

    assert (await subscribe(owner))["type"] == "subscribed"
    refused = await subscribe(stranger)
    assert refused["type"] == "error", refused


async def test_a_linked_circles_agents_work_in_the_project(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    from gathering.circles import get_circle, list_members
    from gathering.circles.work import circle_agent

    app, client = multi
    owner = await login(app, client)
    project = await _project(client, h=owner)
    agent_id = await make_agent(client, "Crew", headers=owner)
    circle = (await client.post("/circles", json={"name": "crew"}, headers=owner)).json()
    joined = await client.post(
        f"/circles/{circle['id']}/members", json={"agent": agent_id}, headers=owner
    )
    assert joined.status_code == 201, joined.text
    db = await app.state.gathering.database()
    record = await get_circle(db, circle["id"])
    member = (await list_members(db, circle["id"]))[0]
    assert (await circle_agent(db, None, record, member)).workspace == record.workspace

    await client.put(f"/projects/{project['id']}/circles/{circle['id']}", headers=owner)
    agent = await circle_agent(db, None, record, member)
    assert agent.workspace == Path(project["directory"])
    assert agent.tool_context().workspace == Path(project["directory"])
