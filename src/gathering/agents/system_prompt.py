"""The system prompt: explicit ordered sections under a token budget, and the formatting of
recalled memories and knowledge passages as sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gathering.errors import InvalidInputError

if TYPE_CHECKING:
    from gathering.agents.knowledge import KnowledgeHit
    from gathering.agents.long_term_memory import Memory

# Sections in the order they appear; earlier ones win when the budget is short.
SECTION_ORDER = ("persona", "project", "task", "memories", "knowledge", "resume")
SECTION_TITLES = {
    "persona": "",
    "project": "## Project",
    "task": "## Current task",
    "memories": "## What you remember",
    "knowledge": "## From the knowledge base (quote the source when you use it)",
    "resume": "## Where you left off",
}
CHARS_PER_TOKEN = 4  # a conservative estimate that needs no tokenizer


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass
class PromptBuilder:
    """Collects named sections once each and renders them in `SECTION_ORDER`."""

    budget_tokens: int = 2000

    def __post_init__(self) -> None:
        self._sections: dict[str, str] = {}

    def set(self, name: str, text: str | None) -> PromptBuilder:
        """Set (or replace) a section; a blank text removes it. Unknown names are refused."""
        if name not in SECTION_ORDER:
            raise ValueError(f"unknown prompt section {name!r}; use one of {SECTION_ORDER}")
        if text and text.strip():
            self._sections[name] = text.strip()
        else:
            self._sections.pop(name, None)
        return self

    def build(self) -> str:
        """The prompt: sections in order, the last ones truncated or dropped to fit the budget."""
        remaining = self.budget_tokens * CHARS_PER_TOKEN
        parts: list[str] = []
        for name in SECTION_ORDER:
            body = self._sections.get(name)
            if body is None or remaining <= 0:
                continue
            title = SECTION_TITLES[name]
            text = f"{title}\n{body}" if title else body
            if len(text) > remaining:
                text = text[: max(0, remaining - 1)].rstrip() + "…"
            parts.append(text)
            remaining -= len(text) + 2
        return "\n\n".join(parts)


def format_memories_for_prompt(
    memories: Sequence[Memory],
    budget_chars: int = 2_000,
    *,
    heading: str = "Relevant long-term memories (most relevant first):",
) -> str:
    """Recalled memories as a compact prompt section of at most `budget_chars` characters.

    A `heading` line (none when empty), then one line per memory,
    `- [kind, YYYY-MM-DD] content`, in the given order; whitespace in a memory is collapsed.
    The line that would overflow the budget is cut with "…" when at least 40 characters of it
    fit, and nothing after it is shown. Returns "" when nothing fits.
    """
    if budget_chars < 0:
        raise InvalidInputError("budget_chars must be >= 0")
    lines = [heading] if heading else []
    used = len(heading) if heading else -1  # -1: the first line has no newline before it
    for memory in memories:
        text = " ".join(memory.content.split())
        line = f"- [{memory.kind}, {memory.created_at:%Y-%m-%d}] {text}"
        cost = len(line) + 1  # with the newline before it
        if used + cost <= budget_chars:
            lines.append(line)
            used += cost
            continue
        room = budget_chars - used - 1
        if room >= 40:
            lines.append(line[: room - 1].rstrip() + "…")
        break
    return "\n".join(lines) if len(lines) > (1 if heading else 0) else ""


def format_knowledge_for_prompt(
    hits: Sequence[KnowledgeHit],
    budget_chars: int = 4_000,
    *,
    heading: str = "Relevant knowledge (most relevant first):",
) -> str:
    """Search hits as a prompt section of at most `budget_chars` characters: a `heading` line
    (none when empty), then each passage quoted after its document title and part number;
    "" when nothing fits."""
    if budget_chars < 0:
        raise InvalidInputError("budget_chars must be >= 0")
    parts = [heading] if heading else []
    used = len(heading)
    for hit in hits:
        text = " ".join(hit.content.split())
        block = f'\n[{hit.document_title}, part {hit.seq + 1}]\n"{text}"'
        if used + len(block) <= budget_chars:
            parts.append(block)
            used += len(block)
            continue
        room = budget_chars - used
        header = f'\n[{hit.document_title}, part {hit.seq + 1}]\n"'
        if room - len(header) >= 80:
            parts.append(header + text[: room - len(header) - 2].rstrip() + '…"')
        break
    if len(parts) <= (1 if heading else 0):
        return ""
    return "".join(parts) if heading else "".join(parts).removeprefix("\n")
