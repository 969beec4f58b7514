"""Pipeline runs as stored: a run pins its pipeline's version; each node has a row with its
status, attempts, input, output, error and timings (migration 0015)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import NotFoundError

_SQL = queries_of("gathering.pipelines")
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
NODE_STATUSES = (
    "pending",
    "queued",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
)
FINISHED = frozenset({"succeeded", "failed", "skipped", "cancelled"})
"""Node statuses that do not change any more (in this run)."""


@dataclass(frozen=True)
class NodeRun:
    """One node of one run."""

    node_id: str
    status: str
    attempt: int
    claims: int
    input: Any
    output: Any
    error: dict[str, Any] | None
    job_id: int | None
    wake_at: datetime | None
    deadline: datetime | None
    reused: bool
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NodeRun:
        return cls(
            node_id=row["node_id"],
            status=row["status"],
            attempt=int(row["attempt"]),
            claims=int(row.get("claims") or 0),
            input=row["input"],
            output=row["output"],
            error=row["error"],
            job_id=row["job_id"],
            wake_at=row["wake_at"],
            deadline=row["deadline"],
            reused=bool(row["reused"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class RunRecord:
    """A run, with its nodes when loaded by `get_run`."""

    id: int
    pipeline_id: int
    version: int
    owner_id: int
    status: str
    input: dict[str, Any]
    error: dict[str, Any] | None
    trigger: str
    parent_run_id: int | None
    relation: str | None
    deadline: datetime | None
    created_at: datetime
    finished_at: datetime | None
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    depth: int = 0  # how deep in sub-pipeline calls

    @classmethod
    def from_row(cls, row: dict[str, Any], nodes: list[NodeRun] | None = None) -> RunRecord:
        return cls(
            id=int(row["id"]),
            pipeline_id=int(row["pipeline_id"]),
            version=int(row["version"]),
            owner_id=int(row["owner_id"]),
            status=row["status"],
            input=dict(row["input"] or {}),
            error=row["error"],
            trigger=row["trigger"],
            parent_run_id=row["parent_run_id"],
            relation=row["relation"],
            deadline=row["deadline"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            nodes={node.node_id: node for node in nodes or []},
            depth=int(row.get("depth") or 0),
        )

    @property
    def outputs(self) -> dict[str, Any]:
        """The outputs of the nodes that succeeded."""
        return {
            name: node.output for name, node in self.nodes.items() if node.status == "succeeded"
        }


async def get_run(db: Queries, run_id: int) -> RunRecord:
    """Run `run_id` with its nodes; `NotFoundError` when there is none."""
    row = await db.fetch_one(_SQL["run_by_id"], run_id)
    if row is None:
        raise NotFoundError(f"no pipeline run {run_id}")
    nodes = [NodeRun.from_row(item) for item in await db.fetch_all(_SQL["node_runs"], run_id)]
    return RunRecord.from_row(row, nodes)


async def list_owner_runs(
    db: Queries,
    owner_id: int | None,
    *,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunRecord]:
    """Runs of `owner_id`'s pipelines (every owner's when None), `status` ones only when
    given, newest first (without their nodes)."""
    rows = await db.fetch_all(_SQL["runs_of_owner"], owner_id, status, limit, offset)
    return [RunRecord.from_row(row) for row in rows]


async def list_runs(
    db: Queries, pipeline_id: int, *, limit: int = 50, offset: int = 0
) -> list[RunRecord]:
    """A pipeline's runs, newest first (without their nodes)."""
    rows = await db.fetch_all(_SQL["runs_of_pipeline"], pipeline_id, limit, offset)
    return [RunRecord.from_row(row) for row in rows]
