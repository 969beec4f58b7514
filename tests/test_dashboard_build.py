"""The dashboard's checked-in client matches the server's schema, and its build keeps the
first load small (≤ 250 KB of gzipped JavaScript; Monaco, xterm and React Flow load later)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard"
BUILD = ROOT / "src" / "gathering" / "api" / "dashboard_build"
FIRST_LOAD_BUDGET = 250 * 1024


def _clean_env() -> dict[str, str]:
    """The environment `make dashboard-client` generates with: no GatheRing settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATHERING_")}


def test_the_checked_in_schema_is_the_server_s(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    made = subprocess.run(
        [sys.executable, "-m", "gathering", "openapi", "--output", str(out)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    checked_in = json.loads((DASHBOARD / "openapi.json").read_text())
    assert json.loads(out.read_text()) == checked_in, (
        "dashboard/openapi.json is stale: run `make dashboard-client` and commit the result"
    )


def test_the_checked_in_client_is_generated_from_that_schema(tmp_path: Path) -> None:
    tool = DASHBOARD / "node_modules" / ".bin" / "openapi-typescript"
    assert tool.exists(), "the dashboard's npm packages are missing: run `make dashboard`"
    out = tmp_path / "schema.d.ts"
    script = json.loads((DASHBOARD / "package.json").read_text())["scripts"]["client"]
    args = script.split()[1:]
    args[args.index("-o") + 1] = str(out)
    made = subprocess.run(
        [str(tool), *args], cwd=DASHBOARD, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    assert out.read_text() == (DASHBOARD / "src" / "api" / "schema.d.ts").read_text(), (
        "dashboard/src/api/schema.d.ts is stale: run `make dashboard-client` and commit it"
    )


def test_the_first_load_fits_its_budget() -> None:
    index = BUILD / "index.html"
    assert index.is_file(), "the dashboard is not built: run `make dashboard`"
    html = index.read_text()
    first = set(re.findall(r'(?:src|href)="(/assets/[^"]+\.js)"', html))
    assert first, html
    size = sum(len(gzip.compress((BUILD / name.lstrip("/")).read_bytes())) for name in first)
    assert size <= FIRST_LOAD_BUDGET, f"{size} bytes of gzipped JavaScript on the first load"
