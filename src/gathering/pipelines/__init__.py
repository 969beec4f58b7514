"""Pipelines: DAGs of agent, tool, condition, action, parallel, delay, approval and
sub-pipeline nodes. This version defines, checks and stores them; running them comes with the
job runtime (docs/pipelines.md says what is built)."""

from gathering.pipelines.definition import Edge, Node, PipelineDefinition, parse_definition
from gathering.pipelines.store import (
    PipelineRecord,
    PipelineVersion,
    apply_pipeline,
    create_pipeline,
    delete_pipeline,
    get_pipeline,
    get_version,
    list_pipelines,
    list_versions,
    pipeline_named,
    update_pipeline,
)
from gathering.pipelines.validation import Problem, check, execution_order, validate

__all__ = [
    "Edge",
    "Node",
    "PipelineDefinition",
    "PipelineRecord",
    "PipelineVersion",
    "Problem",
    "apply_pipeline",
    "check",
    "create_pipeline",
    "delete_pipeline",
    "execution_order",
    "get_pipeline",
    "get_version",
    "list_pipelines",
    "list_versions",
    "parse_definition",
    "pipeline_named",
    "update_pipeline",
    "validate",
]
