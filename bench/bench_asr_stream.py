"""Streaming ASR: how soon the final hypothesis is ready, what partials cost, real-time factor.

pocketsphinx on the five librivox clips (apt pocketsphinx-testdata), one engine with
its default pool (2 workers x 2 decoders):

- **finalize latency**: each clip is fed in 20 ms chunks at the pace of speech, with a
  ``partial()`` every 300 ms (as live captions ask), by ``--streams`` speakers at once;
  the time from the last ``feed`` to ``finalize()`` returning, p50/p95 over all clips.
- **partial cost**: p50/p95 of those ``partial()`` calls.
- **CPU cost** of ``finalize`` and ``partial`` themselves, on an in-process stream
  (thread CPU time, so other load on the machine does not count).
- **real-time factor**, streaming vs batch: the clips streamed as fast as they are taken
  (feed all chunks, then finalize) vs ``transcribe`` of each whole clip; wall time and
  the workers' CPU time (from /proc, so other load on the machine does not count),
  divided by the audio's duration.

``--engine nemo`` (or ``all``) measures the NeMo engine with a cache-aware streaming
FastConformer of ``stt_en_fastconformer_hybrid_large_streaming_multi``'s size (random
weights, built here, nothing downloaded; CTC decoder, since random RNN-T weights emit
a token storm) at look-ahead ``--att-context``: finalize latency and RTF of cache-aware
streaming vs the whole-utterance forward, on this machine's device (CUDA if any).
Meant for a GPU: on a 2-core CPU this model runs slower than real time.

    python bench/bench_asr_stream.py [--streams 3] [--engine pocketsphinx|nemo|all]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
RATE = 16000
CHUNK = RATE // 50  # 20 ms
PARTIAL_EVERY = 15  # chunks: 300 ms


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ms(values: list[float]) -> str:
    return f"p50 {1000 * statistics.median(values):6.1f} ms  p95 {1000 * _percentile(values, 0.95):6.1f} ms  (n={len(values)})"


def _clips() -> list[np.ndarray]:
    from pipeline.audio import load_audio

    names = [line.rpartition("(")[2].strip(" )") for line in (LIBRIVOX / "transcription").read_text().splitlines()]
    return [load_audio(LIBRIVOX / f"{name}.wav") for name in names]


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def stream_live(engine: Any, pcm: np.ndarray, partial_costs: list[float]) -> tuple[float, str]:
    """Feed at the pace of speech with partials; returns (last feed → final, final text)."""
    with engine.open_stream("en") as stream:
        started = time.monotonic()
        for index, start in enumerate(range(0, len(pcm), CHUNK)):
            due = started + start / RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stream.feed(pcm[start : start + CHUNK])
            if index % PARTIAL_EVERY == PARTIAL_EVERY - 1:
                before = time.monotonic()
                stream.partial()
                partial_costs.append(time.monotonic() - before)
        last_feed = time.monotonic()
        final = stream.finalize()
        return time.monotonic() - last_feed, final.text


def stream_fast(engine: Any, pcm: np.ndarray) -> str:
    with engine.open_stream("en") as stream:
        for start in range(0, len(pcm), CHUNK):
            stream.feed(pcm[start : start + CHUNK])
        return str(stream.finalize().text)


def measure(engine: Any, clips: list[np.ndarray], streams: int, cpu_pids: Any) -> None:
    audio_s = sum(len(c) for c in clips) / RATE

    # Live pace: `streams` speakers at once, each taking the clips in a rotated order.
    latencies: list[float] = []
    partial_costs: list[float] = []
    lock = threading.Lock()

    def speaker(offset: int) -> None:
        for i in range(len(clips)):
            latency, _ = stream_live(engine, clips[(i + offset) % len(clips)], partial_costs)
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=speaker, args=(k,)) for k in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"  finalize after the last feed ({streams} live stream(s)): {_ms(latencies)}")
    print(f"  partial() during live feeding:                {_ms(partial_costs)}")

    for label, run in (
        ("batch transcribe", lambda pcm: engine.transcribe(pcm, RATE, "en").text),
        ("streaming, fed as fast as taken", lambda pcm: stream_fast(engine, pcm)),
    ):
        cpu_before = cpu_pids()
        wall = time.monotonic()
        texts = [run(pcm) for pcm in clips]
        wall = time.monotonic() - wall
        cpu = cpu_pids() - cpu_before
        cpu_part = f"  cpu RTF {cpu / audio_s:.3f}" if cpu > 0 else ""
        print(f"  {label:32s} wall RTF {wall / audio_s:.3f}{cpu_part}  ({sum(len(t.split()) for t in texts)} words)")


def cpu_costs(clips: list[np.ndarray]) -> None:
    """Thread CPU time of partial() and finalize() on in-process pocketsphinx streams."""
    from pipeline.engines.asr.pocketsphinx import PocketSphinxASREngine

    engine = PocketSphinxASREngine(processes=False, pool_size=1)
    engine.load()
    partials: list[float] = []
    finals: list[float] = []
    try:
        for pcm in clips:
            with engine.open_stream("en") as stream:
                for index, start in enumerate(range(0, len(pcm), CHUNK)):
                    stream.feed(pcm[start : start + CHUNK])  # decodes as it goes, in process
                    if index % PARTIAL_EVERY == PARTIAL_EVERY - 1:
                        before = time.thread_time()
                        stream.partial()
                        partials.append(time.thread_time() - before)
                before = time.thread_time()
                stream.finalize()
                finals.append(time.thread_time() - before)
    finally:
        engine.close()
    print(f"  CPU of finalize() itself:                     {_ms(finals)}")
    print(f"  CPU of partial() itself:                      {_ms(partials)}")


def bench_pocketsphinx(clips: list[np.ndarray], streams: int) -> None:
    from pipeline.engines.asr.pocketsphinx import PocketSphinxASREngine

    engine = PocketSphinxASREngine()
    engine.load()
    engine.warmup()
    print(f"pocketsphinx ({sum(len(c) for c in clips) / RATE:.1f} s of librivox speech, {len(clips)} clips)")
    try:
        measure(engine, clips, streams, lambda: _cpu_seconds(engine.worker_pids()))
    finally:
        engine.close()
    cpu_costs(clips)


def bench_nemo(clips: list[np.ndarray], streams: int, contexts: list[list[int]]) -> None:
    import torch
    from omegaconf import OmegaConf

    from bench.bench_engines import FASTCONFORMER_LARGE
    from pipeline.engines.asr.nemo import NeMoASREngine
    from tests.tiny_models import _NEMO_CLASSES, nemo_asr_config, nemo_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        cfg = nemo_asr_config("hybrid", nemo_tokenizer(Path(folder) / "tok"), streaming=True, **FASTCONFORMER_LARGE)
        cfg["encoder"]["att_context_size"] = [[70, 13], [70, 6], [70, 1], [70, 0]]
        module, _, name = _NEMO_CLASSES["hybrid"].rpartition(".")
        import importlib

        torch.manual_seed(0)
        model = getattr(importlib.import_module(module), name)(cfg=OmegaConf.create(cfg)).eval()
        path = Path(folder) / "streaming_large.nemo"
        model.save_to(str(path))
        del model
        for context in contexts:
            engine = NeMoASREngine(model=str(path), att_context_size=context, decoder="ctc", batch_window_ms=5)
            engine.load()
            engine.warmup()
            print(f"NeMo cache-aware FastConformer-large size, att_context_size {context} "
                  f"(chunk {engine._streamer.latency_s:.2f} s), {engine.device}")  # noqa: SLF001
            try:
                measure(engine, clips, streams, lambda: 0.0)
            finally:
                engine.close()


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1, help="speakers streaming at once (live pace)")
    parser.add_argument(
        "--att-context", action="append", type=lambda v: [int(x) for x in v.split(",")],
        help="NeMo look-ahead(s) as LEFT,RIGHT (repeatable; default 70,6)",
    )
    parser.add_argument(
        "--engine", choices=["pocketsphinx", "nemo", "all"], default="pocketsphinx",
        help="nemo: a cache-aware FastConformer-large-sized model with random weights",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clips = _clips()
    if args.engine in ("pocketsphinx", "all"):
        bench_pocketsphinx(clips, args.streams)
    if args.engine in ("nemo", "all"):
        bench_nemo(clips, args.streams, args.att_context or [[70, 6]])


if __name__ == "__main__":
    main()
