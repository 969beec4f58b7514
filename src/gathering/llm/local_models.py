"""llama.cpp models loaded in this process, each with its own thread and a bounded queue.

llama.cpp calls block, and a model must not be used from two threads at once. So each model
gets one thread of its own (a one-worker executor named "gathering-local-model"): loading,
generation, tokenizing and embeddings all run there, one after another, and never hold a
thread of the event loop's default executor, which password hashing and sync tools need.
At most `GATHERING_LOCAL_QUEUE_SIZE` calls wait behind the running one; a call beyond that
is refused at once with `ProviderBusyError`.

`preload_default_model()` loads the default model ahead of the first chat (from a worker
thread: it blocks).
"""

from __future__ import annotations

import asyncio
import atexit
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from gathering.errors import (
    GatheringError,
    ProviderBusyError,
    ProviderNotConfiguredError,
    ProviderUnavailableError,
)
from gathering.llm.common import configured_value

if TYPE_CHECKING:
    from llama_cpp import Llama

T = TypeVar("T")

log = structlog.get_logger(__name__)

THREAD_NAME = "gathering-local-model"
DEFAULT_QUEUE_SIZE = 8
INSTALL_HINT = "install the local extra: pip install 'gathering[local]' (or run `make run`)"
# Seconds one call is assumed to take before any has been timed (for `retry_after`).
_UNTIMED_CALL_SECONDS = 2.0
# Weight of the newest call in the running mean of call durations.
_MEAN_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What identifies a loaded model: the file and the llama.cpp settings it runs with."""

    path: Path
    n_ctx: int
    n_threads: int
    embedding: bool = False


def queue_size() -> int:
    """How many calls may wait for a local model beyond the running one."""
    configured = configured_value("local_queue_size")
    return DEFAULT_QUEUE_SIZE if configured is None else int(configured)


class LocalModel:
    """One GGUF file run by llama.cpp, and the only thread allowed to touch it.

    The file is loaded on that thread by the first call. `submit` counts a call from the
    moment it is queued until it has finished or was cancelled before it started.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        self._llama: Llama | None = None
        self._lock = threading.Lock()  # guards the two counters below
        self._in_flight = 0
        self._mean_seconds: float | None = None

    def __repr__(self) -> str:
        return f"LocalModel({self.spec.path.name!r}, n_ctx={self.spec.n_ctx})"

    @property
    def in_flight(self) -> int:
        """Calls running or waiting on this model."""
        with self._lock:
            return self._in_flight

    @property
    def is_loaded(self) -> bool:
        """Whether the file is loaded (a call now does not wait for loading)."""
        return self._llama is not None

    def submit(self, work: Callable[[Llama], T]) -> asyncio.Future[T]:
        """Queue `work(llama)` on the model's thread and return its future (loading the file
        first if needed). Raises `ProviderBusyError` when the queue is full; cancelling the
        future before the work starts takes it off the queue."""
        # `loop.run_in_executor` minus the wrapper, so the slot can be released by the
        # concurrent future's own completion (or cancellation), whoever awaits it.
        return asyncio.wrap_future(self._queued(self._timed, work))

    async def run(self, work: Callable[[Llama], T]) -> T:
        """`work(llama)` run on the model's thread (see `submit`)."""
        return await self.submit(work)

    def load(self) -> None:
        """Load the file on the model's thread, if it is not yet, and wait for it. Blocking:
        call it from a worker thread, never from the event loop. Counts as a queued call."""
        self._queued(self._loaded).result()

    def close(self) -> None:
        """Cancel waiting calls, wait for the running one, free the model. Blocking."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def _queued(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """`function(*args)` queued on the model's thread, holding a slot until it is done."""
        waiting_allowed = queue_size()
        with self._lock:
            if self._in_flight > waiting_allowed:
                raise self._busy_error(self._in_flight, waiting_allowed)
            self._in_flight += 1
        try:
            job = self._executor.submit(function, *args)
        except RuntimeError:
            self._release()
            raise ProviderUnavailableError("the local model was closed as the call began") from None
        job.add_done_callback(self._release)
        return job

    def _release(self, _job: Future[Any] | None = None) -> None:
        with self._lock:
            self._in_flight -= 1

    def _timed(self, work: Callable[[Llama], T]) -> T:
        started = time.perf_counter()
        try:
            return work(self._loaded())
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                mean = self._mean_seconds
                self._mean_seconds = (
                    elapsed if mean is None else mean + _MEAN_WEIGHT * (elapsed - mean)
                )

    def _busy_error(self, in_flight: int, waiting_allowed: int) -> ProviderBusyError:
        per_call = self._mean_seconds or _UNTIMED_CALL_SECONDS
        retry_after = float(max(1, math.ceil(per_call * in_flight)))
        return ProviderBusyError(
            f"the local model is busy: 1 call running and {in_flight - 1} waiting "
            f"(at most {waiting_allowed} may wait)",
            retry_after=retry_after,
            hint=f"retry in about {retry_after:g}s, or raise GATHERING_LOCAL_QUEUE_SIZE "
            f"(now {waiting_allowed})",
        )

    def _loaded(self) -> Llama:
        """The llama.cpp model, loaded at the first call. Runs on the model's thread only."""
        if self._llama is None:
            self._llama = _load(self.spec)
        return self._llama


def _load(spec: ModelSpec) -> Llama:
    if not spec.path.is_file():
        raise ProviderNotConfiguredError(
            f"the local model file {spec.path} does not exist",
            hint="set GATHERING_LOCAL_MODEL_PATH to a .gguf file, or unset it for the bundled one",
        )
    try:
        import llama_cpp
    except ImportError:
        raise ProviderNotConfiguredError(
            "the local provider needs llama-cpp-python, which is not installed",
            hint=INSTALL_HINT,
        ) from None
    extra: dict[str, Any] = {}
    if spec.embedding:
        extra = {
            "embedding": True,
            "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            "n_batch": spec.n_ctx,
            "n_ubatch": spec.n_ctx,
        }
    return llama_cpp.Llama(
        model_path=str(spec.path),
        n_ctx=spec.n_ctx,
        n_threads=spec.n_threads,
        verbose=False,
        **extra,
    )


_models: dict[ModelSpec, LocalModel] = {}
_models_lock = threading.Lock()  # held only to look up or add an entry
_close_at_exit = False


def local_model(spec: ModelSpec) -> LocalModel:
    """The process-wide model for `spec`, created (not yet loaded) on first request."""
    global _close_at_exit
    with _models_lock:
        model = _models.get(spec)
        if model is None:
            model = _models[spec] = LocalModel(spec)
            if not _close_at_exit:
                atexit.register(close_models)
                _close_at_exit = True
        return model


def close_models() -> None:
    """Stop every model's thread and free the models (run at exit: llama.cpp cannot free
    them during interpreter teardown). Blocking. Later calls load the models again."""
    with _models_lock:
        models = list(_models.values())
        _models.clear()
    for model in models:
        model.close()


def preload_default_model() -> bool:
    """Load the default local model (the one an agent of provider "local" runs when it names
    no model) into the process-wide cache, so the first chat does not wait for it; True when
    it is loaded. Blocking, for a worker thread; never raises: a missing `local` extra or
    model file, or a file that does not load, is logged as a warning."""
    from gathering.llm.local import DEFAULT_MODEL, LocalProvider  # local.py builds on this module

    started = time.perf_counter()
    try:
        model = LocalProvider(configured_value("local_model") or DEFAULT_MODEL).local_model()
        model.load()
    except GatheringError as exc:  # not installed, no such file, bad settings, closed
        log.warning("local_model_not_preloaded", error=exc.code, detail=exc.message, hint=exc.hint)
        return False
    except Exception as exc:  # e.g. a file llama.cpp cannot load: the chats will report it
        log.warning(
            "local_model_not_preloaded", error=type(exc).__name__, detail=str(exc), exc_info=True
        )
        return False
    log.info(
        "local_model_preloaded",
        model=model.spec.path.name,
        n_ctx=model.spec.n_ctx,
        seconds=round(time.perf_counter() - started, 2),
    )
    return True
