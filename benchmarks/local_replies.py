"""Replies of the local model: the old behaviour (max_tokens 1024, no repeat penalty) against
the new defaults (`LocalProvider()`: GATHERING_LOCAL_MAX_TOKENS, GATHERING_LOCAL_REPEAT_PENALTY).

A fixed set of short everyday questions goes through `LocalProvider.generate`, one reply per
question and configuration, the configurations taking turns on each question (same seed for
all, so only the configuration differs). For each configuration it prints the mean reply
length (tokens and words), the share of replies cut at max_tokens, the share of replies with
a repeated sentence, and the mean time per reply; then the ratio new/old of the time.

A repeated sentence: the same normalized sentence (lower case, letters and digits only,
single spaces; at least three words) appearing twice in one reply. Sentences end at `.`, `!`,
`?` or a line break.

Target: new/old time <= 0.5, and fewer replies with a repeated sentence than before.

    python benchmarks/local_replies.py [--prompts 6] [--max-seconds 240] [--penalties 1.1,1.3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gathering.llm import LocalProvider, Message, close_models, local_model_available

PROMPTS = (
    "Give me a tip to sleep better.",
    "How do I boil an egg?",
    "What should I cook tonight?",
    "Why is the sky blue?",
    "How can I stay focused while working from home?",
    "What is a good way to start learning the guitar?",
    "Can you explain what a budget is?",
    "What should I pack for a weekend at the beach?",
)
OLD_MAX_TOKENS = 1024
OLD_REPEAT_PENALTY = 1.0  # llama-cpp-python's default: none
TARGET = 0.5
SEED = 7

_SENTENCE_END = re.compile(r"[.!?]+|\n+")
_NOT_WORD = re.compile(r"[^\w]+")


def sentences(text: str) -> list[str]:
    """The normalized sentences of `text` with at least three words."""
    normalized = (
        " ".join(_NOT_WORD.sub(" ", part.lower()).split()) for part in _SENTENCE_END.split(text)
    )
    return [sentence for sentence in normalized if len(sentence.split()) >= 3]


def has_repeated_sentence(text: str) -> bool:
    """Whether one normalized sentence appears twice in `text`."""
    found = sentences(text)
    return len(set(found)) < len(found)


@dataclass
class Tally:
    """The replies of one configuration."""

    name: str
    provider: LocalProvider
    tokens: list[int] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    repeated: list[bool] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def reply(self, prompt: str) -> None:
        """One reply to `prompt`, measured."""
        started = time.perf_counter()
        completion = await self.provider.generate([Message.user(prompt)], seed=SEED)
        self.seconds.append(time.perf_counter() - started)
        self.tokens.append(completion.usage.output_tokens)
        self.words.append(len(completion.text.split()))
        self.repeated.append(has_repeated_sentence(completion.text))
        self.cut.append(completion.stop_reason == "max_tokens")
        self.texts.append(completion.text)

    def drop_after(self, count: int) -> None:
        """Keep only the replies to the first `count` prompts."""
        for replies in (self.tokens, self.words, self.seconds, self.repeated, self.cut, self.texts):
            del replies[count:]

    def row(self) -> str:
        """This configuration's figures, as one line of the table."""
        count = len(self.seconds)
        return (
            f"{self.name:<28} {count:>7} {statistics.mean(self.tokens):>7.0f} "
            f"{statistics.mean(self.words):>6.0f} {sum(self.cut) / count:>6.0%} "
            f"{sum(self.repeated) / count:>9.0%} {statistics.mean(self.seconds):>7.1f}"
        )


def configurations(penalties: list[float]) -> list[Tally]:
    """The old behaviour, the new defaults, and the new length with each extra penalty."""
    new = LocalProvider()
    new_tokens, new_penalty = new.defaults.max_tokens, new.defaults.extra["repeat_penalty"]
    tallies = [
        Tally(
            f"old (max {OLD_MAX_TOKENS}, penalty {OLD_REPEAT_PENALTY:g})",
            LocalProvider(max_tokens=OLD_MAX_TOKENS, repeat_penalty=OLD_REPEAT_PENALTY),
        ),
        Tally(f"new (max {new_tokens}, penalty {new_penalty:g})", new),
    ]
    tallies += [
        Tally(
            f"max {new_tokens}, penalty {penalty:g}",
            LocalProvider(repeat_penalty=penalty),
        )
        for penalty in penalties
    ]
    return tallies


async def main(prompts: int, max_seconds: float, penalties: list[float], show: bool) -> int:
    """Run the prompts through every configuration and print the table; 1 if unavailable."""
    if not local_model_available():
        print("the local model is not installed: pip install 'gathering[local]'")
        return 1
    tallies = configurations(penalties)
    await tallies[0].provider.loaded()  # loading is not a reply
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before the run")
    started = time.perf_counter()
    for done, prompt in enumerate(PROMPTS[:prompts]):
        try:
            for tally in tallies:
                if time.perf_counter() - started > max_seconds:
                    raise TimeoutError
                await tally.reply(prompt)
                if show:
                    print(f"--- {tally.name}: {prompt}\n{tally.texts[-1]}\n")
        except TimeoutError:
            # A prompt not answered by every configuration is left out of all of them.
            for tally in tallies:
                tally.drop_after(done)
            print(f"(stopped after {done} prompts: --max-seconds {max_seconds:g})")
            break
    if not tallies[0].seconds:
        print("no prompt finished within --max-seconds")
        return 1
    print(f"load average {os.getloadavg()[0]:.2f} after the run")
    print(f"{'configuration':<28} {'replies':>7} {'tokens':>7} {'words':>6} {'cut':>6}", end="")
    print(f" {'repeated':>9} {'seconds':>7}")
    for tally in tallies:
        print(tally.row())
    ratio = statistics.mean(tallies[1].seconds) / statistics.mean(tallies[0].seconds)
    print(f"time new/old: {ratio:.2f} (target <= {TARGET})")
    await asyncio.to_thread(close_models)
    return 0


def _penalties(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prompts", type=int, default=6, help=f"how many of the {len(PROMPTS)} prompts"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="start no prompt after this"
    )
    parser.add_argument(
        "--penalties", type=_penalties, default=[], help="more penalties to try, e.g. 1.1,1.3"
    )
    parser.add_argument("--show", action="store_true", help="print every reply")
    args: Any = parser.parse_args()
    sys.exit(asyncio.run(main(max(1, args.prompts), args.max_seconds, args.penalties, args.show)))
