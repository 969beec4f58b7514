"""The system prompt, assembled from explicit ordered sections under a token budget."""

from __future__ import annotations

from dataclasses import dataclass

# Sections in the order they appear; earlier ones win when the budget is short.
SECTION_ORDER = ("persona", "project", "task", "memories", "resume")
SECTION_TITLES = {
    "persona": "",
    "project": "## Project",
    "task": "## Current task",
    "memories": "## What you remember",
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
