"""Engine calls with a budget: each stage's blocking calls run in its own threads, with
a deadline per call derived from how much audio or text it was given.

Engines block (``transcribe``, ``translate``, model forward passes, child processes),
so processors run them off the event loop. Through :class:`EngineCaller` instead of
``asyncio.to_thread``:

* each stage has its own bounded set of worker slots (no shared default pool that six
  hung calls of one stage could exhaust for every room);
* a call that overruns its deadline fails with a retryable :class:`EngineTimeoutError`
  (that utterance is dropped with a notice; the room goes on) and gives its slot back;
* the threads are daemon threads, so a call that never returns can never keep the
  process (or ``polyvox translate``) from ending;
* a call waiting for a free slot is not yet on the clock.

Python cannot stop a running thread: a hung in-process model call keeps its thread
until it returns (counted in :attr:`EngineCaller.hung`). Engines that run child
processes (pocketsphinx, Apertium, espeak-ng) kill and replace a stuck process
themselves, so their calls come back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger

from pipeline.errors import EngineError

__all__ = ["EngineCaller", "EngineTimeoutError", "StageTimeouts"]

T = TypeVar("T")


class EngineTimeoutError(EngineError):
    """An engine call overran its deadline (retryable: the next call may well succeed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass
class StageTimeouts:
    """Deadlines of engine calls: ``base_s`` plus ``per_audio_s`` per second of audio
    (``per_char_s`` per character of text) the call was given.

    The defaults leave room for a slow CPU (pocketsphinx decodes at about 0.1-0.8× real
    time on 2 cores; XTTS on CPU is slower than real time) while a stuck call is noticed
    within seconds of a normal one.
    """

    base_s: float = 10.0
    per_audio_s: float = 2.0
    per_char_s: float = 0.05

    def for_audio(self, seconds: float) -> float:
        return self.base_s + self.per_audio_s * max(0.0, seconds)

    def for_text(self, text: str) -> float:
        return self.base_s + self.per_char_s * len(text)


class EngineCaller:
    """Runs one stage's blocking engine calls: bounded, with deadlines, in daemon threads.

    Args:
        stage: The stage's name (``asr``, ``mt``...), for errors and thread names.
        concurrency: Calls of this stage running at once; more wait for a slot.
    """

    def __init__(self, stage: str, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.stage = stage
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        #: Calls that overran their deadline and have not returned yet.
        self.hung = 0
        self.timeouts = 0
        self._lock = threading.Lock()

    async def __call__(self, fn: Callable[..., T], *args: Any, timeout_s: float | None) -> T:
        """``fn(*args)`` in a worker thread; its result, or its exception.

        Raises:
            EngineTimeoutError: it ran longer than ``timeout_s``.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        state = {"finished": False, "abandoned": False}

        def settle(outcome: Callable[[], None]) -> None:
            if not done.done():
                outcome()

        def work() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if not loop.is_closed():
                    loop.call_soon_threadsafe(settle, lambda error=exc: done.set_exception(error))
            else:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(settle, lambda: done.set_result(result))
            finally:
                with self._lock:
                    state["finished"] = True
                    if state["abandoned"]:
                        self.hung -= 1

        def abandon() -> int:
            with self._lock:
                if not state["finished"] and not state["abandoned"]:
                    state["abandoned"] = True
                    self.hung += 1
                return self.hung

        async with self._slots:
            threading.Thread(target=work, name=f"{self.stage}-engine", daemon=True).start()
            try:
                return await asyncio.wait_for(asyncio.shield(done), timeout_s)
            except TimeoutError:
                self.timeouts += 1
                still = abandon()
                logger.error(
                    f"{self.stage} engine call {getattr(fn, '__qualname__', fn)} overran its {timeout_s:.1f} s "
                    f"deadline; giving up on it ({still} still running)"
                )
                raise EngineTimeoutError(f"{self.stage} took longer than {timeout_s:.1f} s") from None
            except asyncio.CancelledError:
                abandon()
                raise
