"""What is wrong with a pipeline definition, each problem at a JSON path an editor can show.

`validate` checks the graph (at least one node and one trigger, unique ids, edges between
known nodes, no self-loop, no cycle, every node reachable from a trigger, nothing into a
trigger), each node's `config` against its type, each edge's condition, and the input schema.
It runs when a definition is saved and when a run starts. `execution_order` is a topological
order of the nodes (`InvalidInputError` on a cycle).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gathering.errors import InvalidInputError
from gathering.pipelines.conditions import check_expression
from gathering.pipelines.definition import NODE_TYPES, PipelineDefinition
from gathering.pipelines.node_config import CONFIGS
from gathering.tools.validation import field_path, schema_validator


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (`nodes[2].config.agent`), a stable code, and what."""

    path: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


def _config_problems(index: int, node_type: str, config: Any) -> list[Problem]:
    model = CONFIGS[node_type]
    try:
        model.model_validate(config)
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_url=False, include_input=False):
            where = field_path(item["loc"])
            path = f"nodes[{index}].config" + (f".{where}" if item["loc"] else "")
            message = item["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, "invalid_config", f"{node_type} node: {message}"))
        return problems
    return []


def _cycle(nodes: list[str], successors: dict[str, list[str]]) -> list[str] | None:
    """One cycle among `nodes` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in nodes:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, child = stack.pop()
            if child == 0:
                state[node] = 1
                path.append(node)
            following = successors.get(node, [])
            if child < len(following):
                stack.append((node, child + 1))
                nxt = following[child]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def validate(definition: PipelineDefinition) -> list[Problem]:
    """Every problem of `definition`, in document order (empty: it is valid)."""
    problems: list[Problem] = []
    nodes = definition.nodes
    if not nodes:
        return [Problem("nodes", "no_nodes", "a pipeline needs at least one node")]
    index_of: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.id in index_of:
            problems.append(
                Problem(f"nodes[{index}].id", "duplicate_node", f"duplicate node id {node.id!r}")
            )
            continue
        index_of[node.id] = index
        if node.type not in NODE_TYPES:
            problems.append(
                Problem(
                    f"nodes[{index}].type",
                    "invalid_type",
                    f"node {node.id!r} has an invalid type {node.type!r}: "
                    f"one of {', '.join(NODE_TYPES)}",
                )
            )
            continue
        problems += _config_problems(index, node.type, node.config)
    successors: dict[str, list[str]] = defaultdict(list)
    incoming: dict[str, int] = defaultdict(int)
    edge_ids: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for index, edge in enumerate(definition.edges):
        where = f"edges[{index}]"
        if edge.id is not None:
            if edge.id in edge_ids:
                problems.append(
                    Problem(f"{where}.id", "duplicate_edge", f"duplicate edge id {edge.id!r}")
                )
            edge_ids.add(edge.id)
        known = True
        for end, name in (("from", edge.source), ("to", edge.target)):
            if name not in index_of:
                role = "source" if end == "from" else "target"
                problems.append(
                    Problem(f"{where}.{end}", "unknown_node", f"unknown {role} node {name!r}")
                )
                known = False
        if edge.condition is not None:
            try:
                check_expression(edge.condition)
            except ValueError as exc:
                problems.append(Problem(f"{where}.condition", "invalid_condition", str(exc)))
        if not known:
            continue
        if edge.source == edge.target:
            problems.append(
                Problem(where, "self_loop", f"edge from {edge.source!r} to itself (a cycle)")
            )
            continue
        if (edge.source, edge.target) in pairs:
            problems.append(
                Problem(
                    where, "duplicate_edge", f"a second edge {edge.source!r} -> {edge.target!r}"
                )
            )
            continue
        pairs.add((edge.source, edge.target))
        successors[edge.source].append(edge.target)
        incoming[edge.target] += 1
    cycle = _cycle(list(index_of), successors)
    if cycle is not None:
        problems.append(Problem("edges", "cycle", "cycle: " + " -> ".join(cycle)))
    triggers = [node.id for node in nodes if node.type == "trigger" and node.id in index_of]
    if not triggers:
        problems.append(Problem("nodes", "no_trigger", "a pipeline needs a trigger node"))
    for trigger in triggers:
        if incoming[trigger]:
            problems.append(
                Problem(
                    f"nodes[{index_of[trigger]}]",
                    "edge_into_trigger",
                    f"trigger {trigger!r} has edges into it; a trigger starts a run",
                )
            )
    reached = set(triggers)
    queue = deque(triggers)
    while queue:
        for nxt in successors[queue.popleft()]:
            if nxt not in reached:
                reached.add(nxt)
                queue.append(nxt)
    if triggers:
        for name, index in index_of.items():
            if name not in reached:
                problems.append(
                    Problem(
                        f"nodes[{index}]",
                        "unreachable",
                        f"node {name!r} is not reachable from a trigger",
                    )
                )
    for name, index in index_of.items():
        node = nodes[index]
        if node.type == "parallel" and node.config.get("join") == "n":  # joins edges into it
            branches = sum(1 for edge in definition.edges if edge.target == name)
            wanted = node.config.get("n")
            if isinstance(wanted, int) and wanted > branches:
                problems.append(
                    Problem(
                        f"nodes[{index}].config.n",
                        "invalid_config",
                        f"parallel node {name!r} waits for {wanted} of {branches} branches",
                    )
                )
    try:
        schema_validator("input", definition.input_schema)
    except InvalidInputError as exc:
        problems.append(Problem("input_schema", "invalid_schema", str(exc)))
    return problems


def check(definition: PipelineDefinition) -> None:
    """`InvalidInputError` listing the problems of `definition` (`details["problems"]`)."""
    problems = validate(definition)
    if problems:
        shown = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise InvalidInputError(
            f"pipeline {definition.name!r} is not valid: {shown}{more}",
            hint="fix each problem at its path (details.problems lists them all)",
            details={"problems": [p.to_dict() for p in problems]},
        )


def execution_order(definition: PipelineDefinition) -> list[str]:
    """The node ids in an order where each comes after every node with an edge into it (ties
    in document order); `InvalidInputError` when the edges make a cycle."""
    ids = [node.id for node in definition.nodes]
    successors: dict[str, list[str]] = defaultdict(list)
    incoming = dict.fromkeys(ids, 0)
    for edge in definition.edges:
        if edge.source in incoming and edge.target in incoming:
            successors[edge.source].append(edge.target)
            incoming[edge.target] += 1
    ready = deque(node for node in ids if incoming[node] == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for nxt in successors[node]:
            incoming[nxt] -= 1
            if incoming[nxt] == 0:
                ready.append(nxt)
    if len(order) < len(ids):
        cycle = _cycle(ids, successors) or []
        raise InvalidInputError(
            "the pipeline's edges make a cycle" + (": " + " -> ".join(cycle) if cycle else ""),
            hint="remove an edge of the cycle",
        )
    return order
