"""Durable execution of pipeline runs: nodes run as jobs, one node attempt at a time.

A node's job claims the node (queued → running, its attempt counted), does the work outside
any transaction, and stores the outcome; then, in the same transaction, the nodes it unblocks
are queued (their jobs inserted with them) and the run ends when nothing is left. Every step
holds the run's row lock, so two nodes of one run finishing on two workers take turns, and the
attempt number fences a late writer (a worker that comes back after its node was taken over).

A job goes on: the first node its success makes ready (one it can run: `CHAINED_TYPES`) is
claimed by the same job in the same step instead of being queued, and run next; a chain costs
one step per node, and a plain chain's step (`settle_and_chain`) is one statement. A job
queued again after its worker died takes up the node it was on (`node_of_job`).

A worker killed mid-node leaves its node `running`; procrastinate queues the job again once
the worker's heartbeat is stale, and the claim then repeats the attempt if the node's effect
allows it (`read`, `write`), or makes the node wait for a person (`external`: the outcome is
unknown). Cancel, failure and timeouts ask the running nodes' jobs to abort (procrastinate's
NOTIFY: the worker cancels the node's task at once, on whichever instance it runs).
"""

from __future__ import annotations

import asyncio
import json
import random
import unicodedata
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from psycopg.types.json import Jsonb

from gathering.catalog.settings import setting_value
from gathering.db.named_queries import queries_of
from gathering.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConflictError,
    DatabaseError,
    GatheringError,
    InvalidInputError,
    NodeFailedError,
    NotFoundError,
    RateLimitedError,
)
from gathering.events import Event, EventBus, outbox
from gathering.jobs import enqueue
from gathering.pipelines.breaker import (
    BreakerPolicy,
    admit,
    check_breaker,
    record_failure,
    record_success,
)
from gathering.pipelines.conditions import evaluate
from gathering.pipelines.definition import Node, PipelineDefinition, RetryPolicy, parse_definition
from gathering.pipelines.handlers import NodeCall, effect_of, execute, fixed_target, target_for
from gathering.pipelines.node_config import (
    ApprovalConfig,
    DelayConfig,
    ParallelConfig,
    SubPipelineConfig,
)
from gathering.pipelines.runs import FINISHED, NodeRun, RunRecord, get_run
from gathering.pipelines.store import get_pipeline, get_version, pipeline_named
from gathering.pipelines.validation import check, execution_order
from gathering.tools.validation import field_path, schema_validator

if TYPE_CHECKING:
    from gathering.db import Database
    from gathering.db.database import Queries

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.pipelines")
NODE_TASK = "pipelines:run_node"
QUEUE = "pipelines"
NO_RETRY = RetryPolicy()
MAX_DEPTH = 8  # sub-pipelines within sub-pipelines
MAX_OUTPUT_CHARS = 1_000_000  # a node's output, as JSON
ORPHAN_GRACE = 5.0  # seconds a node's job may have ended before the sweep settles the node
DEADLINE_GRACE = 5.0  # seconds a live worker has to report its own node's timeout first
# Nodes a job may claim after the one it was queued for (they run in its process).
CHAINED_TYPES = frozenset({"agent", "tool", "condition", "action", "parallel"})
_T = TypeVar("_T")


@dataclass(frozen=True)
class Claim:
    """What a job holds of its node: the attempt (its idempotency key's number) and the claim
    number, which fences late writers (a crash repeat keeps the attempt, not the claim)."""

    attempt: int
    claims: int

    def holds(self, node: NodeRun | None) -> bool:
        """Whether the node is still running under this claim."""
        return node is not None and node.status == "running" and node.claims == self.claims


@dataclass(frozen=True)
class Claimed:
    """A node attempt a job has claimed: what it needs to run it."""

    run: RunRecord
    graph: Graph
    node: Node
    claim: Claim
    outputs: dict[str, Any]  # the outputs the node reads (none when it reads none)
    # Its target's breaker, read with the claim: (target, breaker_state's row or None).
    breaker: tuple[str, dict[str, Any] | None] | None = None


def storable(value: Any) -> Any:
    """`value` with NUL characters (which PostgreSQL's jsonb refuses) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


@dataclass(frozen=True)
class Graph:
    """A pinned version's definition, with its edges indexed."""

    definition: PipelineDefinition
    nodes: dict[str, Node]
    order: list[str]
    predecessors: dict[str, list[str]]
    successors: dict[str, list[str]]
    conditional: dict[str, bool]  # whether an edge into the node has a condition
    reading: frozenset[str]  # the nodes that read other nodes' outputs (`_reads_outputs`)
    # The node a job may claim in the one-statement step that settles each node (None:
    # the general step decides), see `_chained_after`.
    chained: dict[str, Node | None]

    @classmethod
    def of(cls, definition: PipelineDefinition) -> Graph:
        predecessors: dict[str, list[str]] = defaultdict(list)
        successors: dict[str, list[str]] = defaultdict(list)
        conditional: dict[str, bool] = {}
        for edge in definition.edges:
            predecessors[edge.target].append(edge.source)
            successors[edge.source].append(edge.target)
            if edge.condition:
                conditional[edge.target] = True
        nodes = {node.id: node for node in definition.nodes}
        reading = frozenset(node.id for node in definition.nodes if _reads_outputs(node))
        chained = {
            node.id: _chained_after(
                node, nodes, dict(predecessors), dict(successors), conditional, reading
            )
            for node in definition.nodes
        }
        return cls(
            definition,
            nodes,
            execution_order(definition),
            dict(predecessors),
            dict(successors),
            conditional,
            reading,
            chained,
        )


async def graph_of(db: Queries, pipeline_id: int, version: int) -> Graph:
    """The graph of a pinned version, read and parsed (`pinned_graph` remembers it)."""
    found = await get_version(db, pipeline_id, version)
    assert found.document is not None
    return Graph.of(parse_definition(found.document))


_GRAPHS: OrderedDict[tuple[str, int, int], Graph] = OrderedDict()
_GRAPHS_KEPT = 256


async def pinned_graph(db: Database, queries: Queries, pipeline_id: int, version: int) -> Graph:
    """`graph_of`, remembered per database, pipeline and version (a version never changes),
    so a node's steps do not read and parse the definition again."""
    key = (db.url, pipeline_id, version)
    found = _GRAPHS.get(key)
    if found is None:
        found = await graph_of(queries, pipeline_id, version)
        _GRAPHS[key] = found
        while len(_GRAPHS) > _GRAPHS_KEPT:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    return found


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GatheringError):
        body = {"code": exc.code, "message": exc.message}
        if exc.hint:
            body["hint"] = exc.hint
    elif isinstance(exc, TimeoutError):
        body = {"code": "timeout", "message": "the node did not finish within its timeout"}
    else:
        body = {"code": "node_failed", "message": f"{type(exc).__name__}: {exc}"[:2000]}
    return body


def _unknown(run_id: int, node_id: str) -> dict[str, Any]:
    return {
        "code": "outcome_unknown",
        "message": f"node {node_id} was interrupted during an external call: whether it took "
        "effect is unknown, so it is not repeated by itself",
        "hint": f"decide: POST /pipelines/runs/{run_id}/nodes/{node_id}/resolve with "
        '{"action": "retry"} or {"action": "skip"}',
    }


def _event(kind: str, run: RunRecord, body: dict[str, Any]) -> Event:
    """A `kind` event about `run` (its pipeline's subject), with `body`."""
    data = {"run_id": run.id, "pipeline_id": run.pipeline_id, **body}
    return Event(kind, data, subject=f"pipeline:{run.pipeline_id}", source="pipeline")


async def _queue_node(tx: Queries, run_id: int, node_id: str, at: datetime | None = None) -> int:
    """A job for node `node_id` of run `run_id` (at `at`, else now), in `tx`; its id."""
    return await enqueue(tx, NODE_TASK, {"run_id": run_id, "node_id": node_id}, queue=QUEUE, at=at)


def backoff_seconds(policy: RetryPolicy, attempt: int) -> float:
    """The wait before attempt `attempt + 1`: `backoff` doubled per attempt, capped at
    `max_backoff`, with jitter (between half and all of it)."""
    delay = min(policy.max_backoff, policy.backoff * 2 ** max(0, attempt - 1))
    return float(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret


def _should_retry(policy: RetryPolicy, attempt: int, code: str) -> bool:
    if attempt >= policy.max_attempts or code in ("cancelled", "outcome_unknown"):
        return False
    return not policy.retry_on or code in policy.retry_on


class Executor:
    """Starts runs and runs their nodes on `db`, publishing their events through `bus`."""

    def __init__(
        self, db: Database, bus: EventBus | None, *, breaker: BreakerPolicy | None = None
    ) -> None:
        self.db = db
        # Events are written to the outbox in each step's transaction; a bus that is not
        # listening (a command line's) still writes them.
        self.bus = bus if bus is not None else EventBus(db)
        self.breaker = breaker or BreakerPolicy.from_settings()

    # --- starting -----------------------------------------------------------------------

    async def start_run(
        self,
        pipeline_id: int,
        version: int,
        owner_id: int,
        run_input: dict[str, Any],
        *,
        trigger: str = "manual",
        parent: RunRecord | None = None,
        relation: str | None = None,
        reuse: dict[str, Any] | None = None,
        caller: tuple[int, str, int] | None = None,
    ) -> RunRecord:
        """Start a run of the pinned `version` with `run_input` (checked against the input
        schema); `reuse` gives nodes whose outputs are taken as they are (retry, fork);
        `caller` is the (run, node, depth) of a sub_pipeline node that waits for it. The
        first nodes are queued in the same transaction; returns at once."""
        graph = await pinned_graph(self.db, self.db, pipeline_id, version)
        definition = graph.definition
        check(definition)
        if trigger == "webhook" and not any(
            n.type == "trigger" and n.config.get("kind") == "webhook" for n in definition.nodes
        ):
            raise ConflictError(
                f"pipeline {pipeline_id} (version {version}) has no webhook trigger",
                hint="add a trigger node with config {kind: webhook} and save the pipeline",
            )
        if storable(run_input) != run_input:
            raise InvalidInputError(
                "the run's input holds a NUL character, which cannot be stored",
                hint="remove the \\u0000 characters from the input",
            )
        errors = sorted(
            schema_validator("input", definition.input_schema).iter_errors(run_input), key=str
        )
        if errors:
            where = field_path(errors[0].instance_path) if errors[0].instance_path else "(input)"
            raise InvalidInputError(
                f"the run's input does not match the pipeline's input_schema at {where}: "
                f"{errors[0].message}",
                details={"path": where},
            )
        cap = await setting_value(self.db, "pipeline_max_running_runs")  # read at use
        if await self.db.fetch_val(_SQL["running_runs_of"], owner_id) >= cap:
            raise RateLimitedError(
                f"you have {cap} pipeline runs running, as many as you may",
                retry_after=5,
                hint="wait for some to end, or cancel some (GATHERING_PIPELINE_MAX_RUNNING_RUNS)",
            )
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(
                _SQL["insert_run"],
                pipeline_id,
                version,
                owner_id,
                Jsonb(run_input),
                trigger,
                parent.id if parent else None,
                relation,
                definition.timeout_seconds,
                caller[0] if caller else None,
                caller[1] if caller else None,
                caller[2] if caller else 0,
            )
            assert row is not None
            run_id = int(row["id"])
            await tx.execute(_SQL["insert_node_runs"], run_id, graph.order)
            for node_id, output in (reuse or {}).items():
                await tx.execute(_SQL["reuse_node_run"], run_id, node_id, Jsonb(output))
            events = [self._run_event("started", RunRecord.from_row(row))]
            await self._advance(tx, RunRecord.from_row(row), graph, events)
            await self._publish(tx, events)
        return await get_run(self.db, run_id)

    # --- the node job -------------------------------------------------------------------

    async def run_node(
        self,
        run_id: int,
        node_id: str,
        job_id: int,
        *,
        shutting_down: Callable[[], bool],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        """Attempts of nodes of run `run_id` as job `job_id`: claim `node_id`, work, store the
        outcome, go on. When the outcome makes a next node ready, this job claims it in the
        same transaction and runs it too (a chain costs one transaction per node, not a job),
        unless its worker is `draining` (told to stop: the next node is queued for another)
        or the job is cancelled. `shutting_down`: the job was interrupted by its worker's
        stop (its node stays running, to be taken up again)."""
        claimed = await self._claim(run_id, node_id, job_id)
        job = asyncio.current_task()
        assert job is not None

        def going_on() -> bool:  # whether this job may take another node
            return job.cancelling() == 0 and not shutting_down() and not draining()

        while claimed is not None:
            claimed = await self._attempt(claimed, job_id, going_on, shutting_down)

    async def _attempt(
        self,
        claimed: Claimed,
        job_id: int,
        going_on: Callable[[], bool],
        shutting_down: Callable[[], bool],
    ) -> Claimed | None:
        """One attempt of a claimed node; the next node this job claimed, if any."""
        run, graph, node, claim = claimed.run, claimed.graph, claimed.node, claimed.claim
        call = NodeCall(
            self.db,
            self.bus,
            run.id,
            run.pipeline_id,
            run.owner_id,
            node,
            claim.attempt,
            run.input,
            claimed.outputs,
            graph.predecessors.get(node.id, []),
        )
        target: str | None = None
        tracked = False  # whether the target has a breaker row, which a success resets
        try:
            target = await target_for(call)
            if claimed.breaker is not None and claimed.breaker[0] == target:
                tracked = admit(claimed.breaker[1], target, self.breaker)
            elif target is not None:
                tracked = await check_breaker(self.db, target, self.breaker)
            async with asyncio.timeout(node.timeout_seconds):
                output = await execute(call)
        except BudgetExceededError as exc:  # not a failure: it waits for a raised budget
            await _to_the_end(self._wait_for_budget(run.id, node, claim, exc))
            return None
        except asyncio.CancelledError:
            if not shutting_down():  # a cancel: the run's, or this job's
                await _to_the_end(self._cancelled(run.id, node.id, claim))
            raise  # a shutdown leaves the node running: its job is queued again
        except Exception as exc:
            # Shielded: a cancel that lands meanwhile must not leave the outcome half-stored.
            await _to_the_end(self._failed(run.id, node, claim, exc, target))
            return None
        settle = self._settle(claimed, output, target, tracked, job_id, going_on)
        try:
            return await _to_the_end(settle)
        except _CancelledAfter as cancelled:
            after: Claimed | None = cancelled.result
            if after is not None:  # the next node it claimed never started
                if shutting_down():
                    await _to_the_end(self._release(after))
                else:
                    await _to_the_end(self._cancelled(run.id, after.node.id, after.claim))
            raise asyncio.CancelledError from None

    async def _settle(
        self,
        claimed: Claimed,
        output: Any,
        target: str | None,
        tracked: bool,
        job_id: int,
        going_on: Callable[[], bool],
    ) -> Claimed | None:
        """Store a successful attempt (one whose output cannot be stored fails instead); the
        next node this job claimed with it, if any."""
        run_id, node, claim = claimed.run.id, claimed.node, claimed.claim
        problem: GatheringError | None = None
        if len(json.dumps(output, default=str)) > MAX_OUTPUT_CHARS:
            problem = NodeFailedError(
                f"node {node.id}'s output is over {MAX_OUTPUT_CHARS:,} characters of JSON",
                code="output_too_large",
                hint="ask the tool or agent for less, or keep the data elsewhere",
            )
        else:
            try:
                closes = target if tracked else None  # a breaker row a success resets
                return await self._succeeded(claimed, output, closes, job_id, going_on)
            except DatabaseError as exc:
                log.error("a node's output could not be stored", run_id=run_id, node=node.id)
                problem = NodeFailedError(
                    f"node {node.id}'s output could not be stored: {exc.message}",
                    code="output_not_stored",
                )
        await self._failed(run_id, node, claim, problem, target)
        return None

    async def _claim(self, run_id: int, node_id: str, job_id: int) -> Claimed | None:
        async with self.db.transaction() as tx:
            run_row = await tx.fetch_one(_SQL["lock_run"], run_id)
            if run_row is None:
                return None  # deleted with its pipeline
            row = await tx.fetch_one(_SQL["node_run"], run_id, node_id)
            if row is None:
                return None
            if row["status"] in FINISHED:  # a job that went on to later nodes, run again
                row = await tx.fetch_one(_SQL["node_of_job"], run_id, job_id) or row
            node_run = NodeRun.from_row(row)
            node_id = node_run.node_id
            run = RunRecord.from_row(run_row)
            graph = await self._graph(tx, run)
            node = graph.nodes[node_id]
            called = node.type == "sub_pipeline" and node_run.status == "waiting"
            if node_run.finished or (node_run.job_id != job_id and not called):
                return None  # done already, or superseded by a newer job
            events: list[Event] = []
            if run.status != "running":
                await self._set(tx, run, node_id, "cancelled", events)
                await self._publish(tx, events)
                return None
            if called:  # the run it called has ended (or this is a stale wake-up)
                await self._called_run_ended(tx, run, node, node_run, events)
                await self._publish(tx, events)
                return None
            if node_run.status == "waiting":  # a delay's time, or an approval's expiry, came
                if node.type == "approval":
                    error = {
                        "code": "approval_expired",
                        "message": f"nobody answered {node_id} in time",
                    }
                    await self._fail_attempt(tx, run, node, node_run, error)
                    return None
                await self._set(tx, run, node_id, "succeeded", events, output={"waited": True})
                await self._advance(tx, run, graph, events, after=node_id)
                await self._publish(tx, events)
                return None
            if node.type in ("delay", "approval") and node_run.status == "queued":
                await self._wait(tx, run, node, events)
                await self._publish(tx, events)
                return None
            if node.type == "sub_pipeline" and node_run.status == "queued":
                await self._call(tx, run, node, events)
                await self._publish(tx, events)
                return None
            if node_run.status == "running":  # its worker died or stopped mid-attempt
                effect = await effect_of(self.db, run.owner_id, node)
                if effect == "external":
                    error = _unknown(run_id, node_id)
                    await self._set(tx, run, node_id, "waiting", events, error=error)
                    await self._publish(tx, events)
                    return None
                log.info(
                    "repeating an interrupted node", run_id=run_id, node=node_id, effect=effect
                )
            repeat = node_run.status == "running"  # the same attempt, and idempotency key
            claimed = await self._take(tx, run, graph, node_id, job_id, events, repeat=repeat)
            await self._publish(tx, events)
            return claimed

    async def _wait(self, tx: Queries, run: RunRecord, node: Node, events: list[Event]) -> None:
        """A delay waits for its time; an approval for a person (until its timeout, if any).
        A job scheduled for then wakes the node; no process waits."""
        wake: datetime | None = None
        if node.type == "delay":
            seconds: float | None = DelayConfig.model_validate(node.config).seconds
        else:
            config = ApprovalConfig.model_validate(node.config)
            seconds = config.timeout_seconds
            try:
                message = await self._render(tx, run, node, config.message)
            except NodeFailedError as exc:  # the template's mistake: the node fails
                error = {"code": exc.code, "message": exc.message}
                await self._set(tx, run, node.id, "failed", events, error=error, attempt=1)
                await self._end_run(tx, run, "failed", error | {"node": node.id}, events)
                return
            await tx.execute(
                _SQL["set_node_input"], run.id, node.id, Jsonb({"message": message[:20_000]})
            )
        job = None
        if seconds is not None:
            wake = datetime.now(UTC) + timedelta(seconds=seconds)
            job = await _queue_node(tx, run.id, node.id, wake)
        await self._set(tx, run, node.id, "waiting", events, job_id=job, wake_at=wake, attempt=1)

    async def _render(self, tx: Queries, run: RunRecord, node: Node, value: Any) -> Any:
        """`value` rendered for `node` (its first attempt) over the run's input and outputs."""
        outputs = await _outputs(tx, run.id)
        call = NodeCall(
            self.db,
            self.bus,
            run.id,
            run.pipeline_id,
            run.owner_id,
            node,
            1,
            run.input,
            outputs,
            [],
        )
        return await call.render(value)

    async def _call(self, tx: Queries, run: RunRecord, node: Node, events: list[Event]) -> None:
        """Start the run of the pipeline a sub_pipeline node names (the owner's), in this
        transaction; the node waits until that run ends."""
        config = SubPipelineConfig.model_validate(node.config)
        depth = run.depth
        error: dict[str, Any] | None = None
        try:
            if depth + 1 > MAX_DEPTH:
                raise InvalidInputError(
                    f"sub-pipelines nest more than {MAX_DEPTH} deep (do pipelines call each other?)"
                )
            if isinstance(config.pipeline, int):
                callee = await get_pipeline(tx, config.pipeline)
                if callee.owner_id != run.owner_id:
                    raise NotFoundError(f"no pipeline {config.pipeline}")
            else:
                callee = await pipeline_named(tx, run.owner_id, config.pipeline)
            child_input = await self._render(tx, run, node, config.input)
            async with self.db.transaction():  # a savepoint: a refused call leaves no trace
                child = await self.start_run(
                    callee.id,
                    callee.version,
                    run.owner_id,
                    child_input,
                    trigger="sub_pipeline",
                    caller=(run.id, node.id, depth + 1),
                )
        except GatheringError as exc:
            error = _error(exc)
        if error is not None:
            await self._set(tx, run, node.id, "failed", events, error=error, attempt=1)
            await self._end_run(tx, run, "failed", error | {"node": node.id}, events)
            return
        await tx.execute(_SQL["set_node_input"], run.id, node.id, Jsonb({"run_id": child.id}))
        await self._set(tx, run, node.id, "waiting", events, attempt=1)

    async def _called_run_ended(
        self, tx: Queries, run: RunRecord, node: Node, node_run: NodeRun, events: list[Event]
    ) -> None:
        child_id = (node_run.input or {}).get("run_id")
        child = await tx.fetch_one(_SQL["run_by_id"], child_id) if child_id else None
        if child is not None and child["status"] == "running":
            return  # not ended yet: a stale wake-up
        error: dict[str, Any]
        if child is None:  # deleted with its pipeline
            error = {
                "code": "sub_pipeline_failed",
                "message": f"run {child_id} of the called pipeline was deleted",
            }
        elif child["status"] == "succeeded":
            outputs = await _outputs(tx, child["id"])
            output = {"run_id": child["id"], "outputs": outputs}
            if len(json.dumps(output, default=str)) <= MAX_OUTPUT_CHARS:
                await self._set(tx, run, node.id, "succeeded", events, output=output)
                graph = await self._graph(tx, run)
                await self._advance(tx, run, graph, events, after=node.id)
                return
            error = {
                "code": "output_too_large",
                "message": f"the outputs of run {child['id']} are over "
                f"{MAX_OUTPUT_CHARS:,} characters of JSON",
            }
        else:
            cause = child["error"] or {}
            error = {
                "code": "sub_pipeline_failed",
                "message": f"run {child['id']} of the called pipeline {child['status']}: "
                f"{cause.get('message', '')}".rstrip(": "),
            }
        await self._fail_attempt(tx, run, node, node_run, error)

    async def _succeeded(
        self,
        claimed: Claimed,
        output: Any,
        tracked: str | None,
        job_id: int,
        going_on: Callable[[], bool],
    ) -> Claimed | None:
        run_id, node, claim = claimed.run.id, claimed.node, claimed.claim
        if tracked is not None:  # on its own, before the run's lock: locks never cross
            await record_success(self.db, tracked)
        # Decided before the step is stored: a cancel that comes after it finds the node this
        # job claims, and stops it.
        chain = job_id if going_on() else None
        settled = False
        after = claimed.graph.chained.get(node.id) if chain else None
        if after is not None:
            fast = await self._settle_and_chain(claimed, output, after, job_id)
            if isinstance(fast, Claimed):
                return fast
            # Settled with no claim (the run ended meanwhile, the claim alone failing): the
            # general step ends or goes on; nothing else is left for it to do.
            settled = fast
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, run_id, node.id)
            events: list[Event] = []
            if not settled:
                if not claim.holds(node_run):
                    return None  # taken over meanwhile (a timeout, a cancel): that stands
                await self._set(tx, run, node.id, "succeeded", events, output=output)
            next_claim = None
            if run.status == "running":
                graph = await self._graph(tx, run)
                next_claim = await self._advance(tx, run, graph, events, after=node.id, chain=chain)
            await self._publish(tx, events)
            return next_claim

    async def _settle_and_chain(
        self, claimed: Claimed, output: Any, after: Node, job_id: int
    ) -> Claimed | bool:
        """A chain's step in one statement: the node succeeds and this job claims `after`,
        the only node after it. The claim of `after`; else whether the node was settled."""
        run, node = claimed.run, claimed.node
        done = _event(
            "pipeline_node.succeeded",
            run,
            {"node": node.id, "status": "succeeded", "attempt": claimed.claim.attempt},
        )
        running = _event("pipeline_node.running", run, {"node": after.id, "status": "running"})
        target = fixed_target(after, run.owner_id)
        row = await self.db.fetch_one(
            _SQL["settle_and_chain"],
            run.id,
            node.id,
            claimed.claim.claims,
            Jsonb(storable(output)),
            after.id,
            job_id,
            after.timeout_seconds,
            outbox.payload([done]),
            outbox.payload([running]),
            target,
        )
        assert row is not None
        if row["attempt"] is None:
            self.bus.count_written(int(row["settled"]))
            return bool(row["settled"])
        self.bus.count_written(2)
        claim = Claim(row["attempt"], row["claims"])
        breaker = None if target is None else (target, row if row["target"] else None)
        return Claimed(run, claimed.graph, after, claim, {}, breaker)

    async def _failed(
        self, run_id: int, node: Node, claim: Claim, exc: BaseException, target: str | None
    ) -> None:
        error = _error(exc)
        if not isinstance(exc, GatheringError | TimeoutError):
            log.error("a pipeline node failed", run_id=run_id, node=node.id, exc_info=exc)
        if target is not None and not isinstance(exc, CircuitOpenError):
            # On its own, before the run's lock: a breaker row and run rows are never locked
            # in two orders by two transactions.
            if await record_failure(self.db, target, self.breaker) == "open":
                log.warning("circuit opened", target=target)
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, run_id, node.id)
            if not claim.holds(node_run):
                return
            assert node_run is not None
            await self._fail_attempt(tx, run, node, node_run, error)

    async def _wait_for_budget(
        self, run_id: int, node: Node, claim: Claim, exc: BudgetExceededError
    ) -> None:
        """A node whose model call a budget refused waits (it does not fail): once an admin
        raises the budget, answering it `retry` runs it again (or `skip` goes on without it)."""
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, run_id, node.id)
            if not claim.holds(node_run):
                return
            events: list[Event] = []
            error = _error(exc) | {"details": exc.details}
            await self._set(tx, run, node.id, "waiting", events, error=error)
            await self._publish(tx, events)

    async def _fail_attempt(
        self,
        tx: Queries,
        run: RunRecord,
        node: Node,
        node_run: NodeRun,
        error: dict[str, Any],
    ) -> None:
        """A failed attempt: queued again after its backoff when its retry policy allows, else
        the node fails and so does the run."""
        events: list[Event] = []
        policy = node.retry or NO_RETRY
        if run.status == "running" and _should_retry(policy, node_run.attempt, error["code"]):
            wait = backoff_seconds(policy, node_run.attempt)
            at = datetime.now(UTC) + timedelta(seconds=wait)
            job = await _queue_node(tx, run.id, node.id, at)
            await self._set(
                tx, run, node.id, "queued", events, job_id=job, error=error, retry_in=wait
            )
        else:
            await self._set(tx, run, node.id, "failed", events, error=error)
            if run.status == "running":
                await self._end_run(tx, run, "failed", error | {"node": node.id}, events)
        await self._publish(tx, events)

    async def _cancelled(self, run_id: int, node_id: str, claim: Claim) -> None:
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, run_id, node_id)
            if not claim.holds(node_run):
                return
            assert node_run is not None
            events: list[Event] = []
            if run.status == "running":  # this node's job alone was cancelled: the node fails
                graph = await self._graph(tx, run)
                error = {"code": "cancelled", "message": f"node {node_id}'s job was cancelled"}
                await self._fail_attempt(tx, run, graph.nodes[node_id], node_run, error)
                return
            await self._set(tx, run, node_id, "cancelled", events)
            await self._publish(tx, events)

    async def _release(self, claimed: Claimed) -> None:
        """A node this job claimed and never started goes back to the queue, as if never
        claimed (a worker's shutdown came between)."""
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, claimed.run.id, claimed.node.id)
            if not claimed.claim.holds(node_run) or run.status != "running":
                return
            events: list[Event] = []
            job = await _queue_node(tx, run.id, claimed.node.id)
            await self._set(tx, run, claimed.node.id, "queued", events, job_id=job, attempt=-1)
            await self._publish(tx, events)

    # --- run-wide changes ---------------------------------------------------------------

    async def cancel_run(self, run_id: int, *, reason: str = "cancelled by request") -> RunRecord:
        """End a running run as cancelled: queued nodes never run, running ones are stopped
        on whichever worker runs them (within a second), their partial work kept."""
        async with self.db.transaction() as tx:
            run, _ = await self._locked(tx, run_id, None)
            if run.status != "running":
                raise ConflictError(
                    f"run {run_id} is {run.status}: there is nothing to cancel",
                    hint="retry or fork it to run it again",
                )
            events: list[Event] = []
            await self._end_run(
                tx, run, "cancelled", {"code": "cancelled", "message": reason}, events
            )
            await self._publish(tx, events)
        return await get_run(self.db, run_id)

    async def retry_run(self, run_id: int) -> RunRecord:
        """A new run of a failed or cancelled run's version and input, linked to it, that
        reuses every output that succeeded: it goes on from the node that failed. The
        original run is not changed."""
        original = await get_run(self.db, run_id)
        if original.status not in ("failed", "cancelled"):
            raise ConflictError(
                f"run {run_id} is {original.status}: only a failed or cancelled run is retried",
                hint="fork it to run part of it again with other input",
            )
        reuse = {
            name: node.output for name, node in original.nodes.items() if node.status == "succeeded"
        }
        return await self.start_run(
            original.pipeline_id,
            original.version,
            original.owner_id,
            original.input,
            trigger="retry",
            parent=original,
            relation="retry",
            reuse=reuse,
        )

    async def fork_run(
        self, run_id: int, node_id: str, run_input: dict[str, Any] | None = None
    ) -> RunRecord:
        """A new run, linked to run `run_id`, that reuses the outputs of the nodes before
        `node_id` (triggers take the new input instead) and runs `node_id` and the rest again,
        with `run_input` (default: the original input)."""
        original = await get_run(self.db, run_id)
        graph = await pinned_graph(self.db, self.db, original.pipeline_id, original.version)
        if node_id not in graph.nodes:
            raise NotFoundError(
                f"run {run_id}'s pipeline has no node {node_id!r}",
                hint=f"its nodes: {', '.join(graph.order)}",
            )
        ancestors: set[str] = set()
        frontier = list(graph.predecessors.get(node_id, []))
        while frontier:
            name = frontier.pop()
            if name not in ancestors:
                ancestors.add(name)
                frontier.extend(graph.predecessors.get(name, []))
        reuse = {
            name: node.output
            for name, node in original.nodes.items()
            if name in ancestors
            and node.status == "succeeded"
            and graph.nodes[name].type != "trigger"
        }
        return await self.start_run(
            original.pipeline_id,
            original.version,
            original.owner_id,
            original.input if run_input is None else run_input,
            trigger="fork",
            parent=original,
            relation="fork",
            reuse=reuse,
        )

    async def resolve(
        self, run_id: int, node_id: str, action: str, *, by: int | None = None, comment: str = ""
    ) -> RunRecord:
        """A person's answer for a waiting node: an approval node is `approve`d (its output
        says who and their comment) or `deny`ed (it fails, `approval_denied`); a node whose
        outcome is unknown is run again (`retry`) or taken as done without output (`skip`)."""
        async with self.db.transaction() as tx:
            run, node_run = await self._locked(tx, run_id, node_id)
            graph = await self._graph(tx, run)
            if node_run is None or node_id not in graph.nodes:
                raise NotFoundError(f"run {run_id} has no node {node_id!r}")
            node = graph.nodes[node_id]
            allowed = ("approve", "deny") if node.type == "approval" else ("retry", "skip")
            unknown = node_run.error is not None and node_run.error.get("code") in (
                "outcome_unknown",
                "budget_exceeded",
            )
            if (
                run.status != "running"
                or node_run.status != "waiting"
                or (node.type != "approval" and not unknown)
            ):
                raise ConflictError(
                    f"node {node_id} of run {run_id} is not waiting for a decision",
                    hint="approval nodes, nodes whose outcome is unknown and nodes a budget "
                    "refused wait for one",
                )
            if action not in allowed:
                raise InvalidInputError(
                    f"{action!r} does not answer node {node_id}", hint=f"use {' or '.join(allowed)}"
                )
            events: list[Event] = []
            if node_run.job_id is not None:  # an approval's expiry: no longer due
                await tx.fetch_one(_SQL["cancel_job"], node_run.job_id)
            if action == "retry":
                await self._requeue(tx, run, node_id, events)
            elif action == "deny":
                error = {
                    "code": "approval_denied",
                    "message": f"{node_id} was denied: {comment}".rstrip(": "),
                }
                await self._fail_attempt(tx, run, node, node_run, error)
                return await get_run(self.db, run_id)
            else:
                output = (
                    {"approved": True, "by": by, "comment": comment}
                    if action == "approve"
                    else None
                )
                await self._set(tx, run, node_id, "succeeded", events, output=output)
                await self._advance(tx, run, graph, events, after=node_id)
            await self._publish(tx, events)
        return await get_run(self.db, run_id)

    async def enforce_deadlines(self, limit: int = 100) -> int:
        """Fail runs past their deadline; settle node attempts past theirs whose worker did
        not report it (it died), and nodes whose job ended without settling them; how many it
        handled. Run by a singleton duty."""
        rows = await self.db.fetch_all(_SQL["overdue_runs"], limit, DEADLINE_GRACE)
        for row in rows:
            async with self.db.transaction() as tx:
                run, node_run = await self._locked(tx, row["id"], row["node_id"])
                if run.status != "running":
                    continue
                events: list[Event] = []
                if row["what"] == "run":
                    error = {
                        "code": "run_timeout",
                        "message": "the run did not finish within its timeout",
                    }
                    await self._end_run(tx, run, "failed", error, events)
                    await self._publish(tx, events)
                elif node_run is not None and node_run.status == "running":
                    if node_run.job_id is not None:
                        await tx.fetch_one(_SQL["cancel_job"], node_run.job_id)
                    error = {
                        "code": "timeout",
                        "message": "the node did not finish within its timeout",
                    }
                    await self._interrupted(tx, run, node_run, error)
        stranded = await self._wake_stranded_callers(limit)
        orphans = await self.db.fetch_all(_SQL["orphaned_nodes"], limit, ORPHAN_GRACE)
        for row in orphans:
            async with self.db.transaction() as tx:
                run, node_run = await self._locked(tx, row["run_id"], row["node_id"])
                if node_run is None or node_run.finished or node_run.job_id != row["job_id"]:
                    continue  # settled meanwhile
                await self._orphaned(tx, run, node_run, row["job_status"])
        return len(rows) + stranded + len(orphans)

    async def _wake_stranded_callers(self, limit: int) -> int:
        """Settle sub_pipeline nodes whose called run ended (or was deleted) without waking
        them; how many."""
        rows = await self.db.fetch_all(_SQL["stranded_callers"], limit, ORPHAN_GRACE)
        for row in rows:
            async with self.db.transaction() as tx:
                run, node_run = await self._locked(tx, row["run_id"], row["node_id"])
                if run.status != "running" or node_run is None or node_run.status != "waiting":
                    continue
                graph = await self._graph(tx, run)
                events: list[Event] = []
                node = graph.nodes[node_run.node_id]
                await self._called_run_ended(tx, run, node, node_run, events)
                await self._publish(tx, events)
        return len(rows)

    async def _orphaned(self, tx: Queries, run: RunRecord, node_run: NodeRun, job: str) -> None:
        """Settle a node whose job ended without doing so."""
        events: list[Event] = []
        graph = await self._graph(tx, run)
        node = graph.nodes[node_run.node_id]
        if run.status != "running":
            await self._set(tx, run, node.id, "cancelled", events)
            await self._publish(tx, events)
        elif job in ("cancelled", "aborted"):  # a person cancelled the node's job
            error = {"code": "cancelled", "message": f"node {node.id}'s job was cancelled"}
            await self._fail_attempt(tx, run, node, node_run, error)
        elif node_run.status == "running":
            error = {"code": "interrupted", "message": f"node {node.id}'s job ended mid-attempt"}
            await self._interrupted(tx, run, node_run, error, repeat=True)
        else:  # its job failed before it claimed the node: queue it again
            await self._requeue(tx, run, node.id, events)
            await self._publish(tx, events)

    async def _interrupted(
        self,
        tx: Queries,
        run: RunRecord,
        node_run: NodeRun,
        error: dict[str, Any],
        *,
        repeat: bool = False,
    ) -> None:
        """An attempt whose worker is gone: an `external` node waits for a person (its outcome
        is unknown); another fails the attempt (its retry policy decides), or with `repeat`
        runs again as the same attempt."""
        events: list[Event] = []
        graph = await self._graph(tx, run)
        node = graph.nodes[node_run.node_id]
        if await effect_of(self.db, run.owner_id, node) == "external":
            await self._set(tx, run, node.id, "waiting", events, error=_unknown(run.id, node.id))
            await self._publish(tx, events)
        elif repeat:  # still running, under a new job: its claim repeats the same attempt
            job = await _queue_node(tx, run.id, node.id)
            await self._set(tx, run, node.id, "running", events, job_id=job)
            await self._publish(tx, events)
        else:
            await self._fail_attempt(tx, run, node, node_run, error)

    async def _requeue(
        self, tx: Queries, run: RunRecord, node_id: str, events: list[Event]
    ) -> None:
        job = await _queue_node(tx, run.id, node_id)
        await self._set(tx, run, node_id, "queued", events, job_id=job)

    # --- helpers ------------------------------------------------------------------------

    async def _graph(self, queries: Queries, run: RunRecord) -> Graph:
        """The graph of the version `run` pinned."""
        return await pinned_graph(self.db, queries, run.pipeline_id, run.version)

    async def _locked(
        self, tx: Queries, run_id: int, node_id: str | None
    ) -> tuple[RunRecord, NodeRun | None]:
        row = await tx.fetch_one(_SQL["lock_run"], run_id)
        if row is None:
            raise InvalidInputError(f"no pipeline run {run_id}")
        node_row = await tx.fetch_one(_SQL["node_run"], run_id, node_id) if node_id else None
        return RunRecord.from_row(row), NodeRun.from_row(node_row) if node_row else None

    async def _set(
        self,
        tx: Queries,
        run: RunRecord,
        node_id: str,
        status: str,
        events: list[Event],
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        job_id: int | None = None,
        wake_at: datetime | None = None,
        deadline_in: float | None = None,
        attempt: int = 0,
        claim: bool = False,
        retry_in: float | None = None,
    ) -> NodeRun:
        row = await tx.fetch_one(
            _SQL["set_node"],
            run.id,
            node_id,
            status,
            None if output is None else Jsonb(storable(output)),
            None if error is None else Jsonb(storable(error)),
            job_id,
            wake_at,
            deadline_in,
            attempt,
            int(claim),
        )
        assert row is not None
        updated = NodeRun.from_row(row)
        body: dict[str, Any] = {"node": node_id, "status": status, "attempt": updated.attempt}
        if error is not None:
            body["error"] = error
        if retry_in is not None:
            body["retry_in"] = round(retry_in, 3)
        kind = "retrying" if retry_in is not None else status
        events.append(_event(f"pipeline_node.{kind}", run, body))
        return updated

    def _run_event(self, kind: str, run: RunRecord, error: dict[str, Any] | None = None) -> Event:
        body: dict[str, Any] = {"status": kind if kind != "started" else "running"}
        if error is not None:
            body["error"] = error
        return _event(f"pipeline_run.{kind}", run, body)

    async def _end_run(
        self,
        tx: Queries,
        run: RunRecord,
        status: str,
        error: dict[str, Any] | None,
        events: list[Event],
    ) -> None:
        """End `run`: nodes not started are skipped (cancelled when the run is), running
        nodes' jobs are asked to abort."""
        row = await tx.fetch_one(
            _SQL["finish_run"], run.id, status, None if error is None else Jsonb(error)
        )
        if row is None:
            return
        for job in await tx.fetch_all(_SQL["open_node_jobs"], run.id):
            await tx.fetch_one(_SQL["cancel_job"], job["job_id"])
        for callee in await tx.fetch_all(_SQL["running_callees"], run.id):
            called = await tx.fetch_one(_SQL["lock_run"], callee["id"])
            if called is not None and called["status"] == "running":
                reason = {
                    "code": "cancelled",
                    "message": f"the run that called it ({run.id}) ended",
                }
                await self._end_run(tx, RunRecord.from_row(called), "cancelled", reason, events)
        if row["caller_run_id"] is not None:  # a sub-pipeline: its caller's node goes on
            await _queue_node(tx, row["caller_run_id"], row["caller_node_id"])
        left = "cancelled" if status == "cancelled" else "skipped"
        for stopped in await tx.fetch_all(_SQL["stop_open_nodes"], run.id, left):
            body = {"node": stopped["node_id"], "status": left}
            events.append(_event(f"pipeline_node.{left}", run, body))
        events.append(self._run_event(status, RunRecord.from_row(row), error))

    async def _advance(
        self,
        tx: Queries,
        run: RunRecord,
        graph: Graph,
        events: list[Event],
        after: str | None = None,
        chain: int | None = None,
    ) -> Claimed | None:
        """Queue the nodes whose turn has come, skip those that will never run, and end the
        run when no node is left to run. Only the nodes after `after` (the node that just
        finished; None: every node) are looked at, so a step costs what its neighbours do,
        not what the whole run does. With `chain` (a job's id), that job claims the first
        node whose turn came and that it can run (`CHAINED_TYPES`) instead of queueing it."""
        run_id = run.id
        ready: list[str] = []
        statuses: dict[str, str] = {}
        outputs: dict[str, Any] = {}
        every_output = False
        waiting = deque(graph.order if after is None else graph.successors.get(after, []))
        if after is None:  # every node is looked at: one query for all their states
            await self._states(tx, run_id, graph.order, statuses, outputs)
        while waiting:
            node_id = waiting.popleft()
            needed = [node_id, *graph.predecessors.get(node_id, [])]
            unknown = [name for name in needed if name not in statuses]
            if unknown:
                await self._states(tx, run_id, unknown, statuses, outputs)
            if statuses[node_id] != "pending":
                continue
            if not every_output and graph.conditional.get(node_id):
                outputs |= await _outputs(tx, run_id)  # a condition may read any output
                every_output = True
            try:
                decision = self._decide(graph, node_id, statuses, outputs, run.input)
            except InvalidInputError as exc:
                error = {"code": "condition_error", "message": exc.message, "node": node_id}
                await self._end_run(tx, run, "failed", error, events)
                return None
            if decision == "wait":
                continue
            if decision == "skip":
                await self._set(tx, run, node_id, "skipped", events)
                statuses[node_id] = "skipped"
                waiting.extend(graph.successors.get(node_id, []))  # skips spread
            else:
                ready.append(node_id)
                statuses[node_id] = "queued"
        claimed: Claimed | None = None
        for node_id in ready:
            if chain and not claimed and graph.nodes[node_id].type in CHAINED_TYPES:
                claimed = await self._take(tx, run, graph, node_id, chain, events)
            else:
                await self._requeue(tx, run, node_id, events)
        if ready:  # the run goes on
            return claimed
        progress = await tx.fetch_one(_SQL["run_progress"], run_id)
        assert progress is not None
        if progress["open"] == 0:
            failed = progress["failed"]
            failure: dict[str, Any] | None = (
                {"code": "node_failed", "node": failed, "message": "a node failed"}
                if failed
                else None
            )
            await self._end_run(tx, run, "failed" if failed else "succeeded", failure, events)
        return None

    @staticmethod
    async def _states(
        tx: Queries,
        run_id: int,
        node_ids: list[str],
        statuses: dict[str, str],
        outputs: dict[str, Any],
    ) -> None:
        """Read the statuses of `node_ids` into `statuses`, and the outputs of those that
        succeeded into `outputs`."""
        for row in await tx.fetch_all(_SQL["node_states"], run_id, node_ids):
            statuses[row["node_id"]] = row["status"]
            if row["status"] == "succeeded":
                outputs[row["node_id"]] = row["output"]

    async def _take(
        self,
        tx: Queries,
        run: RunRecord,
        graph: Graph,
        node_id: str,
        job_id: int,
        events: list[Event],
        *,
        repeat: bool = False,
    ) -> Claimed:
        """Node `node_id` claimed by job `job_id`: its next attempt, or with `repeat` the
        same one again (an interrupted attempt keeps its number and idempotency key)."""
        node = graph.nodes[node_id]
        updated = await self._set(
            tx,
            run,
            node_id,
            "running",
            events,
            job_id=job_id,
            attempt=0 if repeat else 1,
            claim=True,
            deadline_in=node.timeout_seconds,
        )
        outputs = await _outputs(tx, run.id) if node.id in graph.reading else {}
        return Claimed(run, graph, node, Claim(updated.attempt, updated.claims), outputs)

    @staticmethod
    def _decide(
        graph: Graph,
        node_id: str,
        statuses: dict[str, str],
        outputs: dict[str, Any],
        run_input: dict[str, Any],
    ) -> str:
        """`run`, `skip` or `wait` for a pending node, from its predecessors."""
        before = graph.predecessors.get(node_id, [])
        if not before:
            return "run"
        active = 0
        for source in before:
            if statuses[source] == "succeeded" and _edge_taken(
                graph, source, node_id, outputs, run_input
            ):
                active += 1
        finished = all(statuses[source] in FINISHED for source in before)
        node = graph.nodes[node_id]
        if node.type == "parallel":  # the join: all branches, any one, or n of them
            join = ParallelConfig.model_validate(node.config)
            if (join.join == "any" and active) or (join.join == "n" and active >= (join.n or 1)):
                return "run"
            if not finished:
                return "wait"
            return "run" if join.join == "all" and active else "skip"
        if not finished:
            return "wait"
        return "run" if active else "skip"

    async def _publish(self, tx: Queries, events: list[Event]) -> None:
        if events:
            await self.bus.publish_many(events, tx=tx)


class _CancelledAfter(asyncio.CancelledError):
    """A cancel that came while a step ran to its end; `result` is the step's."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


async def _to_the_end(step: Coroutine[Any, Any, _T]) -> _T:
    """Run `step` (storing an outcome) to its end even when the job is cancelled meanwhile (a
    run's cancel, a worker's shutdown): the cancel takes effect once the outcome is stored, so
    the process never stops with it half-written or unwritten. The cancel is then raised as a
    `_CancelledAfter` that carries the step's result."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # once or more: wait for the step all the same
    result = task.result()  # its own error, if it failed
    if cancelled:
        raise _CancelledAfter(result)
    return result


def _chained_after(
    node: Node,
    nodes: dict[str, Node],
    predecessors: dict[str, list[str]],
    successors: dict[str, list[str]],
    conditional: dict[str, bool],
    reading: frozenset[str],
) -> Node | None:
    """The node a job may claim in the step that settles `node` (one statement, see
    `settle_and_chain`): the only node after it, with no other node before it, reached by an
    edge with no condition, one the job can run that reads no outputs. None when the general
    step must decide (a condition, a join, a fork, the run's end)."""
    after = successors.get(node.id, [])
    if len(after) != 1 or node.type == "condition":
        return None
    candidate = nodes[after[0]]
    if (
        predecessors.get(candidate.id) != [node.id]
        or conditional.get(candidate.id)
        or candidate.type not in CHAINED_TYPES
        or candidate.id in reading
    ):
        return None
    return candidate


def _reads_outputs(node: Node) -> bool:
    """Whether running `node` may read other nodes' outputs (a join's, or a template's or an
    expression's; names are compared as Python reads them, after NFKC normalisation, so the
    full-width spelling of `outputs` counts)."""
    if node.type == "parallel":
        return True
    text = unicodedata.normalize("NFKC", json.dumps(node.config, ensure_ascii=False))
    return "outputs" in text


async def _outputs(tx: Queries, run_id: int) -> dict[str, Any]:
    """The outputs of run `run_id`'s nodes that succeeded."""
    rows = await tx.fetch_all(_SQL["succeeded_outputs"], run_id)
    return {row["node_id"]: row["output"] for row in rows}


def _edge_taken(
    graph: Graph, source: str, target: str, outputs: dict[str, Any], run_input: dict[str, Any]
) -> bool:
    """Whether the edge `source` → `target` carries the run on: a condition node's edges
    when it was true, and an edge's own condition when it holds."""
    if graph.nodes[source].type == "condition" and outputs.get(source) is not True:
        return False
    for edge in graph.definition.edges:
        if edge.source == source and edge.target == target and edge.condition:
            return bool(evaluate(edge.condition, run_input, outputs))
    return True
