"""docs/security.md's threat model names a test for every defence: each must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _threat_model() -> str:
    text = (ROOT / "docs" / "security.md").read_text()
    return text.split("## Threat model", 1)[1].split("\n## ", 1)[0]


def test_every_test_the_threat_model_names_exists():
    table = _threat_model()
    named = set(re.findall(r"\btest_\w+", table))
    files = {name for name in named if f"{name}.py" in table}
    functions = named - files
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
        files.discard(path.stem)
    assert functions and not functions - defined, sorted(functions - defined)
    assert not files, sorted(files)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 15 and all(re.search(r"test_\w+", row) for row in rows[1:])
