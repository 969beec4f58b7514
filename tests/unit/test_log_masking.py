"""Provider keys in log lines: whatever quotes them (a field that is no string, a longer key
they begin, an exception no thread caught), a key in use never reaches stderr in clear."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest
import structlog

from gathering import observability
from gathering.config import load_settings
from gathering.observability import mask_in_logs, mask_secrets


@pytest.fixture
def console_logging() -> Iterator[Callable[[], None]]:
    """Sets our logging up (console format, writing to the stderr of the moment: call it in
    the test, where capsys captures it); the root handlers are put back after."""
    root = logging.getLogger()
    handlers, hook = root.handlers[:], threading.excepthook
    yield lambda: observability.configure_logging(load_settings(log_format="console"))
    root.handlers[:] = handlers
    threading.excepthook = hook


def test_a_key_that_begins_another_does_not_uncover_the_longer_one() -> None:
    short, long = "sk-prefix-0123456789", "sk-prefix-0123456789-and-then-more-ABCD"
    mask_in_logs(short)
    mask_in_logs(long)
    mask_in_logs(short)  # used again: the most recent
    line = mask_secrets(f"a={long} b={short}")
    assert "and-then-more" not in line and "0123456789" not in line
    assert line == "a=sk-...ABCD b=****"


def test_a_short_key_shows_nothing_of_itself() -> None:
    mask_in_logs("Pa55word")
    assert mask_secrets("the key Pa55word failed") == "the key **** failed"


def test_keys_inside_fields_that_are_no_strings_are_masked(console_logging, capsys) -> None:
    console_logging()
    key = "sk-field-0123456789abcdefghijKLMN"
    mask_in_logs(key)
    log = structlog.get_logger("gathering.test")
    log.error("bad call", detail={"auth": key}, items=[key], error=ValueError(f"bad {key}"))
    printed = capsys.readouterr().err
    assert "bad call" in printed and "sk-...KLMN" in printed
    assert key not in printed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_exception_no_thread_caught_is_logged_masked(console_logging, capsys) -> None:
    """Logged, masked; the hook there before ours (pytest's, here) still sees it."""
    console_logging()
    key = "sk-thread-0123456789abcdefghijOPQR"
    mask_in_logs(key)

    def fail() -> None:
        raise RuntimeError(f"the provider said: bad key {key}")

    thread = threading.Thread(target=fail, name="worker-7")
    thread.start()
    thread.join()
    printed = capsys.readouterr().err
    assert "uncaught exception in thread worker-7" in printed
    assert "bad key sk-...OPQR" in printed and key not in printed


def test_a_key_escaped_by_a_json_line_is_masked_too(console_logging, capsys) -> None:
    key = 'sk-quote"and\\backslash-0123456789WXYZ'
    mask_in_logs(key)
    root = logging.getLogger()
    handlers = root.handlers[:]
    observability.configure_logging(load_settings(log_format="json"))
    try:
        structlog.get_logger("gathering.test").error("bad call", detail={"auth": key})
    finally:
        root.handlers[:] = handlers
    printed = capsys.readouterr().err
    assert "bad call" in printed and "sk-...WXYZ" in printed
    assert "0123456789" not in printed


def test_a_line_masked_while_the_masks_change_on_the_same_thread_does_not_hang() -> None:
    """A finalizer the garbage collector runs while this thread registers a key (or builds
    the pattern) may log a line (asyncio's "Task was destroyed but it is pending!"): masking
    it on the same thread must not wait for a lock that thread holds."""
    key = "sk-reentrant-0123456789abcdefWXYZ"
    outcome: list[str] = []

    def finalizer_logs_meanwhile() -> None:
        with observability._MASKS_LOCK:  # as mask_in_logs holds it, or the pattern's build
            mask_in_logs(key)
            outcome.append(mask_secrets(f"Task was destroyed: {key}"))

    thread = threading.Thread(target=finalizer_logs_meanwhile, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "masking a line hung on the masks' lock"
    assert outcome == ["Task was destroyed: sk-...WXYZ"]


def test_a_key_registered_while_the_pattern_is_built_is_masked_in_the_next_line() -> None:
    """The pattern is built outside the lock from a snapshot: a build that began before a key
    came does not stand for the lines after it."""
    first, second = "sk-before-the-build-0123456789AAAA", "sk-during-the-build-0123456789BBBB"
    mask_in_logs(first)
    real_compile = observability.re.compile
    calls = 0

    def compile_while_a_key_comes(pattern: str, *args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            mask_in_logs(second)  # another thread's key, mid-build
        return real_compile(pattern, *args)

    observability.re.compile = compile_while_a_key_comes  # type: ignore[assignment]
    try:
        assert mask_secrets(first) == "sk-...AAAA"
    finally:
        observability.re.compile = real_compile
    assert mask_secrets(f"{first} {second}") == "sk-...AAAA sk-...BBBB"
