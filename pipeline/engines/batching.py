"""Micro-batching: many threads' requests, one model call.

Processors call an engine from many worker threads at once (one per participant's
utterance). A GPU model does several utterances in one forward pass for little more
than the price of one, so :class:`MicroBatcher` runs the model on a single dedicated
thread and, each time that thread is free, gathers every request that arrived
meanwhile (waiting up to ``window_ms`` for company after the first) and runs them
together. Requests only share a batch when their *key* is equal (an MT language pair,
an ASR language for prompt-conditioned models).

Because only the batcher's thread touches the model, the model needs no further lock.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from loguru import logger

from pipeline.errors import EngineError

__all__ = ["MicroBatcher"]

K = TypeVar("K", bound=Hashable)
In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Request(Generic[K, In, Out]):
    key: K
    items: Sequence[In]
    future: Future[list[Out]] = field(default_factory=Future)


_STOP = object()


class MicroBatcher(Generic[K, In, Out]):
    """Runs ``run(key, items)`` on one thread, merging concurrent requests with equal keys.

    Args:
        run: The model call: takes a key and a list of items, returns one output per
            item, in order. Called only from the batcher's thread.
        max_batch: Most items in one call of ``run``; larger groups are split.
        window_ms: How long the first request of a round waits for others to join.
            0 batches only what queued up while the model was busy (no added latency).
        name: Names the thread, for logs and debuggers.
    """

    def __init__(
        self,
        run: Callable[[K, list[In]], list[Out]],
        *,
        max_batch: int = 16,
        window_ms: float = 5.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if window_ms < 0:
            raise ValueError(f"window_ms must not be negative, not {window_ms}")
        self._run = run
        self._max_batch = max_batch
        self._window_s = window_ms / 1000.0
        self._queue: queue.SimpleQueue[_Request[K, In, Out] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._lock = threading.Lock()
        self._thread.start()
        #: Sizes (in items) of the latest calls made to ``run``, most recent last (stats).
        self.batch_sizes: deque[int] = deque(maxlen=1000)

    def submit(self, key: K, items: Sequence[In]) -> list[Out]:
        """Run ``items`` (possibly together with other callers' items) and wait for them.

        Raises:
            EngineError: the batcher is closed.
            Exception: whatever ``run`` raised for the batch holding these items.
        """
        if not items:
            return []
        request: _Request[K, In, Out] = _Request(key, items)
        with self._lock:
            if self._closed:
                raise EngineError("the engine is closed", retryable=False)
            self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        """Finish the queued requests, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- the batcher's thread ------------------------------------------------------------

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            pending: list[_Request[K, In, Out]] = [first]  # type: ignore[list-item]
            size = len(pending[0].items)
            deadline = time.monotonic() + self._window_s
            # Gather company: everything already queued, then whatever arrives before
            # the deadline, until a batch is full.
            while size < self._max_batch:
                timeout = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                pending.append(nxt)  # type: ignore[arg-type]
                size += len(nxt.items)  # type: ignore[union-attr,attr-defined]
            self._serve(pending)

    def _serve(self, pending: list[_Request[K, In, Out]]) -> None:
        groups: dict[K, list[_Request[K, In, Out]]] = {}
        for request in pending:
            groups.setdefault(request.key, []).append(request)
        for key, requests in groups.items():
            items = [item for request in requests for item in request.items]
            try:
                outputs: list[Out] = []
                for start in range(0, len(items), self._max_batch):
                    chunk = items[start : start + self._max_batch]
                    self.batch_sizes.append(len(chunk))
                    result = self._run(key, chunk)
                    if len(result) != len(chunk):
                        raise EngineError(
                            f"model returned {len(result)} results for {len(chunk)} inputs"
                        )
                    outputs.extend(result)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                logger.debug("batch of {} for {!r} failed: {}", len(items), key, exc)
                for request in requests:
                    request.future.set_exception(exc)
                continue
            offset = 0
            for request in requests:
                request.future.set_result(outputs[offset : offset + len(request.items)])
                offset += len(request.items)
