"""A project's files over HTTP: a folder listed (lazily, with git status, .git hidden), a file
read as text (its encoding detected, its version as ETag) or downloaded as an attachment, a
write that needs the version it replaces (412 when stale, 428 when missing; the encoding and
mode kept), create, move and delete (409 on what is there), searches of names and contents,
the activity each change leaves, who may do what, and every path parameter of every route
against traversal and symlink attacks. Then the watcher: changes on disk reach subscribers of
`project:<id>` as coalesced `project.files_changed` events."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_ws import ASGIWebSocket
from fastapi import FastAPI
from projects import make_project
from task_api import client_for, login, multi_fixture, stub_fixture  # noqa: F401 - fixtures

from gathering.events import Event, EventStream
from gathering.projects import get_project
from gathering.projects.watch import ProjectFilesWatcher
from gathering.tools.builtins.git import git

Json = dict[str, Any]


@pytest.fixture
def app(app_for: Callable[..., FastAPI]) -> FastAPI:
    return app_for()


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def project(api: httpx.AsyncClient) -> tuple[Json, Path]:
    return await make_project(api)


def _files(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


async def put_files(root: Path, files: dict[str, str | bytes]) -> None:
    await asyncio.to_thread(_files, root, files)


async def read_bytes(path: Path) -> bytes | None:
    def read() -> bytes | None:
        return path.read_bytes() if path.exists() or path.is_symlink() else None

    return await asyncio.to_thread(read)


async def run_git(directory: Path, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=directory, stdout=asyncio.subprocess.DEVNULL
    )
    assert await process.wait() == 0


def _entries(listing: Json) -> dict[str, Json]:
    return {entry["name"]: entry for entry in listing["entries"]}


# --- tree -----------------------------------------------------------------------------------


async def test_a_folder_is_listed_folders_first_without_git(api, project):
    made, root = project
    await put_files(root, {"b.txt": "bee", "A.md": "# a", "src/app.py": "print(1)"})
    await asyncio.to_thread(os.symlink, "src/app.py", root / "link.py")
    await put_files(root, {".git": "gitdir: /elsewhere"})  # hidden, and not a repository
    listed = await api.get(f"/projects/{made['id']}/files/tree")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["path"] == "." and not body["truncated"] and not body["git_repository"]
    assert [e["name"] for e in body["entries"]] == ["src", "A.md", "b.txt", "link.py"]
    entries = _entries(body)
    assert entries["b.txt"]["kind"] == "file" and entries["b.txt"]["size"] == 3
    assert entries["src"]["kind"] == "directory" and entries["src"]["size"] is None
    assert entries["link.py"]["kind"] == "symlink" and entries["b.txt"]["git_status"] is None
    inner = (await api.get(f"/projects/{made['id']}/files/tree", params={"path": "src"})).json()
    assert inner["path"] == "src" and [e["path"] for e in inner["entries"]] == ["src/app.py"]

    on_a_file = await api.get(f"/projects/{made['id']}/files/tree", params={"path": "b.txt"})
    assert on_a_file.status_code == 422, on_a_file.text
    missing = await api.get(f"/projects/{made['id']}/files/tree", params={"path": "nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    hidden = await api.get(f"/projects/{made['id']}/files/tree", params={"path": ".git"})
    assert hidden.status_code == 403, hidden.text


async def test_the_tree_carries_git_status(api, project):
    made, root = project
    await put_files(root, {"kept.txt": "1", "changed.txt": "1", "src/deep/a.py": "1"})
    await run_git(root, "init", "-q")
    await git(root, "add", paths=["."])
    await git(root, "commit", message="first")
    await put_files(
        root,
        {"changed.txt": "2", "new file.txt": "n", "src/deep/a.py": "2", "fresh/x.txt": "x"},
    )
    await git(root, "add", paths=["new file.txt"])
    listed = (await api.get(f"/projects/{made['id']}/files/tree")).json()
    assert listed["git_repository"] and listed["git_problem"] is None
    entries = _entries(listed)
    assert ".git" not in entries
    assert entries["kept.txt"]["git_status"] is None
    assert (entries["changed.txt"]["git_status"], entries["changed.txt"]["git_code"]) == (
        "modified",
        " M",
    )
    assert (entries["new file.txt"]["git_status"], entries["new file.txt"]["git_code"]) == (
        "added",
        "A ",
    )
    assert entries["src"]["git_status"] == "modified" and entries["src"]["git_code"] is None
    assert entries["fresh"]["git_status"] == "untracked"
    deep = (await api.get(f"/projects/{made['id']}/files/tree", params={"path": "src/deep"})).json()
    assert _entries(deep)["a.py"]["git_status"] == "modified"
    fresh = (await api.get(f"/projects/{made['id']}/files/tree", params={"path": "fresh"})).json()
    assert _entries(fresh)["x.txt"]["git_status"] == "untracked"


# --- read -----------------------------------------------------------------------------------


async def test_text_is_read_with_its_encoding_and_version(api, project):
    made, root = project
    # Detection needs enough text to tell one single-byte encoding from another.
    latin = "Voilà, l'été à Montréal: forêt, crêpe et café.\n" * 3
    await put_files(
        root,
        {
            "utf8.txt": "héllo wörld\n",
            "latin.txt": latin.encode("cp1252"),
            "wide.txt": "wide ✓\n".encode("utf-16"),
            "image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        },
    )
    url = f"/projects/{made['id']}/files/content"
    read = await api.get(url, params={"path": "utf8.txt"})
    assert read.status_code == 200, read.text
    body = read.json()
    assert (body["text"], body["encoding"], body["binary"]) == ("héllo wörld\n", "utf-8", False)
    assert read.headers["etag"] == f'"{body["version"]}"' and len(body["version"]) == 64

    latin_read = (await api.get(url, params={"path": "latin.txt"})).json()
    assert (latin_read["text"], latin_read["encoding"]) == (latin, "cp1252")
    wide = (await api.get(url, params={"path": "wide.txt"})).json()
    assert (wide["text"], wide["encoding"]) == ("wide ✓\n", "utf-16")
    image = (await api.get(url, params={"path": "image.png"})).json()
    assert image["binary"] and image["text"] is None and image["encoding"] is None

    folder = await api.get(url, params={"path": "."})
    assert folder.status_code == 422
    assert (await api.get(url, params={"path": "nope.txt"})).status_code == 404


async def test_a_file_is_downloaded_as_an_attachment(api, project):
    made, root = project
    data = b"\x00\x01binary<script>alert(1)</script>"
    await put_files(root, {'r\u00e9sum\u00e9 "q";.bin': data})
    answer = await api.get(
        f"/projects/{made['id']}/files/raw", params={"path": 'r\u00e9sum\u00e9 "q";.bin'}
    )
    assert answer.status_code == 200, answer.text
    assert answer.content == data
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-content-type-options"] == "nosniff"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="r_sum___q__.bin"; filename*=UTF-8')
    assert disposition.count('"') == 2 and "\n" not in disposition
    assert (
        answer.headers["etag"].strip('"')
        == (
            await api.get(
                f"/projects/{made['id']}/files/content", params={"path": 'résumé "q";.bin'}
            )
        ).json()["version"]
    )


async def test_files_over_the_limits_are_refused(api, project):
    made, root = project
    await put_files(root, {"big.txt": "x" * (1024 * 1024 + 1)})
    too_big = await api.get(f"/projects/{made['id']}/files/content", params={"path": "big.txt"})
    assert too_big.status_code == 422 and "too large" in too_big.json()["detail"]
    raw = await api.get(f"/projects/{made['id']}/files/raw", params={"path": "big.txt"})
    assert raw.status_code == 200 and len(raw.content) == 1024 * 1024 + 1


# --- write ----------------------------------------------------------------------------------


async def test_a_write_needs_the_version_it_replaces(api, project):
    made, root = project
    await put_files(root, {"notes.txt": "one\n"})
    await asyncio.to_thread(os.chmod, root / "notes.txt", 0o640)
    url = f"/projects/{made['id']}/files/content"
    first = (await api.get(url, params={"path": "notes.txt"})).json()["version"]

    missing = await api.put(url, params={"path": "notes.txt"}, json={"text": "two\n"})
    assert missing.status_code == 428 and missing.json()["code"] == "version_required"

    written = await api.put(
        url,
        params={"path": "notes.txt"},
        json={"text": "two\n"},
        headers={"If-Match": f'"{first}"'},
    )
    assert written.status_code == 200, written.text
    second = written.json()
    assert second["created"] is False and second["encoding"] == "utf-8" and second["size"] == 4
    assert written.headers["etag"] == f'"{second["version"]}"'
    assert await read_bytes(root / "notes.txt") == b"two\n"
    assert (await asyncio.to_thread(os.stat, root / "notes.txt")).st_mode & 0o777 == 0o640

    stale = await api.put(
        url, params={"path": "notes.txt"}, json={"text": "three\n"}, headers={"If-Match": first}
    )
    assert stale.status_code == 412, stale.text
    problem = stale.json()
    assert problem["code"] == "stale_version" and "changed since you read it" in problem["detail"]
    assert problem["details"]["current_version"] == second["version"]
    assert await read_bytes(root / "notes.txt") == b"two\n"

    weak = await api.put(
        url,
        params={"path": "notes.txt"},
        json={"text": "x"},
        headers={"If-Match": f'W/"{second["version"]}"'},
    )
    assert weak.status_code == 412  # a weak tag never matches a strong validator
    several = await api.put(
        url,
        params={"path": "notes.txt"},
        json={"text": "three\n"},
        headers={"If-Match": f'"{first}", "{second["version"]}"'},
    )
    assert several.status_code == 200, several.text
    anything = await api.put(
        url, params={"path": "notes.txt"}, json={"text": "four\n"}, headers={"If-Match": "*"}
    )
    assert anything.status_code == 200
    exists = await api.put(
        url, params={"path": "notes.txt"}, json={"text": "x"}, headers={"If-None-Match": "*"}
    )
    assert exists.status_code == 412


async def test_a_new_file_is_written_in_utf8_and_a_gone_one_is_stale(api, project):
    made, root = project
    url = f"/projects/{made['id']}/files/content"
    created = await api.put(url, params={"path": "new.txt"}, json={"text": "né\n"})
    assert created.status_code == 201, created.text
    assert created.json()["created"] and created.json()["encoding"] == "utf-8"
    assert await read_bytes(root / "new.txt") == "né\n".encode()
    gone = await api.put(
        url, params={"path": "gone.txt"}, json={"text": "x"}, headers={"If-Match": '"abc"'}
    )
    assert gone.status_code == 412 and "does not exist" in gone.json()["detail"]
    no_folder = await api.put(url, params={"path": "no/such/dir.txt"}, json={"text": "x"})
    assert no_folder.status_code == 404
    on_folder = await api.put(url, params={"path": "."}, json={"text": "x"})
    assert on_folder.status_code == 422


async def test_a_write_keeps_the_file_encoding(api, project):
    made, root = project
    original = "Voilà, l'été à Montréal: forêt, crêpe et café.\n" * 3
    await put_files(
        root, {"fr.txt": original.encode("cp1252"), "wide.txt": "ok\n".encode("utf-16")}
    )
    url = f"/projects/{made['id']}/files/content"
    read = (await api.get(url, params={"path": "fr.txt"})).json()
    changed = read["text"].replace("Montréal", "Québec")
    written = await api.put(
        url,
        params={"path": "fr.txt"},
        json={"text": changed},
        headers={"If-Match": read["version"]},
    )
    assert written.status_code == 200, written.text
    assert written.json()["encoding"] == read["encoding"]
    assert await read_bytes(root / "fr.txt") == changed.encode(read["encoding"])

    refused = await api.put(
        url,
        params={"path": "fr.txt"},
        json={"text": "emoji 🎉"},
        headers={"If-Match": written.json()["version"]},
    )
    assert refused.status_code == 422 and "cannot hold" in refused.json()["detail"]
    as_utf8 = await api.put(
        url,
        params={"path": "fr.txt"},
        json={"text": "emoji 🎉", "encoding": "utf-8"},
        headers={"If-Match": written.json()["version"]},
    )
    assert as_utf8.status_code == 200 and await read_bytes(root / "fr.txt") == "emoji 🎉".encode()

    wide = (await api.get(url, params={"path": "wide.txt"})).json()
    await api.put(
        url,
        params={"path": "wide.txt"},
        json={"text": "ok!\n"},
        headers={"If-Match": wide["version"]},
    )
    assert await read_bytes(root / "wide.txt") == "ok!\n".encode("utf-16")
    unknown = await api.put(
        url,
        params={"path": "wide.txt"},
        json={"text": "x", "encoding": "base64"},
        headers={"If-Match": "*"},
    )
    assert unknown.status_code == 422 and "not a text encoding" in unknown.json()["detail"]


async def test_two_writes_of_one_version_cannot_both_win(api, project):
    made, root = project
    await put_files(root, {"race.txt": "base"})
    url = f"/projects/{made['id']}/files/content"
    version = (await api.get(url, params={"path": "race.txt"})).json()["version"]
    answers = await asyncio.gather(
        *(
            api.put(
                url,
                params={"path": "race.txt"},
                json={"text": f"w{i}"},
                headers={"If-Match": version},
            )
            for i in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 412, 412, 412]
    [winner] = [a for a in answers if a.status_code == 200]
    assert await read_bytes(root / "race.txt") == b"w" + str(answers.index(winner)).encode()


# --- create, move, delete -------------------------------------------------------------------


async def test_entries_are_created_moved_and_deleted(api, project):
    made, root = project
    base = f"/projects/{made['id']}/files"
    created = await api.post(f"{base}/entry", json={"path": "docs/readme.md", "text": "# hi"})
    assert created.status_code == 404  # no folder docs yet
    created = await api.post(
        f"{base}/entry", json={"path": "docs/readme.md", "text": "# hi", "parents": True}
    )
    assert created.status_code == 201, created.text
    assert created.json() | {"modified": None} == {
        "name": "readme.md",
        "path": "docs/readme.md",
        "kind": "file",
        "size": 4,
        "modified": None,
        "git_status": None,
        "git_code": None,
    }
    assert await read_bytes(root / "docs/readme.md") == b"# hi"
    again = await api.post(f"{base}/entry", json={"path": "docs/readme.md"})
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    folder = await api.post(f"{base}/entry", json={"path": "docs/img", "kind": "directory"})
    assert folder.status_code == 201 and folder.json()["kind"] == "directory"
    with_text = await api.post(
        f"{base}/entry", json={"path": "other", "kind": "directory", "text": "x"}
    )
    assert with_text.status_code == 422

    moved = await api.post(f"{base}/move", json={"from": "docs/readme.md", "to": "README.md"})
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"from": "docs/readme.md", "to": "README.md", "kind": "file"}
    assert await read_bytes(root / "README.md") == b"# hi"
    await put_files(root, {"other.md": "other"})
    onto = await api.post(f"{base}/move", json={"from": "other.md", "to": "README.md"})
    assert onto.status_code == 409 and await read_bytes(root / "README.md") == b"# hi"
    into_itself = await api.post(f"{base}/move", json={"from": "docs", "to": "docs/img/docs"})
    assert into_itself.status_code == 422
    absent = await api.post(f"{base}/move", json={"from": "nope", "to": "nope2"})
    assert absent.status_code == 404
    renamed_folder = await api.post(f"{base}/move", json={"from": "docs", "to": "manual"})
    assert renamed_folder.status_code == 200 and renamed_folder.json()["kind"] == "directory"

    full = await api.delete(f"{base}/entry", params={"path": "manual"})
    assert full.status_code == 409 and "recursive" in full.json()["hint"]
    emptied = await api.delete(f"{base}/entry", params={"path": "manual", "recursive": True})
    assert emptied.status_code == 204
    assert not await asyncio.to_thread((root / "manual").exists)
    assert (await api.delete(f"{base}/entry", params={"path": "README.md"})).status_code == 204
    assert (await api.delete(f"{base}/entry", params={"path": "README.md"})).status_code == 404
    root_itself = await api.delete(f"{base}/entry", params={"path": ".", "recursive": True})
    assert root_itself.status_code == 422 and await asyncio.to_thread(root.is_dir)


async def test_deleting_a_symlink_keeps_what_it_points_to(api, project):
    made, root = project
    await put_files(root, {"target.txt": "kept"})
    await asyncio.to_thread(os.symlink, "target.txt", root / "alias.txt")
    deleted = await api.delete(f"/projects/{made['id']}/files/entry", params={"path": "alias.txt"})
    assert deleted.status_code == 204
    assert not await asyncio.to_thread(os.path.lexists, root / "alias.txt")
    assert await read_bytes(root / "target.txt") == b"kept"


async def test_every_change_is_in_the_activity_log(api, project):
    made, _ = project
    base = f"/projects/{made['id']}/files"
    await api.post(f"{base}/entry", json={"path": "a.txt", "text": "a"})
    await api.put(
        f"{base}/content", params={"path": "a.txt"}, json={"text": "b"}, headers={"If-Match": "*"}
    )
    await api.post(f"{base}/move", json={"from": "a.txt", "to": "b.txt"})
    await api.delete(f"{base}/entry", params={"path": "b.txt"})
    activity = (await api.get(f"/projects/{made['id']}/activity")).json()
    assert [(a["action"], a["path"]) for a in reversed(activity)] == [
        ("file.create", "a.txt"),
        ("file.write", "a.txt"),
        ("file.rename", "b.txt"),
        ("file.delete", "b.txt"),
    ]
    assert {a["user_id"] for a in activity} == {made["owner_id"]}
    assert activity[1]["detail"] == {"from": "a.txt", "to": "b.txt", "kind": "file"}
    assert activity[2]["detail"]["encoding"] == "utf-8"


# --- search ---------------------------------------------------------------------------------


async def test_names_and_contents_are_searched(api, project):
    made, root = project
    await put_files(
        root,
        {
            "README.md": "Hello World\n",
            "src/readme_parser.py": "def parse():\n    return 'hello (world)'\n",
            "src/other.py": "x = 1\n",
            ".git/readme": "hello",
        },
    )
    url = f"/projects/{made['id']}/files/search"
    names = (await api.get(url, params={"query": "readme"})).json()
    assert names["mode"] == "name" and not names["truncated"]
    assert sorted(m["path"] for m in names["matches"]) == ["README.md", "src/readme_parser.py"]
    globbed = (await api.get(url, params={"query": "*.py"})).json()
    assert sorted(m["path"] for m in globbed["matches"]) == ["src/other.py", "src/readme_parser.py"]

    literal = (await api.get(url, params={"query": "hello (world)", "mode": "content"})).json()
    assert literal["matches"] == [
        {"path": "src/readme_parser.py", "line": 2, "text": "    return 'hello (world)'"}
    ]
    pattern = {"query": r"^Hello\s", "mode": "content", "regex": True, "ignore_case": False}
    assert [m["path"] for m in (await api.get(url, params=pattern)).json()["matches"]] == [
        "README.md"
    ]
    every = (await api.get(url, params={"query": "hello", "mode": "content"})).json()
    assert sorted(m["path"] for m in every["matches"]) == ["README.md", "src/readme_parser.py"]
    only_py = {"query": "hello", "mode": "content", "glob": "*.py"}
    assert len((await api.get(url, params=only_py)).json()["matches"]) == 1
    capped = (await api.get(url, params={"query": "e", "limit": 1})).json()
    assert capped["truncated"] and len(capped["matches"]) == 1 and capped["note"]
    in_folder = (await api.get(url, params={"query": "py", "path": "src"})).json()
    assert len(in_folder["matches"]) == 2
    bad = await api.get(url, params={"query": "(", "mode": "content", "regex": True})
    assert bad.status_code == 422 and "regular expression" in bad.json()["detail"]


# --- who may do what ------------------------------------------------------------------------


async def test_readers_read_and_strangers_see_nothing(multi: tuple[FastAPI, httpx.AsyncClient]):
    app, client = multi
    owner, reader, stranger = [await login(app, client) for _ in range(3)]
    made, root = await make_project(client, headers=owner)
    await put_files(root, {"a.txt": "a"})
    reader_id = (await client.get("/auth/me", headers=reader)).json()["id"]
    added = await client.put(f"/projects/{made['id']}/members/{reader_id}", json={}, headers=owner)
    assert added.status_code == 200
    base = f"/projects/{made['id']}/files"
    reads = [
        ("GET", f"{base}/tree", {}, None),
        ("GET", f"{base}/content", {"path": "a.txt"}, None),
        ("GET", f"{base}/raw", {"path": "a.txt"}, None),
        ("GET", f"{base}/search", {"query": "a"}, None),
    ]
    writes = [
        ("PUT", f"{base}/content", {"path": "a.txt"}, {"text": "b"}),
        ("POST", f"{base}/entry", {}, {"path": "b.txt"}),
        ("POST", f"{base}/move", {}, {"from": "a.txt", "to": "c.txt"}),
        ("DELETE", f"{base}/entry", {"path": "a.txt"}, None),
    ]
    for method, url, params, body in reads + writes:
        answer = await client.request(method, url, params=params, json=body, headers=stranger)
        assert answer.status_code == 404, (method, url, answer.text)
    for method, url, params, body in reads:
        answer = await client.request(method, url, params=params, json=body, headers=reader)
        assert answer.status_code == 200, (method, url, answer.text)
    for method, url, params, body in writes:
        answer = await client.request(method, url, params=params, json=body, headers=reader)
        assert answer.status_code == 403, (method, url, answer.text)
    assert await read_bytes(root / "a.txt") == b"a"
    written = await client.put(
        f"{base}/content",
        params={"path": "a.txt"},
        json={"text": "b"},
        headers=owner | {"If-Match": "*"},
    )
    assert written.status_code == 200


# --- traversal and symlink attacks, on every path parameter ---------------------------------


@pytest.fixture
async def outside() -> AsyncIterator[Path]:
    """A folder outside every project, with a secret in it."""
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="outside-"))
    await put_files(folder, {"secret.txt": "s3cret", "sub/inner.txt": "inner"})
    yield folder
    await asyncio.to_thread(shutil.rmtree, folder, True)


@pytest.fixture
async def trapped(project, outside, app) -> tuple[Json, Path, Path]:
    """A project holding a file and symlinks that lead out: to `outside`, to /etc, to the
    server's data directory, and a dangling one."""
    made, root = project
    data_dir = app.state.gathering.settings.data_dir
    await put_files(root, {"ok.txt": "ok", "folder/keep.txt": "keep"})

    def links() -> None:
        os.symlink(outside, root / "out")
        os.symlink(outside / "secret.txt", root / "secret-link")
        os.symlink("/etc", root / "etc")
        os.symlink(data_dir, root / "data")
        os.symlink(outside / "missing.txt", root / "dangling")
        os.symlink(outside / "missing-folder", root / "dangling-folder")

    await asyncio.to_thread(links)
    return made, root, outside


ATTACKS = [
    "../escape.txt",
    "../../../../etc/passwd",
    "/etc/passwd",
    "%2e%2e/escape.txt",
    "%252e%252e/escape.txt",
    "folder/%2e%2e/%2e%2e/escape.txt",
    "..\\escape.txt",
    "folder\\..\\..\\escape.txt",
    "a\x00b.txt",
    "\uff0e\uff0e/escape.txt",
    "out",
    "out/secret.txt",
    "out/sub",
    "out/new.txt",
    "secret-link",
    "etc/passwd",
    "etc",
    "data",
    "data/anything.txt",
    "dangling",
    "dangling-folder/new.txt",
]


# Every route, and in it every path parameter: (method, route, params, body) for an attack.
PATH_PARAMETERS: dict[str, Callable[[str], tuple[str, str, Json, Any]]] = {
    "tree.path": lambda a: ("GET", "tree", {"path": a}, None),
    "content.path": lambda a: ("GET", "content", {"path": a}, None),
    "raw.path": lambda a: ("GET", "raw", {"path": a}, None),
    "write.path": lambda a: ("PUT", "content", {"path": a}, {"text": "pwned"}),
    "create.path": lambda a: ("POST", "entry", {}, {"path": a, "text": "pwned"}),
    "create-folder.path": lambda a: (
        "POST",
        "entry",
        {},
        {"path": a, "kind": "directory", "parents": True},
    ),
    "move.from": lambda a: ("POST", "move", {}, {"from": a, "to": "moved-here"}),
    "move.to": lambda a: ("POST", "move", {}, {"from": "ok.txt", "to": a}),
    "delete.path": lambda a: ("DELETE", "entry", {"path": a, "recursive": True}, None),
    "search-names.path": lambda a: ("GET", "search", {"query": "e", "path": a}, None),
    "search-content.path": lambda a: (
        "GET",
        "search",
        {"query": "s", "mode": "content", "path": a},
        None,
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("parameter", list(PATH_PARAMETERS))
async def test_no_path_parameter_leaves_the_project(api, trapped, parameter):
    made, root, outside = trapped
    before_outside = await asyncio.to_thread(_snapshot, outside)
    before_root = await asyncio.to_thread(lambda: sorted(os.listdir(root)))
    failures = []
    for attack in ATTACKS:
        method, route, params, body = PATH_PARAMETERS[parameter](attack)
        url = f"/projects/{made['id']}/files/{route}"
        answer = await api.request(method, url, params=params, json=body)
        problem = answer.json() if answer.content else {}
        # A NUL is refused before routing (in the URL), a backslash or a NUL by the schema.
        by_schema = "\x00" in attack or "\\" in attack
        expected = {400, 422} if by_schema else {422}
        codes = {"invalid_input"} if by_schema else {"path_traversal"}
        if answer.status_code not in expected or problem.get("code") not in codes:
            failures.append((attack, answer.status_code, answer.text[:200]))
        assert b"s3cret" not in answer.content and b"root:" not in answer.content
    assert failures == []
    assert await asyncio.to_thread(_snapshot, outside) == before_outside
    assert await asyncio.to_thread(lambda: sorted(os.listdir(root))) == before_root
    assert await read_bytes(root / "ok.txt") == b"ok"
    assert not await asyncio.to_thread(os.path.lexists, root.parent / "escape.txt")


async def test_symlinks_inside_the_project_are_never_written_through(api, project):
    made, root = project
    await put_files(root, {"real.txt": "real", "folder/x.txt": "x"})

    def links() -> None:
        os.symlink("real.txt", root / "alias.txt")
        os.symlink("missing.txt", root / "dangling-inside")
        os.symlink("folder", root / "folder-link")

    await asyncio.to_thread(links)
    base = f"/projects/{made['id']}/files"
    onto_link = await api.post(f"{base}/move", json={"from": "folder/x.txt", "to": "alias.txt"})
    assert onto_link.status_code == 409
    onto_dangling = await api.post(
        f"{base}/move", json={"from": "folder/x.txt", "to": "dangling-inside"}
    )
    assert onto_dangling.status_code == 409
    through_dangling = await api.post(
        f"{base}/entry", json={"path": "dangling-inside", "text": "x"}
    )
    assert through_dangling.status_code == 409
    assert not await asyncio.to_thread(os.path.exists, root / "missing.txt")
    write_link = await api.put(
        f"{base}/content",
        params={"path": "alias.txt"},
        json={"text": "x"},
        headers={"If-Match": "*"},
    )
    assert write_link.status_code == 422 and "symlink" in write_link.json()["detail"]
    write_dangling = await api.put(
        f"{base}/content", params={"path": "dangling-inside"}, json={"text": "x"}
    )
    assert write_dangling.status_code == 422
    assert not await asyncio.to_thread(os.path.exists, root / "missing.txt")
    assert await read_bytes(root / "real.txt") == b"real"
    # Reading and listing follow a symlink that stays inside; the answer names the real path.
    read = (await api.get(f"{base}/content", params={"path": "alias.txt"})).json()
    assert (read["path"], read["text"]) == ("real.txt", "real")
    listed = (await api.get(f"{base}/tree", params={"path": "folder-link"})).json()
    assert listed["path"] == "folder" and [e["name"] for e in listed["entries"]] == ["x.txt"]
    # Writing through a symlinked folder inside writes the real file.
    through_folder = await api.put(
        f"{base}/content",
        params={"path": "folder-link/x.txt"},
        json={"text": "y"},
        headers={"If-Match": "*"},
    )
    assert through_folder.status_code == 200 and through_folder.json()["path"] == "folder/x.txt"
    assert await read_bytes(root / "folder/x.txt") == b"y"
    git_inside = await api.post(
        f"{base}/entry", json={"path": ".git/hooks/pre-commit", "parents": True}
    )
    assert git_inside.status_code == 403
    git_upper = await api.post(f"{base}/entry", json={"path": ".GIT", "kind": "directory"})
    assert git_upper.status_code == 403


# --- the watcher ----------------------------------------------------------------------------


async def _next_files_event(stream: EventStream, timeout: float = 20.0) -> Event:
    async with asyncio.timeout(timeout):
        async for event in stream:
            if event.type == "project.files_changed":
                return event
    raise AssertionError("the stream ended")


async def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_changes_on_disk_become_coalesced_events(api, app, project, outside):
    made, root = project
    state = app.state.gathering
    db, bus = await state.database(), await state.event_bus()
    watcher = ProjectFilesWatcher(db, bus, refresh=0.2)
    stream = bus.stream(["project.files_changed"], subjects=[f"project:{made['id']}"])
    await asyncio.to_thread(os.symlink, outside, root / "out")
    await watcher.start()
    try:
        await _wait(lambda: root in watcher.watching)
        # In folders being watched: files written into a folder made in the same instant may
        # be reported as that folder alone (inotify watches a new folder once told of it).
        files: dict[str, str | bytes] = {f"file{i}.py": f"print({i})" for i in range(5)}
        await put_files(root, {**files, ".git/HEAD": "ref: x", "out/outside.txt": "secret"})
        seen: dict[str, str] = {}
        events = []
        while not set(files) <= set(seen):
            event = await _next_files_event(stream)
            events.append(event)
            seen.update({c["path"]: c["change"] for c in event.data["changes"]})
        first = events[0]
        assert first.subject == f"project:{made['id']}" and first.data["project_id"] == made["id"]
        assert first.data["truncated"] is False and first.data["total"] == len(
            first.data["changes"]
        )
        assert any(len(e.data["changes"]) > 1 for e in events)  # a burst is one event
        assert all(seen[path] in ("added", "modified") for path in files)
        assert not [p for p in seen if p.startswith((".git", "out/"))]

        await asyncio.to_thread((root / "file0.py").unlink)
        deleted = await _next_files_event(stream)
        assert {"path": "file0.py", "change": "deleted"} in deleted.data["changes"]
        await asyncio.to_thread((root / "docs").mkdir)
        folder = await _next_files_event(stream)
        assert {"path": "docs", "change": "added"} in folder.data["changes"]

        # A project created while it runs is watched; one deleted is let go.
        _, later_root = await make_project(api)
        await _wait(lambda: later_root in watcher.watching)
        await api.delete(f"/projects/{made['id']}")
        await _wait(lambda: root not in watcher.watching and later_root in watcher.watching)
        assert watcher.health() == (True, "leader")
    finally:
        await watcher.stop()
        stream.unsubscribe()
    assert watcher.watching == frozenset() and not watcher.holding
    assert not [t for t in threading_names() if t == "project-files-watch"]


def threading_names() -> list[str]:
    import threading

    return [thread.name for thread in threading.enumerate()]


async def test_an_editor_sees_changes_on_its_socket(app_for):
    app = app_for()
    async with app.router.lifespan_context(app), client_for(app) as client:
        made, root = await make_project(client)
        project = await get_project(await app.state.gathering.database(), made["id"])
        async with ASGIWebSocket(app, "/ws") as ws:
            await ws.send_json({"type": "subscribe", "subjects": [project.subject]})
            assert (await ws.receive_json())["type"] == "subscribed"
            async with asyncio.timeout(30):
                attempt = 0
                while True:  # the watcher picks the new project up within its refresh
                    attempt += 1
                    await put_files(root, {f"agent-edit-{attempt}.txt": "by an agent"})
                    try:
                        message = await ws.receive_json(timeout=1.0)
                    except TimeoutError:
                        continue
                    if message["type"] == "event":
                        break
        event = message["event"]
        assert event["type"] == "project.files_changed" and event["subject"] == project.subject
        assert event["data"]["changes"][0]["path"].startswith("agent-edit-")
