"""Each package's public surface (`__all__`) matches a checked-in snapshot, so a change to it
is a visible diff in review. After a deliberate change, refresh the snapshot with
`GATHERING_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/test_public_api.py`."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path

import gathering

SNAPSHOT = Path(__file__).parent / "snapshots" / "public_api.json"


def public_surface() -> dict[str, list[str]]:
    """`{package: sorted __all__}` for every package of gathering that declares one."""
    surface = {}
    for info in pkgutil.walk_packages(gathering.__path__, "gathering."):
        if not info.ispkg:
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is not None:
            surface[info.name] = sorted(names)
    return surface


def differences(expected: dict[str, list[str]], actual: dict[str, list[str]]) -> list[str]:
    """What changed, one line per package: names added (+) and removed (-)."""
    lines = []
    for package in sorted(expected.keys() | actual.keys()):
        before, after = set(expected.get(package, [])), set(actual.get(package, []))
        if before != after:
            added, removed = sorted(after - before), sorted(before - after)
            lines.append(f"{package}: +{added} -{removed}")
    return lines


def test_the_public_surface_matches_the_snapshot():
    actual = public_surface()
    if os.environ.get("GATHERING_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    changed = differences(expected, actual)
    assert not changed, (
        "the public API changed; if that is meant, refresh the snapshot "
        "(GATHERING_UPDATE_SNAPSHOT=1):\n" + "\n".join(changed)
    )


def test_every_public_name_exists_and_none_is_private():
    for package, names in public_surface().items():
        module = importlib.import_module(package)
        for name in names:
            assert hasattr(module, name), f"{package}.__all__ names {name}, which is missing"
            assert not name.startswith("_"), f"{package}.__all__ exports private {name}"


def test_a_change_to_the_surface_is_reported():
    expected = {"gathering.db": ["Database", "redact_url"]}
    actual = {"gathering.db": ["Database", "test_seam"], "gathering.new": ["Thing"]}
    assert differences(expected, actual) == [
        "gathering.db: +['test_seam'] -['redact_url']",
        "gathering.new: +['Thing'] -[]",
    ]
