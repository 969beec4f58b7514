"""A pipeline's definition: the document people write (JSON or YAML), check and store.

    name: triage
    input_schema: {type: object, properties: {ticket: {type: string}}, required: [ticket]}
    nodes:
      - {id: start, type: trigger, config: {kind: manual}}
      - {id: sort, type: agent, config: {agent: triager, prompt: "Sort: {{ input.ticket }}"}}
    edges:
      - {from: start, to: sort}

Nodes carry a `type` and a `config` of that type (see `node_config`); edges go `from` one node
`to` another, optionally under a `condition`. `parse_definition` reads a stored or uploaded
document into a `PipelineDefinition`; `validate` (see `validation`) says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gathering.errors import InvalidInputError

NodeType = Literal[
    "trigger",
    "agent",
    "tool",
    "condition",
    "action",
    "parallel",
    "delay",
    "approval",
    "sub_pipeline",
]
NODE_TYPES: tuple[str, ...] = get_args(NodeType)
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_NODES = 1_000
MAX_EDGES = 5_000
MAX_TEXT = 20_000  # a prompt, an expression, a description

NodeId = Annotated[str, Field(pattern=ID_PATTERN, description="Unique in the pipeline")]


class RetryPolicy(BaseModel):
    """How a failed node is tried again: up to `max_attempts` in all, waiting `backoff`
    seconds doubled each time (with jitter, at most `max_backoff`), for the error codes in
    `retry_on` (empty: any error that may pass)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=1, ge=1, le=20)
    backoff: float = Field(default=1.0, ge=0, le=3600)
    max_backoff: float = Field(default=300.0, ge=0, le=86_400)
    retry_on: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=32
    )


class Node(BaseModel):
    """One step of the pipeline."""

    model_config = ConfigDict(extra="forbid")

    id: NodeId
    type: NodeType
    name: str | None = Field(default=None, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 86_400)


class Edge(BaseModel):
    """`from` one node `to` another; with a `condition`, taken only when it holds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    source: NodeId = Field(alias="from")
    target: NodeId = Field(alias="to")
    condition: str | None = Field(default=None, max_length=MAX_TEXT)


class PipelineDefinition(BaseModel):
    """A whole pipeline: what it takes (`input_schema`, a JSON Schema), its nodes and edges,
    and the longest a run may take."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
    description: str = Field(default="", max_length=MAX_TEXT)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    nodes: list[Node] = Field(max_length=MAX_NODES)
    edges: list[Edge] = Field(default_factory=list, max_length=MAX_EDGES)
    timeout_seconds: float | None = Field(default=None, gt=0, le=30 * 86_400)

    def to_document(self) -> dict[str, Any]:
        """The definition as stored and exported (edges with `from`/`to`)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _first_error(error: ValidationError) -> str:
    item = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in item["loc"]) or "(document)"
    return f"{where}: {item['msg']}"


def parse_definition(document: object) -> PipelineDefinition:
    """A definition from its JSON form (a stored document, an upload); `InvalidInputError`
    naming the node or edge that could not be read ("invalid node data", "invalid edge
    data"). What parses may still be wrong as a graph: see `validation.validate`."""
    if not isinstance(document, Mapping):
        raise InvalidInputError(
            "a pipeline definition must be a JSON object",
            hint="give {name, nodes: [...], edges: [...]} (docs/pipelines.md)",
        )
    for key, what in (("nodes", "node"), ("edges", "edge")):
        items = document.get(key, [])
        if not isinstance(items, list):
            raise InvalidInputError(f"`{key}` must be a list")
        model = Node if key == "nodes" else Edge
        for index, item in enumerate(items):
            try:
                model.model_validate(item)
            except ValidationError as exc:
                raise InvalidInputError(
                    f"invalid {what} data at {key}[{index}]: {_first_error(exc)}",
                    hint=f"each {what} needs "
                    + ("an `id` and a `type`" if key == "nodes" else "`from` and `to`"),
                    details={"path": f"{key}[{index}]"},
                ) from None
    try:
        return PipelineDefinition.model_validate(document)
    except ValidationError as exc:
        raise InvalidInputError(
            f"invalid pipeline definition: {_first_error(exc)}",
            hint="see docs/pipelines.md for the format",
        ) from None
