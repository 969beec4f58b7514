"""The app's components, started in order and stopped in reverse, each reporting its health."""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from gathering.circles.jobs import offers_duty
from gathering.db.locks import SingletonDuty
from gathering.db.supervisor import EmbeddedSupervisor
from gathering.errors import GatheringError
from gathering.jobs import JobServices, JobWorker, stalled_jobs_duty
from gathering.llm.local_models import preload_default_model
from gathering.llm.registry import default_provider_name
from gathering.pipelines.jobs import deadlines_duty
from gathering.projects.watch import ProjectFilesWatcher
from gathering.scheduler.jobs import scheduler_duty
from gathering.tools.mcp import close_mcp_hub, mcp_hub
from gathering.tools.mcp.servers import config_servers

if TYPE_CHECKING:
    from gathering.api.state import AppState

log = structlog.get_logger(__name__)


@dataclass
class Health:
    """A component's health: ok, and a short detail (the reason when not ok)."""

    ok: bool
    detail: str = "ok"


class Component:
    """One part of the running server (database, event bus, job worker, scheduler, ...)."""

    name = "component"
    stop_timeout = 10.0

    async def start(self) -> None:
        """Acquire resources; raise to abort start-up."""

    async def stop(self) -> None:
        """Release resources; must finish within `stop_timeout`."""

    async def health(self) -> Health:
        """How the component is doing now."""
        return Health(True)


class Lifecycle:
    """Starts components in order, stops the started ones in reverse, each within its timeout."""

    def __init__(self, components: list[Component] | None = None) -> None:
        self.components: list[Component] = list(components or [])
        self._started: list[Component] = []

    def add(self, component: Component) -> None:
        """Append a component; it starts after, and stops before, those added earlier."""
        self.components.append(component)

    async def start(self) -> None:
        """Start every component; on failure stop those already started and re-raise."""
        for component in self.components:
            try:
                await component.start()
            except BaseException:
                log.error("component failed to start", component=component.name)
                await self.stop()
                raise
            self._started.append(component)
            log.debug("component started", component=component.name)

    async def stop(self) -> None:
        """Stop the started components in reverse order; a slow or failing one is logged."""
        while self._started:
            component = self._started.pop()
            try:
                await asyncio.wait_for(component.stop(), timeout=component.stop_timeout)
            except TimeoutError:
                log.error(
                    "component did not stop in time",
                    component=component.name,
                    timeout=component.stop_timeout,
                )
            except Exception:
                log.exception("component failed to stop", component=component.name)

    async def health(self) -> dict[str, Health]:
        """The health of every component (started or not)."""
        report = {}
        for component in self.components:
            try:
                report[component.name] = await component.health()
            except GatheringError as exc:
                report[component.name] = Health(False, str(exc))
            except Exception as exc:  # a probe must answer 503 with a reason, never 500
                log.warning("health check failed", component=component.name, error=repr(exc))
                report[component.name] = Health(False, f"health check failed: {exc!r}"[:300])
        return report


class DatabaseComponent(Component):
    """The database pool: connected and migrated at start, closed last."""

    name = "database"

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def start(self) -> None:
        await self.state.database()

    async def stop(self) -> None:
        await self.state.close()

    async def health(self) -> Health:
        db = await self.state.database()
        await db.fetch_val("SELECT 1")
        status = await db.migration_status()
        problem = status.problem()
        if problem:
            return Health(False, problem)
        return Health(True, f"migrations current, pgvector {'on' if status.vector else 'off'}")


class EmbeddedDatabaseComponent(Component):
    """Watches the embedded PostgreSQL this server started and restarts it when it dies
    (nothing to do on an external database)."""

    name = "embedded_database"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.supervisor: EmbeddedSupervisor | None = None

    async def start(self) -> None:
        db = await self.state.database()
        if db.embedded_pgdata is not None and not db.test:
            self.supervisor = EmbeddedSupervisor(db.embedded_pgdata)
            await self.supervisor.start()

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()

    async def health(self) -> Health:
        if self.supervisor is None:
            return Health(True, "not embedded")
        state = self.supervisor.state
        return Health(state.ok, state.detail)


class LocalModelComponent(Component):
    """Loads the local model in a worker thread at start-up, when new agents default to it,
    so the first chat does not wait for it; readiness never waits for it."""

    name = "local_model"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._loading: asyncio.Task[bool] | None = None

    async def start(self) -> None:
        if not self.state.settings.local_preload or importlib.util.find_spec("llama_cpp") is None:
            return
        try:
            if default_provider_name() != "local":
                return
        except GatheringError:
            return  # a bad GATHERING_DEFAULT_PROVIDER: agents creation says so
        self._loading = asyncio.create_task(
            asyncio.to_thread(preload_default_model), name="local-model-preload"
        )

    async def health(self) -> Health:
        if self._loading is None:
            return Health(True, "not preloaded")
        if not self._loading.done():
            return Health(True, "loading in the background")
        loaded = not self._loading.cancelled() and self._loading.result()
        return Health(True, "loaded" if loaded else "not loaded (see the log); chats load it")


class EventBusComponent(Component):
    """The event bus and its outbox listener: started after the database, stopped before it."""

    name = "events"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.stop_timeout = state.settings.shutdown_timeout + 5

    async def start(self) -> None:
        await self.state.event_bus()

    async def stop(self) -> None:
        await self.state.close_event_bus()

    async def health(self) -> Health:
        bus = self.state.running_event_bus()
        if bus is None or bus.listener is None:
            return Health(True, "not started")
        if not bus.listener.connected:
            return Health(False, "the outbox listener is not connected (reconnecting)")
        return Health(True, f"listening, cursor {bus.cursor}")


class McpComponent(Component):
    """This process's connections to MCP servers (made on first use): closed at shutdown, after
    the background work that may still call their tools, which stops stdio servers."""

    name = "mcp"

    async def start(self) -> None:
        """Read GATHERING_MCP_CONFIG now: a broken file stops the start, with why, instead
        of failing every turn later."""
        await config_servers()

    async def stop(self) -> None:
        await close_mcp_hub()

    async def health(self) -> Health:
        states = mcp_hub().states()
        down = sorted(name for name, state in states.items() if state == "down")
        detail = f"{len(states)} connected or connecting" if states else "no server in use"
        return Health(True, f"{detail}; reconnecting: {', '.join(down)}" if down else detail)


class BackgroundWorkComponent(Component):
    """Work that outlives its request (a streamed turn whose client left): stopped first, it
    gets the whole shutdown timeout to finish before the event bus and the database close."""

    name = "background"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.stop_timeout = state.settings.shutdown_timeout + 5

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        running = set(self.state.background)
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self.state.settings.shutdown_timeout)
        if pending:
            log.warning("background work cut off at shutdown", tasks=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)

    async def health(self) -> Health:
        return Health(True, f"{len(self.state.background)} running")


class DutyComponent(Component):
    """A `SingletonDuty` (leader-only work under an advisory lock) as a component.

    Its health is not ok while the lock cannot be checked, so readiness says why the duty
    is stopped.
    """

    def __init__(self, name: str, duty: SingletonDuty) -> None:
        self.name = name
        self.duty = duty

    async def start(self) -> None:
        await self.duty.start()

    async def stop(self) -> None:
        await self.duty.stop()

    async def health(self) -> Health:
        ok, detail = self.duty.health()
        return Health(ok, detail)


class JobsComponent(Component):
    """The job queue (always: requests queue jobs), the stalled-jobs, pipeline-deadlines,
    scheduler and project-files watch duties, and, unless `GATHERING_WORKER=off`, a worker in
    this process. On stop the worker takes no new job and its running jobs get the shutdown
    timeout to finish; those left go back to the queue."""

    name = "jobs"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.stop_timeout = state.settings.shutdown_timeout + 10
        self.worker: JobWorker | None = None
        self.duties: list[SingletonDuty] = []

    async def start(self) -> None:
        settings = self.state.settings
        queue = await self.state.job_queue()
        services = JobServices(await self.state.database(), await self.state.event_bus())
        self.duties = [
            stalled_jobs_duty(
                queue,
                services,
                stalled_after=settings.job_stalled_after,
                interval=settings.job_heartbeat_interval,
            ),
            deadlines_duty(services),
            scheduler_duty(services),
            offers_duty(services),
            ProjectFilesWatcher(services.db, await self.state.event_bus()),
        ]
        for duty in self.duties:
            await duty.start()
        if settings.worker == "embedded":
            self.worker = JobWorker.from_settings(queue, services, settings)
            await self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        for duty in self.duties:
            await duty.stop()
        await self.state.close_job_queue()

    async def health(self) -> Health:
        reports = [duty.health() for duty in self.duties]
        duties_ok = all(ok for ok, _ in reports)
        duties = ", ".join(
            f"{duty.key}: {detail}" for duty, (_, detail) in zip(self.duties, reports, strict=True)
        )
        if self.worker is None:
            return Health(duties_ok, f"worker off (GATHERING_WORKER=off); {duties or 'no duty'}")
        ok, detail = self.worker.health()
        return Health(ok and duties_ok, f"worker: {detail}; {duties}")
