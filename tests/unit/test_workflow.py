"""The CI workflow for forks (.github/workflows/test.yml) is valid for GitHub Actions and runs
what .ci/run runs. actionlint cannot be installed here (its PyPI wrapper downloads the binary at
build time), so check-jsonschema validates the file against GitHub's workflow schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "test.yml"


def check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    program = Path(sys.executable).parent / "check-jsonschema"  # a dev dependency
    assert program.exists(), f"{program} is missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(program), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_workflow_is_valid():
    result = check_workflow(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_invalid_workflow_is_reported(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: make test\n        timeout-minute: 5\n"
    )
    result = check_workflow(broken)
    assert result.returncode != 0 and "timeout-minute" in result.stdout + result.stderr


def test_every_job_runs_the_ci_script():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    for job in jobs.values():
        assert [step["run"] for step in job["steps"] if "run" in step][-1] == ".ci/run"
    assert jobs["embedded"]["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    images = {s["image"] for job in jobs.values() for s in job.get("services", {}).values()}
    assert {"pgvector/pgvector:pg16", "postgres:15"} <= images


def test_the_matrix_names_only_what_it_defines():
    text = WORKFLOW.read_text()
    matrix = yaml.safe_load(text)["jobs"]["embedded"]["strategy"]["matrix"]
    assert set(re.findall(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", text)) <= set(matrix)
