"""Subscription patterns: an exact event type, or dotted words with `*` wildcards.

`*` stands for one or more whole words: `pipeline.*` matches `pipeline.started` and
`pipeline.node.failed`, `*.failed` matches every failure, `*` matches every event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gathering.errors import InvalidInputError

_WORD = re.compile(r"^[A-Za-z0-9_-]+$")
# One or more dotted words; written so that Python's `re` and PostgreSQL's `~` read it alike.
_ANY_WORDS = r"[^.]+(\.[^.]+)*"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled subscription pattern."""

    text: str
    regex: str = field(repr=False)
    exact: bool
    _compiled: re.Pattern[str] = field(repr=False, compare=False)

    def matches(self, event_type: str) -> bool:
        if self.exact:
            return event_type == self.text
        return self._compiled.match(event_type) is not None


def compile_pattern(pattern: str) -> Pattern:
    """Check and compile `pattern`; a malformed one raises `InvalidInputError`."""
    words = pattern.split(".") if isinstance(pattern, str) else []
    if not words or any(w != "*" and not _WORD.match(w) for w in words) or len(pattern) > 200:
        raise InvalidInputError(
            f"invalid event pattern {pattern!r}",
            hint="use an event type such as 'pipeline.started', or '*' for whole words: "
            "'pipeline.*', '*.failed', '*'",
        )
    regex = "^" + r"\.".join(_ANY_WORDS if w == "*" else w for w in words) + "$"
    return Pattern(pattern, regex, "*" not in words, re.compile(regex))
