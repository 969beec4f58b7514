"""Logs (structlog: JSON lines, or a readable renderer in a terminal), metrics and traces.

Credentials passed in a query string (`/ws?access_token=...`) are blanked in logs and spans:
`redact_query` blanks their values wherever a URL is written. Log lines also lose the password
of any URL they quote (`gathering.config.redact_credentials`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.util import types as otel_types
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gathering.config import Settings, redact_credentials

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


# --- redaction of credentials in query strings ------------------------------------------------

REDACTED = "REDACTED"
# Compared after decoding, lower-cased, with "-" read as "_"; names ending with a suffix below
# count too (csrf_token, client_secret, x_amz_signature, ...).
SENSITIVE_QUERY_PARAMS = frozenset(
    {
        "access_token", "refresh_token", "id_token", "token", "jwt", "ticket",
        "api_key", "apikey", "key", "access_key", "secret_key", "private_key",
        "password", "passwd", "pwd", "secret", "client_secret",
        "code", "signature", "sig", "auth", "authorization", "credential", "credentials",
        "session", "sessionid", "awsaccesskeyid",
    }
)  # fmt: skip
_SENSITIVE_SUFFIXES = ("token", "secret", "password", "passwd", "signature", "api_key", "apikey")
# One `name=value` pair that starts the text or follows "?" or "&". The value runs to the next
# "&" or whitespace (servers accept a raw '"' inside it), so a pair is found in a bare query
# string, in a URL and in a log line ('"GET /ws?access_token=... HTTP/1.1" 101'); closing
# quotes and brackets just before that end are kept, as the text around the URL.
_QUERY_PAIR = re.compile(
    r"(?P<lead>^|[?&])(?P<name>[^=&?#\s]+)="
    r"(?P<value>[^&\s]*?)(?P<tail>[\"'>)\]},;]*)(?=[&\s]|$)"
)


def _is_sensitive(name: str) -> bool:
    normal = unquote_plus(name).strip().lower().replace("-", "_")
    return normal in SENSITIVE_QUERY_PARAMS or normal.endswith(_SENSITIVE_SUFFIXES)


def _redact_pair(match: re.Match[str]) -> str:
    if not match["value"] or not _is_sensitive(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}={REDACTED}{match['tail']}"


def redact_query(text: str) -> str:
    """`text` (a query string, a URL or a log line) with credential parameter values blanked."""
    if "=" not in text:
        return text
    return _QUERY_PAIR.sub(_redact_pair, text)


# Provider keys in use (stored ones as decrypted, the environment's): masked in every log line,
# whatever quotes them (a provider's error text, a traceback). The set is bounded so a process
# cannot grow it without end: past the bound, the key least recently put to use leaves it. A
# key is registered again each time it is decrypted for a call, so a key in use is always in.
_MASKED_SECRETS: OrderedDict[str, None] = OrderedDict()
# What masks a line: one pattern over every form of every key (longest first), and each form's
# mask. Built when a line is next masked after the set changed (None until then), so putting
# many keys to use costs one build, not one each; `_MASKS_VERSION` counts the changes.
_MASKING: tuple[re.Pattern[str] | None, dict[str, str]] | None = (None, {})
_MASKS_VERSION = 0
# Keys come from the event loop and from worker threads. Reentrant, and never held while the
# pattern is built: a finalizer the garbage collector runs meanwhile may log (asyncio's "Task
# was destroyed"), and that line is masked on the same thread.
_MASKS_LOCK = threading.RLock()
MAX_MASKED_SECRETS = 1000
MIN_MASKED_CHARS = 8  # shorter values are too common to replace in every line
MIN_HINTED_CHARS = 24  # a key at least this long keeps its first 3 and last 4 characters


def _mask(secret: str) -> str:
    if len(secret) < MIN_HINTED_CHARS:
        return "****"
    return f"{secret[:3]}...{secret[-4:]}"


def _masking() -> tuple[re.Pattern[str] | None, dict[str, str]]:
    global _MASKING
    masking = _MASKING
    if masking is not None:
        return masking
    with _MASKS_LOCK:
        secrets, version = tuple(_MASKED_SECRETS), _MASKS_VERSION
    masks: dict[str, str] = {}
    for secret in secrets:
        mask = _mask(secret)
        masks[secret] = mask
        masks.setdefault(json.dumps(secret)[1:-1], mask)  # as a JSON line writes it
    forms = sorted(masks, key=len, reverse=True)  # a key that begins another: after it
    built = (re.compile("|".join(map(re.escape, forms))) if forms else None, masks)
    with _MASKS_LOCK:
        if _MASKS_VERSION == version:  # no key came meanwhile: the next line uses it too
            _MASKING = built
    return built


def mask_in_logs(secret: str) -> None:
    """Mask `secret` (a provider key this process is about to use) in every log line."""
    global _MASKING, _MASKS_VERSION
    secret = secret.strip()
    if len(secret) < MIN_MASKED_CHARS:
        return
    with _MASKS_LOCK:
        known = secret in _MASKED_SECRETS
        _MASKED_SECRETS[secret] = None
        _MASKED_SECRETS.move_to_end(secret)
        while len(_MASKED_SECRETS) > MAX_MASKED_SECRETS:
            _MASKED_SECRETS.popitem(last=False)
            known = False
        if not known:
            _MASKS_VERSION += 1
            _MASKING = None


def mask_secrets(text: str) -> str:
    """`text` with every secret given to `mask_in_logs` replaced by its mask ("sk-...abcd",
    or "****" for a short one), also where a JSON line escaped it."""
    pattern, masks = _masking()
    if pattern is None:
        return text
    return pattern.sub(lambda found: masks[found.group()], text)


def redact_log_text(text: str) -> str:
    """`text` without query-string credentials, URL passwords and keys in use."""
    return mask_secrets(redact_credentials(redact_query(text)))


def _redact_log_arg(arg: object) -> object:
    if arg is None or isinstance(arg, int | float):
        return arg
    text = arg if isinstance(arg, str) else str(arg)  # an httpx.URL, for instance
    redacted = redact_log_text(text)
    return arg if redacted == text else redacted


class RedactQueryFilter(logging.Filter):
    """Blanks query-string credentials in a stdlib record's message and arguments, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record (never drops it)."""
        if isinstance(record.msg, str):
            record.msg = redact_log_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_log_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redact_log_arg(arg) for key, arg in record.args.items()}
        return True


_REDACT_FILTER = RedactQueryFilter()
# The loggers that write request URLs: uvicorn's access log, its WebSocket handshake lines
# ("WebSocket /ws?..." [accepted]) and httpx's request lines. A filter on the logger itself
# rewrites the record before any handler (ours, or a test's) sees it.
URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn.asgi", "httpx", "httpcore")


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank query-string credentials, URL passwords and the keys in use
    (`mask_in_logs`) in every string value of the event."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact_log_text(value)
    return event_dict


def _masked_line(logger: Any, method_name: str, line: Any) -> Any:
    """The rendered line with the keys in use masked (a last processor, after the renderer)."""
    return mask_secrets(line) if isinstance(line, str) else line


_previous_thread_hook: Callable[[threading.ExceptHookArgs], Any] | None = None


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception no thread caught, logged (keys masked) instead of printed as it is; a
    hook installed before ours (an error tracker's, a test runner's) still sees it."""
    if args.exc_type is not SystemExit and args.exc_value is not None:
        thread = args.thread.name if args.thread is not None else "?"
        logging.getLogger("gathering.threads").error(
            "uncaught exception in thread %s",
            thread,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )
    if _previous_thread_hook is not None:
        _previous_thread_hook(args)


def _install_thread_hook() -> None:
    """Ours as `threading.excepthook`, chained to the one there unless that is Python's
    default (which would print the exception again, keys and all)."""
    global _previous_thread_hook
    current = threading.excepthook
    if current is not _log_thread_exception:
        _previous_thread_hook = None if current is threading.__excepthook__ else current
        threading.excepthook = _log_thread_exception


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each line (a command run in-process, by a test
    runner, has its own stderr that it closes when done), and reports its own failures (a
    message that does not format) without a key in use: the stdlib handler prints the
    traceback of the exception being handled as it is, and that may quote a provider's key."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # no stream of its own, unless `setStream` gives one
        self._given: Any = None

    @property
    def stream(self) -> Any:
        """The stream `setStream` gave, else the process's stderr of the moment."""
        return sys.stderr if self._given is None else self._given

    @stream.setter
    def stream(self, stream: Any) -> None:
        self._given = stream

    def handleError(self, record: logging.LogRecord) -> None:
        """Report the failure to emit `record` on stderr, keys masked."""
        if not logging.raiseExceptions or sys.stderr is None:
            return
        text = "".join(traceback.format_exception(*sys.exc_info()))
        try:
            sys.stderr.write(f"--- Logging error ---\n{redact_log_text(text)}")
        except OSError:  # stderr itself is gone: nothing left to tell
            pass


def configure_logging(settings: Settings) -> None:
    """Route stdlib and structlog logging through one structlog pipeline."""
    for configured in (settings.anthropic_api_key, settings.openai_api_key):
        if configured is not None:
            mask_in_logs(configured.get_secret_value())
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
        redact_event,  # before any handler sees the event, ours or another
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,  # again, for the traceback text just formatted
                renderer,
                _masked_line,  # what no field held as a string: a dict, a list, an object
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _install_thread_hook()
    root.setLevel(settings.log_level)
    for noisy in ("pgserver", "psycopg.pool", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name in URL_LOGGERS:
        logging.getLogger(name).addFilter(_REDACT_FILTER)  # a no-op when already there


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
JOBS = Counter("gathering_jobs_total", "Background jobs finished", ["task", "outcome"])
TURNS = Counter("gathering_turns_total", "Agent turns finished", ["outcome"])
DUTY_FAILURES = Counter(
    "gathering_duty_failures_total", "Singleton duty runs that raised", ["duty"]
)
TOOL_CALLS = Counter("gathering_tool_calls_total", "Tool calls finished", ["tool", "outcome"])
EVENT_BUS = Gauge("gathering_event_bus", "Event bus counters of this process", ["stat"])
DB_POOL = Gauge("gathering_db_pool_connections", "Database pool connections", ["state"])


def record_llm_usage(
    provider: str, model: str, input_tokens: int, output_tokens: int, cost_usd: float | None
) -> None:
    """Count one LLM call's tokens in this process's metrics (a negative count a provider
    reports counts as none: a counter only goes up). Spending is not counted here: it is
    exported from the usage ledger (see `SpendingCollector`)."""
    del cost_usd
    LLM_TOKENS.labels(provider, model, "input").inc(max(0, input_tokens))
    LLM_TOKENS.labels(provider, model, "output").inc(max(0, output_tokens))


class SpendingCollector(Collector):
    """Spending read from the usage ledger (in PostgreSQL), not counted in this process: it
    survives restarts and every instance exports the same totals. The metrics route hands it
    the ledger's sums (`set_totals`) just before each exposition."""

    def __init__(self) -> None:
        self._rows: list[Mapping[str, Any]] = []

    def set_totals(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """The ledger's sums per kind, provider and model, as the next scrape shows them."""
        self._rows = list(rows)

    def collect(self) -> Any:
        cost = CounterMetricFamily(
            "gathering_llm_cost_usd",
            "Cost in USD of model and embedding calls, from the usage ledger",
            labels=["kind", "provider", "model"],
        )
        tokens = CounterMetricFamily(
            "gathering_usage_tokens",
            "Tokens of model and embedding calls, from the usage ledger",
            labels=["kind", "provider", "model", "direction"],
        )
        calls = CounterMetricFamily(
            "gathering_usage_calls",
            "Model, embedding and tool calls, from the usage ledger (model: the tool's name)",
            labels=["kind", "provider", "model"],
        )
        for row in self._rows:
            labels = [str(row["kind"]), str(row["provider"]), str(row["model"])]
            calls.add_metric(labels, float(row["calls"]))
            if row["kind"] == "tool":
                continue
            cost.add_metric(labels, float(row["cost_usd"]))
            tokens.add_metric([*labels, "input"], float(row["input_tokens"]))
            tokens.add_metric([*labels, "output"], float(row["output_tokens"]))
        return iter((cost, tokens, calls))


SPENDING = SpendingCollector()
REGISTRY.register(SPENDING)


def record_turn(outcome: str) -> None:
    """Count one finished turn ("completed", "max_iterations", "failed", "replayed")."""
    TURNS.labels(outcome).inc()


def record_tool_call(tool: str, outcome: str) -> None:
    """Count one tool call: ok, retry (refused input), refused (the tool's typed answer),
    denied (by policy or a person), failed, timeout or unknown_tool."""
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


def _redact_attributes(attributes: otel_types.Attributes) -> otel_types.Attributes:
    """`attributes` with query-string credentials blanked, or the same object when none."""
    if not attributes:
        return attributes
    changed: dict[str, otel_types.AttributeValue] = {}
    for key, value in attributes.items():
        if isinstance(value, str):
            if (redacted := redact_query(value)) != value:
                changed[key] = redacted
        elif isinstance(value, tuple | list) and any(isinstance(v, str) for v in value):
            items = tuple(redact_query(v) if isinstance(v, str) else v for v in value)
            if items != tuple(value):
                changed[key] = items
    if not changed:
        return attributes
    copy = BoundedAttributes(maxlen=None, attributes={**attributes, **changed}, immutable=True)
    copy.dropped = getattr(attributes, "dropped", 0)
    return copy


def _redacted_span(span: ReadableSpan) -> ReadableSpan:
    """`span` with credentials blanked in its name and (event) attributes; itself when clean."""
    name = redact_query(span.name)
    attributes = _redact_attributes(span.attributes)
    events = [
        event
        if (clean := _redact_attributes(event.attributes)) is event.attributes
        else Event(event.name, clean, event.timestamp)
        for event in span.events
    ]
    if (
        name == span.name
        and attributes is span.attributes
        and all(new is old for new, old in zip(events, span.events, strict=True))
    ):
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanProcessor(SpanProcessor):
    """Hands `processor` each finished span with query-string credentials blanked.

    Ended spans are read-only and the ASGI middleware sets `http.url` (with the query) after
    any start hook, so the copy is made at the end, before export.
    """

    def __init__(self, processor: SpanProcessor) -> None:
        self.processor = processor

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Pass the start on."""
        self.processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass on a redacted copy of the span."""
        self.processor.on_end(_redacted_span(span))

    def shutdown(self) -> None:
        """Shut the wrapped processor down."""
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped processor."""
        return self.processor.force_flush(timeout_millis)


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Trace database calls, outgoing HTTP and LLM calls when an OTLP endpoint is configured.

    Off by default. `exporter` replaces the OTLP exporter (tests pass an in-memory one).
    HTTP server spans come from `OpenTelemetryMiddleware`, added by the app when this is on.
    Every span is exported with query-string credentials blanked (`RedactingSpanProcessor`).
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
    processor: SpanProcessor
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
    else:
        processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(RedactingSpanProcessor(processor))
    trace.set_tracer_provider(provider)
    global _tracing
    _tracing = True
    PsycopgInstrumentor().instrument(skip_dep_check=True)
    HTTPXClientInstrumentor().instrument()
    return True
