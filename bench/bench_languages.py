"""Costs of the multilingual parts: Apertium pivots, Whisper decoding and language ID.

* **Apertium**: per-sentence latency of direct pairs (en→es, es→fr) against pivoted
  directions (en→fr through Spanish, fr→en), on warm pipelines.
* **Whisper** (faster-whisper, CTranslate2, CPU int8 unless ``--device cuda``): load time,
  one utterance, a batch of four, and language identification, on a random-weight model
  converted exactly like the published ones: ``--whisper tiny`` (the tests' model: loader
  and plumbing cost only) or ``--whisper small`` (Whisper small's 244 M parameters:
  realistic compute for the ``cpu`` profile; building and converting it takes minutes:
  more than six on a busy 2-core machine, so run it where there are cores to spare).
  Random weights emit tokens until the engine's output budget (15 per second of audio),
  which is the worst case for decoding time.

    python bench/bench_languages.py
    python bench/bench_languages.py --whisper small --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "The weather is very good today.",
    "I would like a cup of coffee, please.",
    "Where is the train station?",
    "We meet at noon in front of the library.",
    "My friend speaks Spanish and English very well.",
    "Tomorrow the meeting will start an hour later than planned.",
    "Can you hear me now?",
    "Thank you very much for coming to this conference.",
]


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2)}


def bench_apertium(rounds: int) -> dict[str, Any]:
    from pipeline.engines.mt.apertium import ApertiumMTEngine

    engine = ApertiumMTEngine()
    engine.load()
    out: dict[str, Any] = {}
    try:
        texts = {"en": SENTENCES, "es": engine.translate(SENTENCES, "en", "es")}
        texts["fr"] = engine.translate(texts["es"], "es", "fr")
        for source, target in (("en", "es"), ("es", "fr"), ("en", "fr"), ("fr", "en"), ("en", "it")):
            if not engine.supports(source, target):
                continue
            engine.translate([texts[source][0]], source, target)  # start its processes
            times = []
            for _ in range(rounds):
                for text in texts[source]:
                    started = time.perf_counter()
                    engine.translate([text], source, target)
                    times.append(time.perf_counter() - started)
            out[f"{source}→{target}"] = {"route": "→".join(engine.route(source, target)), **_stats(times)}
    finally:
        engine.close()
    return out


def bench_whisper(size: str, device: str, iterations: int) -> dict[str, Any]:
    import numpy as np

    from pipeline.engines.asr.whisper import WhisperASREngine
    from tests.tiny_whisper import WHISPER_SMALL, build_tiny_whisper

    rng = np.random.default_rng(0)

    def speech(seconds: float) -> np.ndarray:
        return (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16)

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = build_tiny_whisper(Path(folder), dims=WHISPER_SMALL if size == "small" else None)
        built = time.perf_counter() - started
        started = time.perf_counter()
        engine = WhisperASREngine(model=str(path), device=device, beam_size=1, batch_window_ms=0)
        engine.load()
        loaded = time.perf_counter() - started
        try:
            clip = speech(5.0)
            engine.transcribe(clip, 16000, "en")  # warm-up
            one, batch, lid = [], [], []
            for _ in range(iterations):
                started = time.perf_counter()
                engine.transcribe(clip, 16000, "en")
                one.append(time.perf_counter() - started)
                started = time.perf_counter()
                engine.transcribe_batch([(speech(5.0), 16000, lang) for lang in ("en", "es", "ja", "de")])
                batch.append(time.perf_counter() - started)
                started = time.perf_counter()
                engine.detect_language(clip, 16000)
                lid.append(time.perf_counter() - started)
            return {
                "model": f"random {size} ({engine.device}, {engine.compute_type})",
                "build_and_convert_s": round(built, 2),
                "load_s": round(loaded, 2),
                "transcribe_5s": _stats(one),
                "batch_of_4_x_5s": _stats(batch),
                "identify_language_5s": _stats(lid),
            }
        finally:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", choices=["tiny", "small", "none"], default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (Whisper)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="Apertium: passes over the sentences")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    from loguru import logger

    logger.remove()
    results: dict[str, Any] = {"apertium": bench_apertium(args.rounds)}
    if args.whisper != "none":
        results["whisper"] = bench_whisper(args.whisper, args.device, args.iterations)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
