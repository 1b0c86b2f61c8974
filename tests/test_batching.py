"""Specification of the micro-batcher the GPU engines share (no model needed)."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.engines.batching import MicroBatcher
from pipeline.errors import EngineError


class Recorder:
    """A 'model' that upper-cases texts and remembers each call it got."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, key: str, items: list[str]) -> list[str]:
        self.calls.append((key, list(items)))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "boom" in items:
            raise RuntimeError("model failed")
        return [f"{key}:{item.upper()}" for item in items]


def run_concurrently(batcher: MicroBatcher, requests: list[tuple[str, list[str]]]) -> list[object]:
    results: list[object] = [None] * len(requests)

    def call(i: int) -> None:
        try:
            results[i] = batcher.submit(*requests[i])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


def test_one_caller_gets_its_results_in_order() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, window_ms=0, name="test-batcher")
    try:
        assert batcher.submit("en", ["a", "b"]) == ["en:A", "en:B"]
        assert batcher.submit("en", []) == []
    finally:
        batcher.close()
    assert model.calls == [("en", ["a", "b"])]
    assert model.threads == {"test-batcher"}


def test_concurrent_callers_with_the_same_key_share_one_call() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, window_ms=300)
    try:
        results = run_concurrently(batcher, [("en", [f"t{i}"]) for i in range(5)])
    finally:
        batcher.close()
    assert results == [[f"en:T{i}"] for i in range(5)]
    assert len(model.calls) == 1 and sorted(model.calls[0][1]) == [f"t{i}" for i in range(5)]


def test_keys_never_mix_and_batches_respect_max_batch() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, window_ms=300, max_batch=2)
    try:
        results = run_concurrently(batcher, [("en", ["a"]), ("es", ["b"]), ("en", ["c"]), ("en", ["d"])])
    finally:
        batcher.close()
    assert results == [["en:A"], ["es:B"], ["en:C"], ["en:D"]]
    assert all(len({key}) == 1 and len(items) <= 2 for key, items in model.calls)
    assert sorted(len(items) for _, items in model.calls) == [1, 1, 2]
    assert list(batcher.batch_sizes) == [len(items) for _, items in model.calls]


def test_a_failing_batch_fails_its_callers_only() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, window_ms=300)
    try:
        results = run_concurrently(batcher, [("en", ["boom"]), ("en", ["x"]), ("es", ["y"])])
    finally:
        batcher.close()
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2] == ["es:Y"]


def test_requests_queued_while_busy_run_together_without_a_window() -> None:
    model = Recorder(delay=0.3)
    batcher = MicroBatcher(model, window_ms=0)
    try:
        first = threading.Thread(target=batcher.submit, args=("en", ["first"]))
        first.start()
        time.sleep(0.1)  # the model is now busy with "first"
        results = run_concurrently(batcher, [("en", ["a"]), ("en", ["b"])])
        first.join()
    finally:
        batcher.close()
    assert results == [["en:A"], ["en:B"]]
    assert [sorted(items) for _, items in model.calls] == [["first"], ["a", "b"]]


def test_closed_batcher_refuses_work() -> None:
    batcher = MicroBatcher(Recorder(), window_ms=0)
    batcher.close()
    with pytest.raises(EngineError, match="closed"):
        batcher.submit("en", ["a"])
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
