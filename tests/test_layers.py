"""DESIGN.md's layer rule, enforced: a module imports only from its own layer and below.

The order mirrors the table in DESIGN.md (top first); the allow-list of exceptions is empty.
`gathering.testing` (the public test kit) sits above every layer, and no module of `src/`
imports it, not even a module of another layer above.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gathering"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("testing",),  # the test kit: may use any layer; none may import it (checked below)
    ("__main__",),  # `python -m gathering`: the whole command line
    ("api",),
    ("cli", "doctor"),
    ("scheduler",),
    ("circles",),
    ("pipelines",),
    ("projects",),
    ("agents",),
    ("tools",),
    ("usage",),
    ("catalog",),
    ("auth",),
    ("llm",),
    ("jobs",),
    ("events",),
    ("db",),
    ("observability",),
    ("config",),
    ("errors", "cancellation", "__init__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
ALLOWED: set[tuple[str, str]] = set()  # (importer, imported) exceptions: none


def top_name(module: str) -> str | None:
    """`gathering.api.routers.ws` -> `api`; None for other packages."""
    parts = module.split(".")
    if parts[0] != "gathering":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, package: str) -> list[tuple[str, list[str]]]:
    """Each import of `source` (lazy ones too, relative ones resolved): the module as written,
    and the modules it may load (`from gathering import testing` loads `gathering.testing`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [base, *(f"{base}.{alias.name}" for alias in node.names)]))
    return found


def upward_imports(module: str, source: str) -> list[str]:
    """The imports of `module` (a dotted name) that reach a layer above its own."""
    own = top_name(module)
    assert own in RANK, f"{module}: its layer is not in the table; add it to LAYERS"
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    problems = []
    for written, loaded in imported_modules(source, package):
        layers = {top_name(target) for target in loaded}
        if "testing" in layers and own != "testing":
            problems.append(f"{module} imports the test kit ({written})")
        above = sorted(
            layer
            for layer in layers
            if layer in RANK and RANK[layer] < RANK[own] and (own, layer) not in ALLOWED
        )
        if above:
            problems.append(f"{module} ({own}) imports {written} ({above[0]}), a layer above it")
    return problems


def modules() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        dotted = ".".join(("gathering", *path.relative_to(SRC).with_suffix("").parts))
        found.append((dotted, path.read_text()))
    return found


def test_no_module_imports_a_layer_above_it():
    problems = [
        problem for module, source in modules() for problem in upward_imports(module, source)
    ]
    assert not problems, "\n".join(problems)
    assert len(modules()) > 50


def test_a_module_that_imports_upward_is_caught():
    # The rule's own proof: a db module reaching for the API, lazily inside a function, an
    # agents module importing the CLI, and anything importing the test kit.
    db_module = "def f():\n    from gathering.api.app import create_app\n"
    assert upward_imports("gathering.db.pool", db_module) == [
        "gathering.db.pool (db) imports gathering.api.app (api), a layer above it"
    ]
    assert upward_imports("gathering.agents.x", "import gathering.cli\n")
    assert upward_imports("gathering.llm.x", "from gathering import testing\n")
    assert upward_imports("gathering.tools.x", "from gathering.testing import stub\n")
    relative = "from ..api import deps\n"
    assert upward_imports("gathering.events.bus", relative)
    assert upward_imports("gathering.api.app", "from gathering.db import Database\n") == []
    kit = "from gathering.testing.wire_requests import Body\nfrom gathering.api import app\n"
    assert upward_imports("gathering.testing.llm_stub_server", kit) == []
