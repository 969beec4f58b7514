"""HTTP metric labels come from a closed set: made-up methods and unmatched paths add no series."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from gathering.api.app import create_app
from gathering.config import load_settings

SERIES = re.compile(r"^(?P<name>gathering_http_request[a-z_]*)\{(?P<labels>[^}]*)\}", re.MULTILINE)


@pytest.fixture
async def metrics_app(migrated_database_url):
    application = create_app(settings=load_settings(database_url=migrated_database_url))
    yield application
    await application.state.gathering.close()


async def test_unknown_methods_and_unmatched_paths_share_labels(metrics_app):
    method = f"FOOBAR{secrets.token_hex(3).upper()}"
    paths = [f"/no-route-{secrets.token_hex(6)}/{n}" for n in range(5)]
    transport = httpx.ASGITransport(app=metrics_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            assert (await client.get(path)).status_code == 404
            await client.request(method, path)
        await client.request(method, "/health")
        await client.request("get", "/health")  # methods are case-sensitive: "get" is not GET
        text = (await client.get("/metrics")).text

    series = {(match["name"], match["labels"]) for match in SERIES.finditer(text)}
    labels = [label for _, label in series]
    assert 'method="GET",route="unmatched",status="404"' in labels
    assert any(label.startswith('method="OTHER",route="unmatched",') for label in labels)
    assert any(label.startswith('method="OTHER",route="/health",') for label in labels)
    for label in labels:
        assert method not in label and 'method="get"' not in label
        assert "no-route-" not in label
    latency = "gathering_http_request_duration_seconds_count"
    assert (latency, 'method="OTHER",route="unmatched"') in series
