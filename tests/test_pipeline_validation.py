"""Pipeline definitions and their checks (the seed's `test_pipeline_validation.py`): valid
graphs, cycles, broken structures, per-type configs, execution order, parsing stored
documents, the edge wire format, and the cases the public peer left untested (self-loops,
duplicate ids, triggers, reachability, expressions that try to reach Python)."""

from __future__ import annotations

import pytest

from gathering.errors import InvalidInputError
from gathering.pipelines import (
    Edge,
    Node,
    PipelineDefinition,
    check,
    execution_order,
    parse_definition,
    validate,
)

TRIGGER = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}


def agent(node_id: str, **config: object) -> dict:
    return {
        "id": node_id,
        "type": "agent",
        "config": {"agent": "writer", "prompt": "Write about {{ input.topic }}"} | config,
    }


def action(node_id: str) -> dict:
    return {"id": node_id, "type": "action", "config": {"kind": "emit_event", "event": "done"}}


def pipeline(nodes: list[dict], edges: list[tuple[str, str]] | list[dict]) -> PipelineDefinition:
    wire = [e if isinstance(e, dict) else {"from": e[0], "to": e[1]} for e in edges]
    return parse_definition({"name": "test", "nodes": nodes, "edges": wire})


def codes(definition: PipelineDefinition) -> list[str]:
    return [problem.code for problem in validate(definition)]


def messages(definition: PipelineDefinition) -> str:
    return " | ".join(problem.message for problem in validate(definition))


# --- valid pipelines ----------------------------------------------------------------------------


def test_valid_linear_pipeline():
    definition = pipeline(
        [TRIGGER, agent("write"), action("notify")], [("start", "write"), ("write", "notify")]
    )
    assert validate(definition) == []
    check(definition)  # raises nothing


def test_valid_branching_pipeline():
    """A diamond: fan-out and fan-in are not a cycle."""
    definition = pipeline(
        [TRIGGER, agent("left"), agent("right"), action("join")],
        [("start", "left"), ("start", "right"), ("left", "join"), ("right", "join")],
    )
    assert validate(definition) == []


def test_every_node_type_with_its_config_is_valid():
    nodes = [
        TRIGGER,
        agent("ask", output="json", output_schema={"type": "object"}),
        {
            "id": "calc",
            "type": "tool",
            "config": {"tool": "calculator", "arguments": {"expression": "{{ input.x }}"}},
        },
        {"id": "big", "type": "condition", "config": {"expression": "outputs.calc > 10"}},
        {"id": "fan", "type": "parallel", "config": {"join": "n", "n": 1}},
        {"id": "wait", "type": "delay", "config": {"seconds": 60}},
        {"id": "ok", "type": "approval", "config": {"message": "Send {{ outputs.ask }}?"}},
        {"id": "sub", "type": "sub_pipeline", "config": {"pipeline": "other", "input": {}}},
        {"id": "hook", "type": "action", "config": {"kind": "webhook", "url": "https://h/x"}},
    ]
    edges = [
        ("start", "ask"),
        ("ask", "calc"),
        ("calc", "big"),
        ("big", "fan"),
        ("fan", "wait"),
        ("fan", "ok"),
        ("wait", "sub"),
        ("ok", "sub"),
        ("sub", "hook"),
    ]
    assert validate(pipeline(nodes, edges)) == []


# --- cycles -------------------------------------------------------------------------------------


def test_cycle_detection_simple():
    definition = pipeline(
        [TRIGGER, agent("a"), agent("b")], [("start", "a"), ("a", "b"), ("b", "a")]
    )
    assert "cycle" in codes(definition)
    assert "cycle: a -> b -> a" in messages(definition)


def test_cycle_detection_complex():
    """A cycle that does not pass through the entry node."""
    nodes = [TRIGGER, agent("a"), agent("b"), agent("c"), agent("d")]
    edges = [("start", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]
    definition = pipeline(nodes, edges)
    assert "cycle" in codes(definition)
    assert "b -> c -> d -> b" in messages(definition)


def test_a_self_loop_is_refused():
    definition = pipeline([TRIGGER, agent("a")], [("start", "a"), ("a", "a")])
    assert codes(definition) == ["self_loop"]


def test_execution_order_raises_on_a_cycle():
    definition = pipeline(
        [TRIGGER, agent("a"), agent("b")], [("start", "a"), ("a", "b"), ("b", "a")]
    )
    with pytest.raises(InvalidInputError, match="cycle: a -> b -> a"):
        execution_order(definition)


# --- invalid structures -------------------------------------------------------------------------


def test_empty_pipeline_rejected():
    definition = pipeline([], [])
    assert [p.message for p in validate(definition)] == ["a pipeline needs at least one node"]


def test_invalid_node_type():
    """A node built without schema validation still has its type checked."""
    node = Node.model_construct(
        id="x", type="teleport", config={}, name=None, retry=None, timeout_seconds=None
    )
    start = Node.model_validate(TRIGGER)
    definition = PipelineDefinition.model_construct(
        name="t",
        description="",
        input_schema={"type": "object"},
        nodes=[start, node],
        edges=[Edge(source="start", target="x")],
        timeout_seconds=None,
    )
    [problem] = validate(definition)
    assert problem.code == "invalid_type" and "invalid type" in problem.message
    assert problem.path == "nodes[1].type"


def test_dangling_edge_source():
    definition = pipeline([TRIGGER, agent("a")], [("start", "a"), ("ghost", "a")])
    [problem] = validate(definition)
    assert "unknown source" in problem.message and problem.path == "edges[1].from"


def test_dangling_edge_target():
    definition = pipeline([TRIGGER, agent("a")], [("start", "a"), ("a", "ghost")])
    [problem] = validate(definition)
    assert "unknown target" in problem.message and problem.path == "edges[1].to"


def test_agent_node_missing_config():
    definition = pipeline([TRIGGER, {"id": "a", "type": "agent", "config": {}}], [("start", "a")])
    paths = {p.path: p for p in validate(definition)}
    assert paths.keys() == {"nodes[1].config.agent", "nodes[1].config.prompt"}
    assert all(p.code == "invalid_config" for p in paths.values())


def test_duplicate_node_and_edge_ids_are_refused():
    nodes = [TRIGGER, agent("a"), agent("a")]
    edges = [{"id": "e", "from": "start", "to": "a"}, {"id": "e", "from": "start", "to": "a"}]
    found = validate(pipeline(nodes, edges))
    assert [(p.path, p.code) for p in found] == [
        ("nodes[2].id", "duplicate_node"),
        ("edges[1].id", "duplicate_edge"),
        ("edges[1]", "duplicate_edge"),
    ]


def test_triggers_start_runs_and_reach_every_node():
    no_trigger = pipeline([agent("a")], [])
    assert codes(no_trigger) == ["no_trigger"]
    into_trigger = pipeline([TRIGGER, agent("a")], [("start", "a"), ("a", "start")])
    assert "edge_into_trigger" in codes(into_trigger)
    island = pipeline([TRIGGER, agent("a"), agent("b")], [("start", "a")])
    [problem] = validate(island)
    assert problem.code == "unreachable" and problem.path == "nodes[2]"
    two = pipeline([TRIGGER, TRIGGER | {"id": "hook"}, agent("a")], [("start", "a"), ("hook", "a")])
    assert validate(two) == []


@pytest.mark.parametrize(
    ("node", "path", "words"),
    [
        ({"type": "trigger", "config": {"kind": "schedule"}}, "config", "needs `cron`"),
        ({"type": "trigger", "config": {"kind": "event"}}, "config", "needs `event`"),
        (
            {"type": "agent", "config": {"agent": "w", "prompt": "{{ oops"}},
            "config.prompt",
            "template error",
        ),
        (
            {"type": "agent", "config": {"agent": "w", "prompt": "x", "mood": 1}},
            "config.mood",
            "Extra inputs",
        ),
        (
            {"type": "tool", "config": {"tool": "x", "arguments": {"a": ["{% if %}"]}}},
            "config.arguments",
            "template error",
        ),
        ({"type": "action", "config": {"kind": "webhook"}}, "config", "needs `url`"),
        ({"type": "parallel", "config": {"join": "n"}}, "config", "`n` is given exactly"),
        ({"type": "delay", "config": {"seconds": -1}}, "config.seconds", "greater than 0"),
        ({"type": "approval", "config": {}}, "config.message", "Field required"),
        ({"type": "sub_pipeline", "config": {"pipeline": ""}}, "config.pipeline", "at least 1"),
    ],
)
def test_each_node_type_checks_its_config(node, path, words):
    definition = pipeline([TRIGGER, {"id": "n"} | node], [("start", "n")])
    found = validate(definition)
    assert found, f"{node} passed"
    assert any(p.path.startswith(f"nodes[1].{path}") and words in p.message for p in found), found


def test_a_parallel_join_cannot_wait_for_more_branches_than_it_has():
    nodes = [
        TRIGGER,
        {"id": "join", "type": "parallel", "config": {"join": "n", "n": 3}},
        agent("a"),
        agent("b"),
    ]
    edges = [("start", "a"), ("start", "b"), ("a", "join"), ("b", "join")]
    found = validate(pipeline(nodes, edges))
    assert [(p.path, p.code) for p in found] == [("nodes[1].config.n", "invalid_config")]
    assert "waits for 3 of 2 branches" in found[0].message


def test_the_input_schema_must_be_a_json_schema():
    document = {"name": "t", "nodes": [TRIGGER], "input_schema": {"type": "nonsense"}}
    [problem] = validate(parse_definition(document))
    assert problem.code == "invalid_schema" and problem.path == "input_schema"


# --- expressions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "outputs.sort.priority == 'high'",
        "len(input.tags) > 0 and not input.muted",
        "contains(lower(outputs.review), 'approve')",
        "input['count'] * 2 >= 10 if input.count else false",
        "outputs.x in ['a', 'b'] or null",
    ],
)
def test_conditions_over_input_and_outputs_are_accepted(expression):
    definition = pipeline(
        [TRIGGER, agent("a")], [{"from": "start", "to": "a", "condition": expression}]
    )
    assert validate(definition) == []


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("__import__('os').system('id')", "only these functions"),
        ("input.__class__.__bases__", "is not allowed"),
        ("open('/etc/passwd')", "only these functions"),
        ("[x for x in input]", "ListComp is not allowed"),
        ("(lambda: 1)()", "only these functions"),
        ("[lambda: 1]", "Lambda is not allowed"),
        ("os", "unknown name 'os'"),
        ("len", "is a function"),
        ("input.x +", "not an expression"),
        ("str(input, foo=1)", "only these functions"),
        ("1 if ready else 2", "unknown name 'ready'"),
        ("a := 1", "not an expression"),
        ("1 " + "+ 1 " * 150, "at most 200 parts"),
    ],
)
def test_conditions_cannot_reach_python(expression, words):
    definition = pipeline(
        [TRIGGER, {"id": "c", "type": "condition", "config": {"expression": expression}}],
        [{"from": "start", "to": "c", "condition": expression}],
    )
    found = validate(definition)
    assert [p.path for p in found] == ["nodes[1].config.expression", "edges[0].condition"]
    assert all(words in p.message for p in found), found


# --- execution order ----------------------------------------------------------------------------


def test_execution_order_linear():
    definition = pipeline([agent("c"), TRIGGER | {"id": "a"}, agent("b")], [("a", "b"), ("b", "c")])
    assert execution_order(definition) == ["a", "b", "c"]


def test_execution_order_branching():
    definition = pipeline(
        [TRIGGER, agent("left"), agent("right"), action("join")],
        [("start", "left"), ("start", "right"), ("left", "join"), ("right", "join")],
    )
    order = execution_order(definition)
    assert order[0] == "start" and order[-1] == "join"
    assert set(order[1:3]) == {"left", "right"}


# --- parsing stored definitions -----------------------------------------------------------------


def test_parse_pipeline_definition_from_jsonb():
    stored = {
        "name": "stored",
        "nodes": [TRIGGER, agent("a"), action("b")],
        "edges": [{"from": "start", "to": "a"}, {"from": "a", "to": "b"}],
    }
    definition = parse_definition(stored)
    assert len(definition.nodes) == 3 and len(definition.edges) == 2
    assert [(e.source, e.target) for e in definition.edges] == [("start", "a"), ("a", "b")]


def test_parse_pipeline_definition_invalid():
    with pytest.raises(InvalidInputError, match=r"invalid node data at nodes\[1\]") as caught:
        parse_definition({"name": "x", "nodes": [TRIGGER, {"type": "agent"}], "edges": []})
    assert caught.value.details == {"path": "nodes[1]"}


def test_parse_pipeline_definition_invalid_edge():
    with pytest.raises(InvalidInputError, match=r"invalid edge data at edges\[0\]"):
        parse_definition({"name": "x", "nodes": [TRIGGER], "edges": [{"from": "start"}]})


@pytest.mark.parametrize(
    "document",
    [
        [],
        "nodes",
        {"name": "x", "nodes": "no"},
        {"nodes": [TRIGGER]},
        {"name": "\x07", "nodes": []},
    ],
)
def test_documents_that_are_not_definitions_are_refused(document):
    with pytest.raises(InvalidInputError):
        parse_definition(document)


def test_check_lists_every_problem():
    definition = pipeline([agent("a"), agent("a")], [("a", "ghost")])
    with pytest.raises(InvalidInputError, match="is not valid") as caught:
        check(definition)
    problems = caught.value.details["problems"]
    assert {p["code"] for p in problems} == {"duplicate_node", "unknown_node", "no_trigger"}


# --- the edge wire format -----------------------------------------------------------------------


def test_pipeline_edge_from_alias():
    edge = Edge.model_validate({"from": "a", "to": "b"})
    assert (edge.source, edge.target) == ("a", "b")


def test_pipeline_edge_by_field_name():
    edge = Edge(source="a", target="b")
    assert (edge.source, edge.target) == ("a", "b")


def test_pipeline_edge_serialization_uses_alias():
    edge = Edge(source="a", target="b", condition="true")
    assert edge.model_dump(exclude_none=True) == {"from": "a", "to": "b", "condition": "true"}
    document = pipeline([TRIGGER, agent("a")], [("start", "a")]).to_document()
    assert document["edges"] == [{"from": "start", "to": "a"}]
    assert parse_definition(document).to_document() == document  # it round-trips
