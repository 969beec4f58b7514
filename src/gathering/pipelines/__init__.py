"""Pipelines: DAGs of agent, tool, condition, action, parallel, delay, approval and
sub-pipeline nodes. This version defines, checks and stores them; running them comes with the
job runtime (docs/pipelines.md says what is built)."""

from gathering.pipelines.definition import Edge, Node, PipelineDefinition, parse_definition
from gathering.pipelines.validation import Problem, check, execution_order, validate

__all__ = [
    "Edge",
    "Node",
    "PipelineDefinition",
    "Problem",
    "check",
    "execution_order",
    "parse_definition",
    "validate",
]
