"""Logs (structlog: JSON lines, or a readable renderer in a terminal), metrics and traces."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import structlog
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gathering.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


def configure_logging(settings: Settings) -> None:
    """Route stdlib and structlog logging through one structlog pipeline."""
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("pgserver", "psycopg.pool", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


# --- metrics (Prometheus) ---------------------------------------------------------------------
# Module-level, so every app in the process shares them and they register once.

HTTP_REQUESTS = Counter(
    "gathering_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "gathering_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
LLM_TOKENS = Counter(
    "gathering_llm_tokens_total", "LLM tokens used", ["provider", "model", "direction"]
)
LLM_COST = Counter(
    "gathering_llm_cost_usd_total", "Estimated LLM cost in USD", ["provider", "model"]
)
JOBS = Counter("gathering_jobs_total", "Background jobs finished", ["task", "outcome"])
TURNS = Counter("gathering_turns_total", "Agent turns finished", ["outcome"])
TOOL_CALLS = Counter("gathering_tool_calls_total", "Tool calls finished", ["tool", "outcome"])
EVENT_BUS = Gauge("gathering_event_bus", "Event bus counters of this process", ["stat"])
DB_POOL = Gauge("gathering_db_pool_connections", "Database pool connections", ["state"])


def record_llm_usage(
    provider: str, model: str, input_tokens: int, output_tokens: int, cost_usd: float | None
) -> None:
    """Count one LLM call's tokens (and estimated cost) in the metrics."""
    LLM_TOKENS.labels(provider, model, "input").inc(input_tokens)
    LLM_TOKENS.labels(provider, model, "output").inc(output_tokens)
    if cost_usd:
        LLM_COST.labels(provider, model).inc(cost_usd)


def record_turn(outcome: str) -> None:
    """Count one finished turn ("completed", "max_iterations", "failed", "replayed")."""
    TURNS.labels(outcome).inc()


def record_tool_call(tool: str, outcome: str) -> None:
    """Count one tool call ("ok", "retry", "failed", "timeout", "unknown_tool")."""
    TOOL_CALLS.labels(tool, outcome).inc()


def record_event_stats(stats: dict[str, int]) -> None:
    """Copy an event bus's `stats()` into the event gauges."""
    for name, value in stats.items():
        EVENT_BUS.labels(name).set(value)


def record_pool_stats(stats: dict[str, int]) -> None:
    """Copy a psycopg pool's `get_stats()` into the pool gauges."""
    size = stats.get("pool_size", 0)
    available = stats.get("pool_available", 0)
    DB_POOL.labels("size").set(size)
    DB_POOL.labels("idle").set(available)
    DB_POOL.labels("in_use").set(size - available)
    DB_POOL.labels("waiting").set(stats.get("requests_waiting", 0))


def metrics_payload() -> tuple[bytes, str]:
    """The Prometheus exposition of this process's metrics, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- traces (OpenTelemetry) -----------------------------------------------------------------

_llm_tracer = trace.get_tracer("gathering.llm")
_tracing = False  # set by configure_tracing; LLM spans cost nothing while it is off


def start_llm_span(operation: str, provider: str, model: str) -> trace.Span | None:
    """A span for one LLM call, or None while tracing is off; end it with `end_llm_span`.
    Not made current, so it is safe across the yields of a stream."""
    if not _tracing:
        return None
    return _llm_tracer.start_span(
        f"llm.{operation}",
        kind=trace.SpanKind.CLIENT,
        attributes={"gen_ai.system": provider, "gen_ai.request.model": model},
    )


def end_llm_span(
    span: trace.Span | None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    error: BaseException | None = None,
) -> None:
    """Record the call's usage (or its error) on `span` and end it."""
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    else:
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    span.end()


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Trace database calls, outgoing HTTP and LLM calls when an OTLP endpoint is configured.

    Off by default. `exporter` replaces the OTLP exporter (tests pass an in-memory one).
    HTTP server spans come from `OpenTelemetryMiddleware`, added by the app when this is on.
    """
    if exporter is None and not settings.otel_endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _tracing
    _tracing = True
    PsycopgInstrumentor().instrument(skip_dep_check=True)
    HTTPXClientInstrumentor().instrument()
    return True
