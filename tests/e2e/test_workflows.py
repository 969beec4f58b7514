"""A circle's workflow through a real `gathering serve`, the model faked at its HTTP wire (the
LLM stub, Ollama's format): scripted agents complete a task that needs one round of requested
changes before approval. The test checks the stored history of the state machine and the
events a WebSocket client of `/ws/circles/{name}` received; then the server is killed while
the author is mid-turn, a new server takes the task up (the stalled job is queued again) and
the task completes; after a restart every state is still there. A conversation whose server
dies mid-turn goes on, on the next server, from its stored transcript, no turn said twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from job_processes import ScratchDatabase, scratch_database, wait_until, worker_env
from live_server import LiveServer

from gathering.circles import (
    get_circle,
    get_circle_task,
    get_conversation,
    get_member,
    list_members,
)
from gathering.circles.conversations import speaker_prompt
from gathering.circles.work import work_prompt
from gathering.db import Database
from gathering.testing import LLMStubServer

pytestmark = pytest.mark.slow
CHANGES = '{"verdict": "changes_requested", "feedback": "handle the empty file"}'
APPROVED = '{"verdict": "approved", "feedback": "good"}'


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


@pytest.fixture
def stub(llm_stub: LLMStubServer) -> Iterator[LLMStubServer]:
    llm_stub.reset()
    try:
        yield llm_stub
    finally:
        llm_stub.reset()


def _server(database: ScratchDatabase, stub: LLMStubServer) -> LiveServer:
    server = LiveServer(**worker_env(database, **stub.environment()))
    server.wait_ready()
    return server


def _post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = api.post(path, json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    found: dict[str, Any] = answer.json()
    return found


def _team(api: httpx.Client, *, active: bool = True) -> tuple[int, int, int]:
    """Circle `team` with a coder and a reviewer agent: its id and the members'."""
    for name in ("coder", "critic"):
        _post(api, "/agents", {"name": name, "provider": "ollama", "model": "llama3.2"})
    circle = _post(api, "/circles", {"name": "team", "description": "parsers"})
    coder = _post(
        api,
        f"/circles/{circle['id']}/members",
        {"agent": "coder", "competencies": {"python": 4}},
    )
    critic = _post(api, f"/circles/{circle['id']}/members", {"agent": "critic", "role": "reviewer"})
    if active:
        _post(api, f"/circles/{circle['id']}/activate")
    return circle["id"], coder["id"], critic["id"]


async def _watch(port: int, events: list[dict[str, Any]], until_status: str) -> None:
    """Collect the circle's events until a task reaches `until_status`."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/circles/team") as ws:
        await ws.send(json.dumps({"type": "subscribe", "patterns": ["circle.*"], "since": 0}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        async with asyncio.timeout(60):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] != "event":
                    continue
                events.append(message["event"])
                data = message["event"]["data"]
                if (
                    message["event"]["type"] == "circle.task.moved"
                    and data["status"] == until_status
                ):
                    return


def test_a_task_needing_one_round_of_changes_is_approved_and_seen_live(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    server = _server(database, stub)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as api:
            circle_id, coder, critic = _team(api)
            stub.add_reply("draft one", CHANGES, "draft two, empty file handled", APPROVED)
            events: list[dict[str, Any]] = []

            async def scenario() -> None:
                watcher = asyncio.create_task(_watch(server.port, events, "completed"))
                await asyncio.sleep(0.5)  # subscribed before the task exists
                await asyncio.to_thread(
                    _post,
                    api,
                    f"/circles/{circle_id}/tasks",
                    {"title": "parse the file", "requirements": {"python": 3}},
                )
                await watcher

            asyncio.run(scenario())
            [task] = api.get(f"/circles/{circle_id}/tasks").json()
            detail = api.get(f"/circles/{circle_id}/tasks/{task['id']}").json()
    finally:
        assert server.stop() == 0
    history = [(h["from_status"], h["to_status"], h["member_id"]) for h in detail["history"]]
    assert history == [
        (None, "pending", None),
        ("pending", "offered", None),
        ("offered", "in_progress", coder),
        ("in_progress", "in_review", coder),
        ("in_review", "changes_requested", critic),
        ("changes_requested", "in_progress", coder),
        ("in_progress", "in_review", coder),
        ("in_review", "completed", critic),
    ]
    assert detail["result"]["text"] == "draft two, empty file handled"
    assert [r["verdict"] for r in detail["reviews"]] == ["changes_requested", "approved"]
    moved = [e["data"]["status"] for e in events if e["type"] == "circle.task.moved"]
    assert moved == [to for _, to, _ in history[1:]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "circle.task.created"
    assert kinds.count("circle.review.requested") == 2
    assert kinds.count("circle.review.submitted") == 2
    offered = next(e for e in events if e["type"] == "circle.task.offered")
    assert (
        offered["data"]["member_id"] == coder and "python 4 (needs 3)" in offered["data"]["reason"]
    )
    assert all(e["subject"] == "circle:team" for e in events)


def test_a_task_whose_server_dies_mid_turn_completes_on_the_next(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    server = _server(database, stub)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as api:
            circle_id, coder, _ = _team(api, active=False)
            created = _post(api, f"/circles/{circle_id}/tasks", {"title": "parse the file"})
            prompt = asyncio.run(_prompt(database.url, created["id"], coder))
            held = stub.hold(prompt)
            _post(api, f"/circles/{circle_id}/activate")  # offered to the coder, who works it
        wait_until(lambda: held.arrived.is_set(), 30, "the author's turn reached the model")
        server.process.kill()  # mid-turn: no drain
        server.process.wait()
    finally:
        server.stop()
    held.release()  # the dead server's request gets the stub's default answer: none is queued
    again = stub.hold(prompt)  # the same turn, taken up by the next server
    second = _server(database, stub)
    try:
        wait_until(lambda: again.arrived.is_set(), 60, "the next server took the turn up")
        stub.add_reply("the parser", APPROVED)
        again.release()
        with httpx.Client(base_url=second.base, timeout=30) as api:

            def completed() -> dict[str, Any] | None:
                task = api.get(f"/circles/{circle_id}/tasks/{created['id']}").json()
                return task if task["status"] in ("completed", "failed") else None

            task = wait_until(completed, 60, "the task ended on the new server")
    finally:
        assert second.stop() == 0
    assert task["status"] == "completed", task
    assert task["result"]["text"] == "the parser"
    assert [h["to_status"] for h in task["history"]].count("in_progress") == 1
    third = _server(database, stub)  # a restart keeps every state
    try:
        with httpx.Client(base_url=third.base, timeout=30) as api:
            again = api.get(f"/circles/{circle_id}/tasks/{created['id']}").json()
            assert again["history"] == task["history"] and again["status"] == "completed"
            metrics = api.get(f"/circles/{circle_id}/metrics").json()
            assert [m["completed"] for m in metrics] == [1, 0]
    finally:
        third.stop()


async def _prompt(url: str, task_id: int, member_id: int) -> str:
    """The prompt of member `member_id`'s first attempt at task `task_id`."""
    async with Database(url, min_size=0, max_size=1) as db:
        task = await get_circle_task(db, task_id)
        circle = await get_circle(db, task.circle_id)
        return work_prompt(circle, await get_member(db, circle.id, member_id), task)


def test_a_conversation_whose_server_dies_mid_turn_goes_on_from_its_transcript(
    database: ScratchDatabase, stub: LLMStubServer
) -> None:
    server = _server(database, stub)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as api:
            circle_id, _, _ = _team(api)
            base = f"/circles/{circle_id}/conversations"
            made = _post(api, base, {"topic": "naming", "max_turns": 3})
            prompt = asyncio.run(_first_turn(database.url, made["id"]))
            held = stub.hold(prompt)
            _post(api, f"{base}/{made['id']}/start")
        wait_until(lambda: held.arrived.is_set(), 30, "the first turn reached the model")
        server.process.kill()
        server.process.wait()
    finally:
        server.stop()
    held.release()
    again = stub.hold(prompt)
    second = _server(database, stub)
    try:
        wait_until(lambda: again.arrived.is_set(), 60, "the next server took the turn up")
        stub.add_reply("t1", "t2", "t3", "the summary")
        again.release()
        with httpx.Client(base_url=second.base, timeout=30) as api:

            def ended() -> dict[str, Any] | None:
                found: dict[str, Any] = api.get(f"{base}/{made['id']}").json()
                return found if found["status"] in ("finished", "failed", "cancelled") else None

            conversation = wait_until(ended, 60, "the conversation ended on the new server")
            said = api.get(f"{base}/{made['id']}/transcript").json()
    finally:
        assert second.stop() == 0
    assert (conversation["status"], conversation["turns"]) == ("finished", 3), conversation
    assert conversation["summary"] == "the summary"
    assert [(m["n"], m["turn"], m["content"]) for m in said] == [
        (1, 1, "t1"),
        (2, 2, "t2"),
        (3, 3, "t3"),
    ]


async def _first_turn(url: str, conversation_id: int) -> str:
    """The prompt of conversation `conversation_id`'s first turn (round robin: its first
    participant speaks, before anything was said)."""
    async with Database(url, min_size=0, max_size=1) as db:
        conversation = await get_conversation(db, conversation_id)
        circle = await get_circle(db, conversation.circle_id)
        members = {m.id: m for m in await list_members(db, circle.id)}
        speakers = [members[m] for m in conversation.participants]
        names = [m.name for m in speakers]
        return speaker_prompt(circle, conversation, speakers[0], names, [], 1)
