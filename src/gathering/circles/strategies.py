"""Turn strategies: who speaks next in a circle's conversation. Pure functions of the stored
transcript, so that any instance picks the same speaker after a restart.

- `round_robin`: the participants in their order;
- `mention`: whoever the last message @names (the next in order when it names no one else);
- `facilitator`: the facilitator's answer to "who speaks next?" (`pick_named` reads it), the
  next in order when the answer names no participant;
- `free`: a seeded draw among the others than the last speaker: the same seed gives the same
  conversation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["round_robin", "mention", "facilitator", "free"]
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "mention", "facilitator", "free")


@dataclass(frozen=True)
class Speaker:
    """A participant: their member id and the name others call them by."""

    member_id: int
    name: str


def round_robin(participants: Sequence[Speaker], turn: int) -> Speaker:
    """The speaker of agent turn `turn` (from 1) in order."""
    return participants[(turn - 1) % len(participants)]


def _after(participants: Sequence[Speaker], last: int | None) -> Speaker:
    """The participant after member `last` in order (the first when `last` is no one's)."""
    ids = [p.member_id for p in participants]
    if last not in ids:
        return participants[0]
    return participants[(ids.index(last) + 1) % len(participants)]


def named_in(text: str, participants: Sequence[Speaker], *, at_sign: bool) -> list[Speaker]:
    """The participants `text` names (as `@name` when `at_sign`), in the order it names them."""
    found: list[tuple[int, Speaker]] = []
    for speaker in participants:
        prefix = "@" if at_sign else r"(?<![\w@])"
        match = re.search(prefix + re.escape(speaker.name) + r"(?![\w-])", text, re.IGNORECASE)
        if match:
            found.append((match.start(), speaker))
    return [speaker for _, speaker in sorted(found, key=lambda pair: pair[0])]


def mention(
    participants: Sequence[Speaker], last_text: str | None, last_speaker: int | None
) -> tuple[Speaker, str]:
    """The first participant the last message @names other than its speaker, with why."""
    if last_text:
        for speaker in named_in(last_text, participants, at_sign=True):
            if speaker.member_id != last_speaker:
                return speaker, f"@{speaker.name} was named"
    nxt = _after(participants, last_speaker)
    return nxt, "no one was @named: the next in order"


def pick_named(
    answer: str, participants: Sequence[Speaker], last_speaker: int | None
) -> tuple[Speaker, str]:
    """The participant a facilitator's `answer` names, or the next in order when it names
    none (or only the last speaker), with why."""
    for speaker in named_in(answer, participants, at_sign=False):
        if speaker.member_id != last_speaker or len(participants) == 1:
            return speaker, f"the facilitator chose {speaker.name}"
    nxt = _after(participants, last_speaker)
    return nxt, f"the facilitator's answer named no participant ({answer[:80]!r}): next in order"


def free(
    participants: Sequence[Speaker], seed: int, turn: int, last_speaker: int | None
) -> Speaker:
    """A draw, reproducible from `seed` and `turn`, among those who did not speak last."""
    others = [p for p in participants if p.member_id != last_speaker] or list(participants)
    return random.Random(f"{seed}:{turn}").choice(others)  # noqa: S311 - not for security
