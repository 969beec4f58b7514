"""Query-string credentials (`/ws?access_token=...`, `?api_key=...`) never reach a log or a span."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import structlog
from asgi_ws import ASGIWebSocket  # tests/_support, on the path via conftest
from fastapi import Request
from live_server import LiveServer
from websockets.sync.client import connect

from gathering.api.app import create_app
from gathering.config import load_settings
from gathering.observability import configure_logging, redact_query

SUPPORT = Path(__file__).resolve().parents[1] / "_support"


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("access_token=S&x=1", "access_token=REDACTED&x=1"),
        ("/ws?access_token=S", "/ws?access_token=REDACTED"),
        (
            "https://h:8000/ws?x=1&ACCESS_TOKEN=S#frag",
            "https://h:8000/ws?x=1&ACCESS_TOKEN=REDACTED",
        ),
        (
            '1.2.3.4:5 - "GET /x?api_key=S&page=2 HTTP/1.1" 200',
            '1.2.3.4:5 - "GET /x?api_key=REDACTED&page=2 HTTP/1.1" 200',
        ),
        (
            "?token=S&apikey=S&Key=S&password=S&secret=S",
            "?token=REDACTED&apikey=REDACTED&Key=REDACTED&password=REDACTED&secret=REDACTED",
        ),
        (
            "?refresh_token=S&code=S&Signature=S",
            "?refresh_token=REDACTED&code=REDACTED&Signature=REDACTED",
        ),
        (
            "?Api-Key=S&csrf_token=S&access%5Ftoken=S",
            "?Api-Key=REDACTED&csrf_token=REDACTED&access%5Ftoken=REDACTED",
        ),
        (
            '- "WebSocket /ws?access_token=S" [accepted]',
            '- "WebSocket /ws?access_token=REDACTED" [accepted]',
        ),
        (
            '- "WebSocket /ws?ticket=S" [accepted]',
            '- "WebSocket /ws?ticket=REDACTED" [accepted]',
        ),
        ('"GET /h?api_key=S"S&x=1 HTTP/1.1"', '"GET /h?api_key=REDACTED&x=1 HTTP/1.1"'),
        ("URL('http://x?key=S')", "URL('http://x?key=REDACTED')"),
        ("?page=2&sort=name&monkey=3", "?page=2&sort=name&monkey=3"),
        ("no query here, token: S", "no query here, token: S"),
    ],
)
def test_redact_query_blanks_values_and_keeps_names(text, kept):
    assert redact_query(text) == kept
    assert redact_query(kept) == kept  # a line redacted twice (record, then handler) stays whole


@pytest.fixture
async def logging_app(fresh_database_url):
    """The real app, plus a route of ours that logs the full URL of its request."""
    application = create_app(settings=load_settings(database_url=fresh_database_url))

    async def echo_url(request: Request) -> dict[str, str]:
        structlog.get_logger("gathering.test").info("request seen", url=str(request.url))
        return {"ok": "yes"}

    application.add_api_route("/_test/echo-url", echo_url)
    yield application
    await application.state.gathering.close()


async def test_in_process_logs_never_show_query_credentials(logging_app, capsys, caplog):
    api_key, ws_token = _secret("apikey"), _secret("wstoken")
    configure_logging(load_settings(log_format="json", log_level="INFO"))
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # configure_logging replaced the root handlers
    caplog.set_level(logging.INFO, logger="httpx")  # httpx writes each request URL at INFO
    try:
        transport = httpx.ASGITransport(app=logging_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            echoed = await client.get("/_test/echo-url", params={"api_key": api_key, "page": "2"})
            missing = await client.get("/no/such/route", params={"API_KEY": api_key})
        async with ASGIWebSocket(logging_app, "/ws", query=f"access_token={ws_token}") as ws:
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json())["type"] == "pong"
        assert echoed.status_code == 200 and missing.status_code == 404
        rendered = capsys.readouterr().err
        records = "\n".join(record.getMessage() for record in caplog.records)
    finally:
        root.handlers.clear()
    lines = [json.loads(line) for line in rendered.splitlines() if line.startswith("{")]
    seen = next(line for line in lines if line.get("event") == "request seen")
    assert seen["url"] == "http://test/_test/echo-url?api_key=REDACTED&page=2"
    assert "api_key=REDACTED" in records  # httpx's own request line, as every handler sees it
    for text in (rendered, records):
        assert api_key not in text and ws_token not in text


@pytest.mark.slow
def test_gathering_serve_access_log_never_shows_query_credentials():
    """Only a real server writes uvicorn's access log and its WebSocket handshake lines."""
    api_key, ws_token = _secret("apikey"), _secret("wstoken")
    server = LiveServer(GATHERING_LOG_LEVEL="INFO", GATHERING_LOG_FORMAT="json")
    try:
        server.wait_ready()
        assert httpx.get(f"{server.base}/health", params={"api_key": api_key}).status_code == 200
        url = f"ws://127.0.0.1:{server.port}/ws?access_token={ws_token}"
        with connect(url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "pong"
        deadline = time.monotonic() + 10
        output = server.output()
        while not ("/health?api_key=" in output and "/ws?access_token=" in output):
            assert time.monotonic() < deadline, f"no access lines in:\n{output}"
            time.sleep(0.1)
            output = server.output()
    finally:
        server.stop()
    assert api_key not in output and ws_token not in output
    events = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
    assert any(e.endswith('"GET /health?api_key=REDACTED HTTP/1.1" 200') for e in events)
    assert any(e.endswith('"WebSocket /ws?access_token=REDACTED" [accepted]') for e in events)


def test_spans_never_show_query_credentials(fresh_database_url):
    """Run in a fresh process: the tracer provider is process-global."""
    api_key, ws_token = _secret("apikey"), _secret("wstoken")
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(SUPPORT)!r})
        import httpx
        from asgi_ws import ASGIWebSocket
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from gathering import observability
        from gathering.config import load_settings
        exporter = InMemorySpanExporter()
        real = observability.configure_tracing
        observability.configure_tracing = lambda s: real(s, exporter=exporter)
        import gathering.api.app as appmod
        appmod.configure_tracing = observability.configure_tracing
        app = appmod.create_app(settings=load_settings(database_url={fresh_database_url!r}))
        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                r = await c.get("/health", params={{"api_key": {api_key!r}, "page": "2"}})
                assert r.status_code == 200
            async with ASGIWebSocket(app, "/ws", query="access_token={ws_token}") as ws:
                await ws.send_json({{"type": "ping"}})
                assert (await ws.receive_json())["type"] == "pong"
            await app.state.gathering.close()
        asyncio.run(main())
        spans = [json.loads(span.to_json()) for span in exporter.get_finished_spans()]
        print(json.dumps(spans))
        """
    )
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    exported = result.stdout.strip().splitlines()[-1]
    spans = json.loads(exported)
    values = [str(v) for span in spans for v in span["attributes"].values()]
    assert "http://test/health?api_key=REDACTED&page=2" in values  # http.url
    assert "api_key=REDACTED&page=2" in values  # url.query
    assert any(v.endswith("/ws?access_token=REDACTED") for v in values)
    assert api_key not in exported and ws_token not in exported
