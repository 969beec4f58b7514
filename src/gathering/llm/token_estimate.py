"""Counting tokens without a tokenizer: a conservative estimate for budgets and trimming."""

from __future__ import annotations

CHARS_PER_TOKEN = 4
"""English prose averages about four characters a token in the providers' tokenizers."""

MESSAGE_FRAMING_TOKENS = 5
"""Tokens a message costs beyond its text: ChatML's ``<|im_start|>role\\n … <|im_end|>\\n``
is five, OpenAI counts three or four a message, Anthropic's turns are alike."""


def estimate_tokens(text: str) -> int:
    """The tokens `text` costs as one message of a prompt: characters / 4, rounded up, plus
    `MESSAGE_FRAMING_TOKENS`. Needs no provider; providers with a tokenizer count exactly."""
    return -(-len(text) // CHARS_PER_TOKEN) + MESSAGE_FRAMING_TOKENS
