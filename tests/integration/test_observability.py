"""Request ids, problem+json errors, logs, metrics and traces."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import httpx
import pytest

from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.errors import NotFoundError
from gathering.observability import configure_logging


@pytest.fixture
async def probe_app(migrated_database_url):
    app = create_app(settings=load_settings(database_url=migrated_database_url))

    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async def missing() -> None:
        raise NotFoundError("agent 7 does not exist", hint="list agents first")

    app.add_api_route("/boom", boom)
    app.add_api_route("/missing", missing)
    yield app
    await app.state.gathering.close()


def _client(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_request_id_is_generated_and_returned(probe_app):
    async with _client(probe_app) as client:
        response = await client.get("/health")
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_is_taken_from_the_caller(probe_app):
    async with _client(probe_app) as client:
        response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
        hostile = await client.get("/health", headers={"X-Request-ID": "bad id\r\nx"})
    assert response.headers["x-request-id"] == "abc-123"
    assert hostile.headers["x-request-id"] != "bad id\r\nx"


async def test_gathering_errors_become_problem_json(probe_app):
    async with _client(probe_app) as client:
        response = await client.get("/missing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "not_found" and body["hint"] == "list agents first"
    assert body["detail"] == "agent 7 does not exist"


async def test_validation_errors_are_422_with_fields(probe_app):
    probe_app.state.gathering.settings.debug_endpoints = True
    from gathering.api.routers import debug

    probe_app.include_router(debug.router)
    async with _client(probe_app) as client:
        response = await client.get("/_debug/sleep", params={"seconds": "soon"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "seconds"]


async def test_unexpected_errors_are_500_without_stack_trace_and_logged(probe_app, capsys):
    configure_logging(load_settings(log_format="json", log_level="INFO"))
    try:
        async with _client(probe_app) as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
        assert response.status_code == 500
        assert "secret internal detail" not in response.text
        assert "Traceback" not in response.text
        assert response.json()["code"] == "internal_error"
        lines = [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")
        ]
        logged = [entry for entry in lines if entry.get("event") == "unhandled error"]
        assert logged and logged[0]["request_id"] == "req-500"
        assert "secret internal detail" in logged[0]["exception"]
    finally:
        logging.getLogger().handlers.clear()


async def test_metrics_expose_requests_and_pool(probe_app):
    async with _client(probe_app) as client:
        await client.get("/health/ready")
        text = (await client.get("/metrics")).text
    assert 'gathering_http_requests_total{method="GET",route="/health/ready",status="200"}' in text
    assert 'gathering_db_pool_connections{state="size"}' in text
    assert "gathering_llm_tokens_total" in text


def test_traces_cover_http_and_database(migrated_database_url):
    """Run in a fresh process: the tracer provider is process-global."""
    script = textwrap.dedent(
        f"""
        import asyncio, httpx
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from gathering.config import load_settings
        from gathering import observability
        exporter = InMemorySpanExporter()
        settings = load_settings(database_url={migrated_database_url!r})
        real = observability.configure_tracing
        observability.configure_tracing = lambda s: real(s, exporter=exporter)
        import gathering.api.app as appmod
        appmod.configure_tracing = observability.configure_tracing
        app = appmod.create_app(settings=settings)
        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                assert (await c.get("/health/ready")).status_code == 200
            await app.state.gathering.close()
        asyncio.run(main())
        from gathering.llm import Message, ScriptedProvider
        async def llm():
            provider = ScriptedProvider(["traced reply", "streamed reply"])
            await provider.generate([Message.user("hi")])
            async for _ in provider.stream([Message.user("hi")]):
                pass
        asyncio.run(llm())
        spans = exporter.get_finished_spans()
        generate = next(s for s in spans if s.name == "llm.generate")
        assert generate.attributes["gen_ai.system"] == "scripted"
        assert generate.attributes["gen_ai.usage.output_tokens"] > 0
        print(sorted({{s.name for s in spans}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    names = result.stdout.strip().splitlines()[-1]
    assert "GET /health/ready" in names
    assert "SELECT" in names
    assert "llm.generate" in names and "llm.stream" in names


def test_console_format_in_a_terminal_and_json_otherwise(monkeypatch):
    configure_logging(load_settings(log_format="auto"))
    handler = logging.getLogger().handlers[0]
    assert handler.formatter is not None
    logging.getLogger().handlers.clear()


async def test_llm_calls_are_counted_in_metrics(probe_app):
    from gathering.llm import Message, ScriptedProvider

    await ScriptedProvider(["four words of reply"], model="metrics-probe").generate(
        [Message.user("count me please")]
    )
    async with _client(probe_app) as client:
        text = (await client.get("/metrics")).text
    line = next(
        row
        for row in text.splitlines()
        if row.startswith("gathering_llm_tokens_total{")
        and 'model="metrics-probe"' in row
        and 'direction="output"' in row
    )
    assert float(line.rsplit(" ", 1)[1]) >= 4
