"""Chunking: a text cut into overlapping chunks that end on natural boundaries.

```python
for chunk in chunk_text(text, target_chars=1_200, overlap_chars=200):
    assert text[chunk.start:chunk.end] == chunk.content
```
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from gathering.errors import InvalidInputError

DEFAULT_TARGET_CHARS = 1_200
DEFAULT_OVERLAP_CHARS = 200

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# Whitespace after . ! ? or an ellipsis, and after up to two closing quotes or brackets there
# (which stay with their sentence). Lookbehinds need a fixed width: one alternative per width.
_END = "[.!?\u2026]"
_CLOSE = "[\"'\u201d\u2019)\\]]"
_SENTENCE_BREAK = re.compile(
    f"(?<={_END})\\s+|(?<={_END}{_CLOSE})\\s+|(?<={_END}{_CLOSE}{_CLOSE})\\s+"
)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TextChunk:
    """A piece of a text: `text[start:end] == content`."""

    seq: int
    start: int
    end: int
    content: str


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> Iterator[range]:
    """The non-blank stretches of `text[start:end]` between matches of `separator`, trimmed."""
    position = start
    for match in separator.finditer(text, start, end):
        yield from _trimmed(text, position, match.start())
        position = match.end()
    yield from _trimmed(text, position, end)


def _trimmed(text: str, start: int, end: int) -> Iterator[range]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield range(start, end)


def _units(text: str, target: int) -> list[range]:
    """Paragraphs that fit in `target`; longer ones as sentences; longer sentences as words;
    longer words in pieces of `target` characters."""
    units: list[range] = []
    for paragraph in _pieces(text, 0, len(text), _PARAGRAPH_BREAK):
        if len(paragraph) <= target:
            units.append(paragraph)
            continue
        for sentence in _pieces(text, paragraph.start, paragraph.stop, _SENTENCE_BREAK):
            if len(sentence) <= target:
                units.append(sentence)
            else:
                for word in _WORD.finditer(text, sentence.start, sentence.stop):
                    # A "word" longer than a chunk (a CSV line, minified JSON, a URL list) is
                    # cut into pieces of `target` characters.
                    units.extend(
                        range(start, min(start + target, word.end()))
                        for start in range(word.start(), word.end(), target)
                    )
    return units


def chunk_text(
    text: str,
    target_chars: int = DEFAULT_TARGET_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> list[TextChunk]:
    """Cut `text` into chunks of at most `target_chars`, each a slice of the text.

    Chunks end on paragraph boundaries where they can, else on sentence boundaries, else
    between words; a single word longer than `target_chars` is cut into pieces of
    `target_chars` characters, so that no chunk is longer. A chunk
    repeats up to `overlap_chars` of the end of the previous one, in whole pieces (the
    paragraphs, sentences or words the text was cut into), so that a passage cut in two can
    still be found; a chunk that ends a long paragraph is not repeated. Whitespace-only text
    gives no chunks.
    """
    if isinstance(target_chars, bool) or not isinstance(target_chars, int) or target_chars < 1:
        raise InvalidInputError("target_chars must be an integer >= 1")
    if (
        isinstance(overlap_chars, bool)
        or not isinstance(overlap_chars, int)
        or not 0 <= overlap_chars < target_chars
    ):
        raise InvalidInputError("overlap_chars must be an integer from 0 to target_chars - 1")
    units = _units(text, target_chars)
    chunks: list[TextChunk] = []
    first = 0
    while first < len(units):
        last = first  # the chunk is units[first..last]
        while last + 1 < len(units) and units[last + 1].stop - units[first].start <= target_chars:
            last += 1
        start, end = units[first].start, units[last].stop
        chunks.append(TextChunk(len(chunks), start, end, text[start:end]))
        following = last + 1
        if following >= len(units):
            break
        # The next chunk starts at the earliest unit of this one's tail that keeps the overlap
        # within bounds and still leaves room for the first unit not yet covered.
        next_first = following
        while (
            next_first - 1 > first
            and end - units[next_first - 1].start <= overlap_chars
            and units[following].stop - units[next_first - 1].start <= target_chars
        ):
            next_first -= 1
        first = next_first
    return chunks
