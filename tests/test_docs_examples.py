"""The Python code blocks of README.md and docs/*.md run here, so the docs cannot drift from the
code.

How a block is marked (in its opening fence, after the language, as pytest-examples reads it):

- ```` ```python ````: a whole program. It runs in a fresh namespace, with every provider's key
  and address pointed at the local LLM stub (`llm_stub_env`). Top-level `await` is allowed (the
  block then runs in the test's event loop); a block without it runs in a worker thread, as a
  plain script would (so `agent.process_message(...)` returns the text).
- ```` ```python requires="db" ````: the same, with `db`, a connected `gathering.db.Database`
  on a fresh migrated database.
- ```` ```python test="skip" ````: a fragment (names defined elsewhere, `...` for elided code,
  alternatives side by side). It is only compiled, so it must still be valid Python.
- Other languages (```` ```sh ````, ```` ```text ````, a bare fence) are not Python and are
  left alone.

An unknown setting fails the test, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gathering.db import Database

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>.*)$")
SETTINGS = {"test": {"skip"}, "requires": {"db"}}


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it is, its language, its settings and its source."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    settings: dict[str, str]
    source: str

    def __str__(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, its indentation removed."""
    blocks, opening, lines = [], None, path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if not match:
            continue
        if opening is None:
            opening = (number, match)
            continue
        start, head = opening
        indent = len(head["indent"])
        language, *settings = shlex.split(head["info"]) or [""]
        body = "\n".join(text[indent:] for text in lines[start : number - 1])
        pairs = dict(setting.split("=", 1) for setting in settings)
        blocks.append(Block(path, start, language, pairs, body + "\n"))
        opening = None
    assert opening is None, f"{path}: a fence opened at line {opening[0]} is never closed"
    return blocks


def python_blocks() -> list[Block]:
    return [b for path in DOCS for b in code_blocks(path) if b.language in ("python", "py")]


BLOCKS = python_blocks()
RUNNABLE = [b for b in BLOCKS if b.settings.get("test") != "skip"]


def compiled(block: Block) -> Any:
    """The block as code, top-level `await` allowed, with line numbers of the Markdown file."""
    tree = ast.parse(block.source, str(block), mode="exec")
    ast.increment_lineno(tree, block.line)
    return compile(tree, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def run(block: Block, namespace: dict[str, Any]) -> None:
    """Run the block like a script: in the loop when it awaits, else in a worker thread."""
    code = compiled(block)
    namespace.setdefault("__name__", "__main__")
    if code.co_flags & inspect.CO_COROUTINE:
        await eval(code, namespace)
    else:
        await asyncio.to_thread(exec, code, namespace)


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_every_python_block_is_valid_python_with_known_settings(block: Block) -> None:
    for key, value in block.settings.items():
        assert value in SETTINGS.get(key, ()), f"{block}: unknown setting {key}={value!r}"
    compiled(block)


@pytest.mark.parametrize("block", [b for b in RUNNABLE if "requires" not in b.settings], ids=str)
async def test_a_python_block_runs(block: Block, llm_stub_env: Any) -> None:
    await run(block, {})


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Database]:
    database = Database(url=migrated_database_url, min_size=0, max_size=4)
    await database.connect()
    yield database
    await database.disconnect()


@pytest.mark.parametrize("block", [b for b in RUNNABLE if "requires" in b.settings], ids=str)
async def test_a_python_block_on_a_database_runs(
    block: Block, db: Database, llm_stub_env: Any
) -> None:
    await run(block, {"db": db})


def test_the_collector_reads_fences_settings_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        'Text\n\n```python\nx = 1\n```\n\n- item\n\n  ```python test="skip"\n  y = (\n  ```\n'
        '```sh\nmake\n```\n```python requires="db"\nawait db.fetch_val("SELECT 1")\n```\n'
    )

    blocks = code_blocks(page)

    assert [(b.line, b.language, b.settings, b.source) for b in blocks] == [
        (3, "python", {}, "x = 1\n"),
        (9, "python", {"test": "skip"}, "y = (\n"),
        (12, "sh", {}, "make\n"),
        (15, "python", {"requires": "db"}, 'await db.fetch_val("SELECT 1")\n'),
    ]
    with pytest.raises(SyntaxError):
        compiled(blocks[1])  # a fragment that is not Python fails the syntax test
    assert compiled(blocks[3]).co_flags & inspect.CO_COROUTINE


async def test_a_failing_block_fails_its_test(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    await asyncio.to_thread(
        page.write_text, "```python\nassert 1 + 1 == 3, 'docs are wrong'\n```\n"
    )

    with pytest.raises(AssertionError, match="docs are wrong"):
        await run((await asyncio.to_thread(code_blocks, page))[0], {})


def test_the_docs_have_runnable_blocks() -> None:
    assert len(RUNNABLE) >= 5
    assert {b.path.name for b in RUNNABLE} >= {"README.md", "testing.md"}
