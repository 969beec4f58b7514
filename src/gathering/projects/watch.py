"""Changes on disk in projects' directories become `project.files_changed` events on the
subject `project:<id>`, so an editor sees live what an agent's file tools, a terminal or a
`git checkout` changed.

One watcher runs for the whole deployment: `ProjectFilesWatcher` is a `SingletonDuty`, so
only the instance holding its advisory lock watches, and another takes over when it dies.
Per instance watching would publish every change once per instance; the events are durable
(the outbox), so the one watcher's events reach the sockets of every instance anyway. This
assumes what projects already need: every instance sees the same project directories (one
machine, or a shared file system). On a network file system, where inotify misses other
machines' writes, set `WATCHFILES_FORCE_POLLING=1`.

`watchfiles` does the watching, in one dedicated thread for all directories (`watch()`, not
`awatch()`: the notifier is built and walks the trees in that thread, never in the event
loop, and it holds no thread of the shared pools for good). It groups the changes of a
burst (`DEBOUNCE_MS` at most, ending after `STEP_MS` of quiet); each burst gives at most one
event per project, listing the changed paths (relative to the project's directory, each with
`added`, `modified` or `deleted`), at most `MAX_EVENT_PATHS` of them (then `truncated` is
true; `total` counts them all). `.git` internals and the file tools' temporary files are left
out. A folder made and filled in the same instant may be reported as the folder alone (inotify
watches a new folder only once told of it): an editor lists a folder reported `added` again.
watchfiles follows symlinks into the folders they point to; a change seen through a
symlink (one leading out of the project, or a second path to a file inside it) is dropped, so
nothing outside a project is ever reported.

The list of projects is read again every `refresh` seconds: a project created or deleted is
watched or let go within that time (the notifier is rebuilt, and changes made in the moment
it takes are not reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from watchfiles import Change, watch

from gathering.cancellation import cancel_and_wait
from gathering.db.database import Connection, Database
from gathering.db.locks import LockKey, SingletonDuty
from gathering.events import Event, EventBus
from gathering.projects.store import ProjectRecord, list_projects, project_event

log = structlog.get_logger(__name__)

WATCH_LOCK = LockKey("projects", "files-watch")
EVENT_KIND = "files_changed"  # the event type is project.files_changed
MAX_EVENT_PATHS = 200
DEBOUNCE_MS = 500
STEP_MS = 100
RUST_TIMEOUT_MS = 1_000  # how often the watching thread comes up for air
STOP_SECONDS = 3.0
_PAGE = 500
_KINDS = {Change.added: "added", Change.modified: "modified", Change.deleted: "deleted"}
_SKIPPED = ".git"
_TEMPORARY = (".gathering-", ".tmp")  # the file tools' staged writes (beneath.stage)


def _kept(change: Change, path: str) -> bool:
    """Whether watchfiles should report a change (in its thread: string work only)."""
    parts = path.split(os.sep)
    if _SKIPPED in parts:
        return False
    name = parts[-1]
    return not (name.startswith(_TEMPORARY[0]) and name.endswith(_TEMPORARY[1]))


def _coalesced(kinds: set[str]) -> str:
    """One word for what happened to a path within a burst."""
    if "added" in kinds and "deleted" in kinds:
        return "modified"  # replaced (a rename over it, or deleted and written again)
    for kind in ("added", "deleted"):
        if kind in kinds:
            return kind
    return "modified"


def changed_paths(
    changes: Iterable[tuple[Change, str]], directories: dict[str, list[ProjectRecord]]
) -> dict[int, tuple[ProjectRecord, dict[str, str]]]:
    """The changes of a burst per project: {id: (project, {relative path: kind})}; blocking
    (it looks for symlinks on the way). `directories` maps each real directory to its
    projects."""
    found: dict[int, tuple[ProjectRecord, dict[str, set[str]]]] = {}
    real: dict[str, bool] = {}  # folder -> whether no symlink leads to it
    for change, path in changes:
        folder = os.path.dirname(path)
        if folder not in real:
            real[folder] = os.path.realpath(folder) == folder
        if not real[folder]:
            continue
        for directory, projects in _owners(path, directories):
            relative = path[len(directory) + 1 :]
            if not relative or _SKIPPED in relative.split(os.sep):
                continue
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                continue  # a name that is not UTF-8 cannot go out as JSON
            for project in projects:
                entry = found.setdefault(project.id, (project, {}))
                entry[1].setdefault(relative.replace(os.sep, "/"), set()).add(_KINDS[change])
    return {
        key: (project, {path: _coalesced(kinds) for path, kinds in paths.items()})
        for key, (project, paths) in found.items()
    }


def _owners(
    path: str, directories: dict[str, list[ProjectRecord]]
) -> Iterable[tuple[str, list[ProjectRecord]]]:
    folder = os.path.dirname(path)
    while True:
        projects = directories.get(folder)
        if projects:
            yield folder, projects
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def files_changed_event(project: ProjectRecord, paths: dict[str, str]) -> Event:
    """The `project.files_changed` event for a burst: the paths in order, capped."""
    listed = sorted(paths.items())[:MAX_EVENT_PATHS]
    return project_event(
        project,
        EVENT_KIND,
        {
            "changes": [{"path": path, "change": kind} for path, kind in listed],
            "truncated": len(paths) > MAX_EVENT_PATHS,
            "total": len(paths),
        },
    )


@dataclass
class _Session:
    """One notifier over a set of directories, in its own thread."""

    directories: frozenset[str]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[set[tuple[Change, str]] | None] = field(default_factory=asyncio.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    ready: bool = False
    error: BaseException | None = None
    thread: threading.Thread | None = None
    finished: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.finished = self.loop.create_future()
        self.thread = threading.Thread(target=self._run, name="project-files-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for changes in watch(
                *sorted(self.directories),
                watch_filter=_kept,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self.stop,
                rust_timeout=RUST_TIMEOUT_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
                ignore_permission_denied=True,
            ):
                self.ready = True  # the notifier is built: its first answer came
                if changes:
                    self._hand_over(changes)
        except BaseException as exc:  # reported by the duty, which starts a new session
            self.error = exc
        finally:
            self._hand_over(None)

    def _hand_over(self, item: set[tuple[Change, str]] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            if item is None and self.finished is not None:
                self.loop.call_soon_threadsafe(_settle, self.finished)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    async def close(self) -> None:
        """Stop the notifier and wait (at most `STOP_SECONDS`) for its thread to be gone: its
        last hand-over comes just before the thread ends, not after."""
        self.stop.set()
        if self.finished is not None and self.alive:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.finished), STOP_SECONDS)
        if self.thread is not None and self.thread.is_alive():
            await asyncio.to_thread(self.thread.join, STOP_SECONDS)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ProjectFilesWatcher(SingletonDuty):
    """Publishes `project.files_changed` for changes in every project's directory, on the
    one instance holding `WATCH_LOCK` (see the module's docstring)."""

    def __init__(self, db: Database, bus: EventBus, *, refresh: float = 2.0) -> None:
        super().__init__(db, WATCH_LOCK, self._refresh, interval=refresh)
        self.bus = bus
        self.published = 0
        self._directories: dict[str, list[ProjectRecord]] = {}
        self._session: _Session | None = None
        self._consumer: asyncio.Task[None] | None = None

    @property
    def watching(self) -> frozenset[Path]:
        """The directories watched right now (empty until the notifier is ready)."""
        session = self._session
        if session is None or not session.ready or not session.alive:
            return frozenset()
        return frozenset(Path(directory) for directory in session.directories)

    async def _lead(self, conn: Connection) -> None:
        try:
            await super()._lead(conn)
        finally:  # the lock is lost, or the duty stops: another instance may watch now
            await self._close_session()

    async def _refresh(self) -> None:
        projects: list[ProjectRecord] = []
        while True:
            page = await list_projects(self.db, None, limit=_PAGE, offset=len(projects))
            projects.extend(page)
            if len(page) < _PAGE:
                break
        present = await asyncio.to_thread(_existing, projects)
        by_directory: dict[str, list[ProjectRecord]] = {}
        for project in present:
            by_directory.setdefault(str(project.directory), []).append(project)
        self._directories = by_directory
        session = self._session
        if session is not None and not session.alive:
            await self._close_session()
            if session.error is not None:
                raise RuntimeError(f"watching the projects' files failed: {session.error!r}")
        wanted = frozenset(by_directory)
        if self._session is None or self._session.directories != wanted:
            await self._close_session()
            if wanted:
                self._open_session(wanted)

    def _open_session(self, directories: frozenset[str]) -> None:
        session = _Session(directories, asyncio.get_running_loop())
        session.start()
        self._session = session
        self._consumer = asyncio.create_task(self._consume(session), name="project-files-events")
        log.debug("watching project directories", count=len(directories))

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        consumer, self._consumer = self._consumer, None
        if session is not None:
            session.stop.set()
        await cancel_and_wait(consumer)
        if session is not None:
            await session.close()  # the thread sees `stop` within STEP_MS

    async def _consume(self, session: _Session) -> None:
        while True:
            batch = await session.queue.get()
            if batch is None:
                return
            merged = set(batch)
            ended = False
            while not session.queue.empty():  # bursts that queued meanwhile go out together
                more = session.queue.get_nowait()
                if more is None:
                    ended = True
                    break
                merged |= more
            await self._publish(merged)
            if ended:
                return

    async def _publish(self, changes: set[tuple[Change, str]]) -> None:
        per_project = await asyncio.to_thread(changed_paths, changes, dict(self._directories))
        events = [files_changed_event(project, paths) for project, paths in per_project.values()]
        if not events:
            return
        try:
            self.published += await self.bus.publish_many(events, durable=True)
        except Exception as exc:  # a lost notice, not lost data: the files are on disk
            log.warning("project file events not published", error=repr(exc)[:300])


def _existing(projects: list[ProjectRecord]) -> list[ProjectRecord]:
    """The projects whose directory is there (a deleted project's may still be listed)."""
    return [project for project in projects if project.directory.is_dir()]
