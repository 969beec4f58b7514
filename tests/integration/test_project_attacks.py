"""Attacks on projects found by a hostile review, kept as regression tests: git writing out of
the project through a symlink planted in .git, the stack read through a README swapped for a
symlink, a write keeping set-id bits, an encoding that is no file encoding, two registrations
racing into nested projects, a project's deletion taking its members' documents, special
files (a FIFO) listed, moved and deleted but never read, the project's own folder never
reached, and who may do what on every route."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from task_api import login, make_agent, multi_fixture, stub_fixture  # noqa: F401 - fixtures

Json = dict[str, Any]


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def api(app_for: Callable[..., FastAPI], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Single-user mode; projects under tmp_path/projects."""
    app = app_for(projects_root=tmp_path / "projects")
    async with client_for(app) as client:
        yield client


async def new_project(
    client: httpx.AsyncClient, name: str = "app", **more: Any
) -> tuple[Json, Path]:
    made = await client.post("/projects", json={"name": name}, **more)
    assert made.status_code == 201, made.text
    project: Json = made.json()
    return project, Path(project["directory"])


# --- 1. git follows a symlinked reflog out of the project: a host file is created / appended ----


async def test_git_never_writes_through_a_symlinked_reflog(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The terminal or an agent's shell can plant `.git/logs/HEAD -> /any/host/path`; the
    server's git (outside the sandbox) would append a line of the attacker's commit subject
    to it. A symlink anywhere in .git is refused before git runs."""
    project, directory = await new_project(api)
    base = f"/projects/{project['id']}/git"
    assert (await api.post(f"{base}/init")).status_code == 201
    outside = tmp_path / "outside" / "bashrc"

    def plant() -> None:  # what a terminal user can do inside /workspace
        outside.parent.mkdir()
        logs = directory / ".git" / "logs"
        logs.mkdir(exist_ok=True)
        (logs / "HEAD").unlink(missing_ok=True)
        os.symlink(str(outside), logs / "HEAD")

    wrote = await api.put(
        f"/projects/{project['id']}/files/content", params={"path": "a.txt"}, json={"text": "x"}
    )
    assert wrote.status_code == 201, wrote.text
    staged = await api.post(f"{base}/stage", json={"paths": ["a.txt"]})
    assert staged.status_code == 200, staged.text
    await asyncio.to_thread(plant)
    committed = await api.post(f"{base}/commit", json={"message": "x; touch /tmp/pwned"})
    assert committed.status_code == 422, committed.text
    assert "is a symlink" in committed.text
    written = await asyncio.to_thread(lambda: outside.read_text() if outside.exists() else None)
    assert written is None, (committed.status_code, written)


# --- 2. stack detection reads README through a symlink swapped in after its checks ---------


_SWAPPER = r"""
import os, sys, time
directory, secret, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
readme = os.path.join(directory, "README.md")
link, plain = os.path.join(directory, ".l"), os.path.join(directory, ".p")
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        os.symlink(secret, link)
        os.rename(link, readme)
        with open(plain, "w") as handle:
            handle.write("hello")
        os.rename(plain, readme)
    except OSError:
        pass
"""


async def test_stack_refresh_reads_a_readme_swapped_for_a_symlink_out(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`stack._read_small` checks `path.is_symlink()` / `is_file()` and then opens the path by
    name (`read_text`), which follows a symlink swapped in between. A terminal user (or an
    agent's shell) renaming a symlink over README.md in a loop gets a file of the host (here a
    'secret' beside the data) into the project's context text, which every reader and every
    linked agent sees (GET /projects/{id}/context). The docs promise the stack is read 'never
    through a symlink'."""
    project, directory = await new_project(api)
    secret = tmp_path / "server-secret.txt"
    await asyncio.to_thread(secret.write_text, "TOP-SECRET-SIGNING-KEY")
    swapper = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", _SWAPPER, str(directory), str(secret), "8"]
    )
    leaked = False
    try:
        for _ in range(60):
            answer = await api.post(f"/projects/{project['id']}/stack")
            assert answer.status_code == 200, answer.text
            context = (await api.get(f"/projects/{project['id']}/context")).json()["context"]
            leaked = leaked or "TOP-SECRET" in context
    finally:
        swapper.kill()
        await asyncio.to_thread(swapper.wait)
    assert not leaked, "the context text holds a file from outside the project"


# --- 3. a text encoding whose encoder raises UnicodeError (not UnicodeEncodeError): a 500 ---------


async def test_writing_with_the_idna_encoding_is_refused(api: httpx.AsyncClient) -> None:
    """`text_encoding` accepts any codec whose `"".encode()` works, e.g. `idna`; `_encoded`
    catches only UnicodeEncodeError, but the idna codec raises a plain UnicodeError for a
    label over 63 characters (or an empty label), which escapes as a 500."""
    project, _ = await new_project(api)
    answer = await api.put(
        f"/projects/{project['id']}/files/content",
        params={"path": "x.txt"},
        json={"text": "a" * 100, "encoding": "idna"},
    )
    assert answer.status_code < 500, answer.text
    assert answer.status_code == 422, answer.text


# --- 4. NOT A DEFECT: a FIFO in the project never hangs a read, a download or a search ----------


async def test_fifos_never_hang_reads_or_searches(api: httpx.AsyncClient) -> None:
    """A FIFO is refused (422) by /files/content and /files/raw (O_NONBLOCK + fstat), listed
    as `other`, and skipped by content search and the stack."""
    project, directory = await new_project(api)
    await asyncio.to_thread(os.mkfifo, directory / "pipe.txt")
    await asyncio.to_thread((directory / "a.txt").write_text, "needle\n")
    pid = project["id"]
    async with asyncio.timeout(20):
        for route in ("content", "raw"):
            answer = await api.get(f"/projects/{pid}/files/{route}", params={"path": "pipe.txt"})
            assert answer.status_code == 422, answer.text
        listing = (await api.get(f"/projects/{pid}/files/tree")).json()
        kinds = {e["name"]: e["kind"] for e in listing["entries"]}
        assert kinds == {"a.txt": "file", "pipe.txt": "other"}
        found = await api.get(
            f"/projects/{pid}/files/search", params={"query": "needle", "mode": "content"}
        )
        assert found.status_code == 200 and [m["path"] for m in found.json()["matches"]] == [
            "a.txt"
        ]
        refreshed = await api.post(f"/projects/{pid}/stack")
        assert refreshed.status_code == 200


# --- 5. a write keeps setuid / setgid bits: the server makes a set-id file of the writer's text ---


async def test_a_write_drops_the_setuid_and_setgid_bits(api: httpx.AsyncClient) -> None:
    """`_write_text` keeps `stat.S_IMODE(existing.st_mode)`, set-id bits included, and
    `create_temporary` `fchmod`s the server's new file with it. The terminal's user (uid
    65534) may `chmod u+s,g+s` its own file; the next API write (by a member with `write`)
    then leaves a file *created by the server's user* (root, when it runs as root) with the
    setuid/setgid bits and content of the writer's choosing."""
    project, directory = await new_project(api)
    tool = directory / "tool.sh"

    def plant() -> None:
        tool.write_text("#!/bin/sh\necho hi\n")
        os.chmod(tool, 0o6755)

    await asyncio.to_thread(plant)
    answer = await api.put(
        f"/projects/{project['id']}/files/content",
        params={"path": "tool.sh"},
        json={"text": "#!/bin/sh\nid\n"},
        headers={"If-Match": "*"},
    )
    assert answer.status_code == 200, answer.text
    mode = (await asyncio.to_thread(os.stat, tool)).st_mode
    assert not mode & (0o4000 | 0o2000), oct(mode)


# --- 6. two registrations at once: nested directories both become projects ---------------------


async def test_two_registrations_at_once_never_nest_one_project_in_another(
    app_for: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """`create_project` checks `overlapping_project` and then inserts, in two statements with
    no lock or transaction between them, and the table only has UNIQUE(directory). Two admins
    registering `/code/a` and `/code/a/b` at the same moment both pass the check: one
    project's directory lies inside another's (which the docs and the 409 forbid)."""
    allowed = tmp_path / "code"
    await asyncio.to_thread((allowed / "a" / "b").mkdir, parents=True)
    app = app_for(project_register_roots=[str(allowed)], projects_root=tmp_path / "projects")
    nested = 0
    async with client_for(app) as client:
        for attempt in range(15):
            outer, inner = allowed / f"r{attempt}", allowed / f"r{attempt}" / "in"
            await asyncio.to_thread(inner.mkdir, parents=True)
            answers = await asyncio.gather(
                client.post("/projects", json={"name": f"o{attempt}", "directory": str(outer)}),
                client.post("/projects", json={"name": f"i{attempt}", "directory": str(inner)}),
            )
            for answer in answers:
                assert answer.status_code in (201, 409), answer.text
            nested += all(answer.status_code == 201 for answer in answers)
    assert nested == 0, f"{nested} of 15 races left a project inside another"


# --- 7. NOT A DEFECT: the project's folder itself is never deleted, moved or written ----------


async def test_the_project_root_cannot_be_deleted_moved_or_written(
    api: httpx.AsyncClient,
) -> None:
    """ "", ".", "./", "a/.." forms and a symlink to "." never reach the project's folder."""
    project, directory = await new_project(api)
    await asyncio.to_thread(os.symlink, ".", directory / "self")
    files = f"/projects/{project['id']}/files"
    for path in (".", "./", "self/.", "x/.."):
        deleted = await api.delete(f"{files}/entry", params={"path": path, "recursive": "true"})
        assert deleted.status_code in (404, 422), (path, deleted.text)
        written = await api.put(f"{files}/content", params={"path": path}, json={"text": "x"})
        assert written.status_code in (404, 409, 422), (path, written.text)
        moved = await api.post(f"{files}/move", json={"from": path, "to": "elsewhere"})
        assert moved.status_code in (404, 409, 422), (path, moved.text)
    assert (await api.delete(f"{files}/entry", params={"path": ""})).status_code == 422
    assert await asyncio.to_thread(directory.is_dir)


# --- 8. deleting a project deletes its members' knowledge documents (the docs say they stay) ----


async def test_deleting_a_project_keeps_the_members_own_documents(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """docs/projects.md ("A project's documents"): "Deleting a project leaves its documents
    (with `scope_id` the old id) to their owners." `lifecycle.delete_project` runs
    `delete_project_documents` instead: the owner's DELETE wipes documents that belong to
    other people (a member with `write` who added them)."""
    app, client = multi
    owner, member = await login(app, client), await login(app, client)
    made = await client.post("/projects", json={"name": "shared"}, headers=owner)
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    member_id = (await client.get("/auth/me", headers=member)).json()["id"]
    added = await client.put(
        f"/projects/{pid}/members/{member_id}", json={"permissions": ["write"]}, headers=owner
    )
    assert added.status_code == 200, added.text
    document = await client.post(
        "/knowledge",
        json={"title": "Mine", "content": "my notes", "scope": "project", "scope_id": str(pid)},
        headers=member,
    )
    assert document.status_code == 201, document.text
    assert (await client.delete(f"/projects/{pid}", headers=owner)).status_code == 204
    kept = await client.get(f"/knowledge/{document.json()['id']}", headers=member)
    assert kept.status_code == 200, kept.text


# --- 9. NOT A DEFECT: who may do what, on files, git, members and links -----------------------


async def test_readers_strangers_viewers_and_removed_members_are_refused(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A stranger gets 404 everywhere; a `read` member, a viewer with
    every permission and a `projects:read` key get 403 on every change; a `write` member may
    not manage (members, links, settings, delete); a removed member is a stranger again; a
    member cannot link the owner's agent nor their own."""
    from task_api import api_key

    app, client = multi
    owner, reader, writer, stranger = [await login(app, client) for _ in range(4)]
    viewer = await login(app, client, "viewer")
    made = await client.post("/projects", json={"name": "locked"}, headers=owner)
    pid = made.json()["id"]
    ids = {}
    for name, headers in (("reader", reader), ("writer", writer), ("viewer", viewer)):
        ids[name] = (await client.get("/auth/me", headers=headers)).json()["id"]
    everything = {"permissions": ["read", "write", "terminal"]}
    await client.put(f"/projects/{pid}/members/{ids['reader']}", json={}, headers=owner)
    await client.put(f"/projects/{pid}/members/{ids['writer']}", json=everything, headers=owner)
    await client.put(f"/projects/{pid}/members/{ids['viewer']}", json=everything, headers=owner)
    read_key = await api_key(client, owner, "projects:read")
    owners_agent = await make_agent(client, "OwnersAgent", headers=owner)
    writers_agent = await make_agent(client, "WritersAgent", headers=writer)
    base = f"/projects/{pid}"
    changes: list[tuple[str, str, Any]] = [
        ("PUT", f"{base}/files/content?path=a.txt", {"text": "x"}),
        ("POST", f"{base}/files/entry", {"path": "b.txt"}),
        ("POST", f"{base}/files/move", {"from": "a.txt", "to": "c.txt"}),
        ("DELETE", f"{base}/files/entry?path=a.txt", None),
        ("POST", f"{base}/git/init", None),
        ("POST", f"{base}/git/stage", {"paths": ["."]}),
        ("POST", f"{base}/git/commit", {"message": "m"}),
        ("POST", f"{base}/stack", None),
    ]
    managing: list[tuple[str, str, Any]] = [
        ("PATCH", base, {"description": "mine now"}),
        ("PUT", f"{base}/members/{ids['writer']}", {"permissions": ["write", "terminal"]}),
        ("DELETE", f"{base}/members/{ids['reader']}", None),
        ("PUT", f"{base}/agents/{owners_agent}", None),
        ("PUT", f"{base}/agents/{writers_agent}", None),
        ("DELETE", base, None),
    ]
    reads = [f"{base}", f"{base}/files/tree", f"{base}/git/status", f"{base}/activity"]

    async def answer(method: str, url: str, body: Any, headers: dict[str, str]) -> int:
        sent = await client.request(method, url, json=body, headers=headers)
        return sent.status_code

    for url in reads:
        assert await answer("GET", url, None, stranger) == 404, url
    for method, url, body in changes + managing:
        assert await answer(method, url, body, stranger) == 404, (method, url)
        for who in (reader, viewer, read_key):
            assert await answer(method, url, body, who) == 403, (method, url, who)
    for method, url, body in managing:
        assert await answer(method, url, body, writer) == 403, (method, url)
    removed = await client.delete(f"{base}/members/{ids['writer']}", headers=owner)
    assert removed.status_code == 204
    for method, url, body in changes:
        assert await answer(method, url, body, writer) == 404, (method, url)


# --- 10. a FIFO (or socket) blocks a name that the API can neither see nor delete --------------


async def test_a_fifo_can_be_moved_and_deleted(api: httpx.AsyncClient) -> None:
    """A FIFO made by the terminal is left out of listings (by design), but `_delete` and
    `_move` answer 404 "does not exist in the project" for it (`_kind` is None), while
    `_create` answers 409 "exists already" for the same name: the API contradicts itself and
    offers no way to remove the entry. Expected: DELETE removes it (or a 409/422 that says
    what it is), never a 404 for something that is there."""
    project, directory = await new_project(api)
    await asyncio.to_thread(os.mkfifo, directory / "pipe")
    files = f"/projects/{project['id']}/files"
    created = await api.post(f"{files}/entry", json={"path": "pipe"})
    assert created.status_code == 409, created.text  # "'pipe' exists already"
    moved = await api.post(f"{files}/move", json={"from": "pipe", "to": "pipe2"})
    assert moved.status_code == 200 and moved.json()["kind"] == "other", moved.text
    deleted = await api.delete(f"{files}/entry", params={"path": "pipe2"})
    assert deleted.status_code == 204, deleted.text
    assert not await asyncio.to_thread(os.path.lexists, directory / "pipe2")
