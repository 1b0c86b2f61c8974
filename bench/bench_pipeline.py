"""Latency benchmark of the cascade: per-stage p50/p95 and the pipeline's own overhead.

Feeds real recorded speech (librivox clips from pocketsphinx-testdata) and flite
speech through the same pipeline `polyvox translate` and the transports use, at
real-time pace (as a live call delivers audio), and prints per-stage latency
percentiles, engine compute, and the overhead: speech end → first TTS audio minus
the engine compute spent before that audio existed.

    .venv/bin/python bench/bench_pipeline.py [--profile offline] [--speakers 2] [--fast] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import interpretation_params, load_engines  # noqa: E402
from bot.config import load_settings  # noqa: E402
from pipeline.audio import load_audio  # noqa: E402
from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
FLITE_SENTENCES = [
    ("slt", "the weather is very good today"),
    ("rms", "i would like a cup of coffee please"),
    ("awb", "where is the train station"),
    ("kal16", "we will meet again next week at the office"),
    ("slt", "thank you very much for your help"),
    ("rms", "the meeting starts at nine in the morning"),
]
ROWS = [
    ("asr", "speech end → transcript"),
    ("mt", "transcript → translations"),
    ("tts_first", "translations → first TTS audio"),
    ("end_to_first_audio", "speech end → first TTS audio"),
    ("compute_asr", "ASR engine compute"),
    ("compute_mt", "MT engine compute"),
    ("compute_tts_first", "TTS compute to first chunk"),
    ("compute_tts", "TTS compute, whole utterance"),
    ("overhead", "pipeline overhead (e2e − compute)"),
]


def utterances() -> list[np.ndarray]:
    clips = [load_audio(p) for p in sorted(LIBRIVOX.glob("*.wav"))]
    if shutil.which("flite"):
        with tempfile.TemporaryDirectory() as tmp:
            for i, (voice, text) in enumerate(FLITE_SENTENCES):
                path = Path(tmp) / f"{i}.wav"
                subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
                clips.append(load_audio(path))
    return clips


def tracks_for(clips: list[np.ndarray], speakers: int, gap_s: float) -> list[SpeakerTrack]:
    """Round-robin the clips over speakers; each speaks while the others are quiet... or not:
    with several speakers their utterances overlap in time, which is the point."""
    gap = np.zeros(int(gap_s * 16000), dtype=np.int16)
    per: list[list[np.ndarray]] = [[gap[: 8000]] for _ in range(speakers)]
    for i, clip in enumerate(clips):
        per[i % speakers] += [clip, gap]
    return [SpeakerTrack(f"speaker{i + 1}", np.concatenate(parts), "en") for i, parts in enumerate(per)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--speakers", type=int, default=1, help="participants talking concurrently")
    parser.add_argument("--gap", type=float, default=1.2, help="seconds of silence between a speaker's utterances")
    parser.add_argument("--fast", action="store_true", help="feed as fast as possible (throughput, not latency)")
    parser.add_argument("--json", metavar="OUT", help="also write the statistics as JSON")
    args = parser.parse_args()

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    settings = load_settings(profile=args.profile, overrides=[*args.overrides, "languages.listeners=[es]"])
    started = time.monotonic()
    engines = load_engines(settings)
    load_s = time.monotonic() - started
    clips = utterances()
    tracks = tracks_for(clips, args.speakers, args.gap)
    try:
        result = asyncio.run(
            run_cascade_on_tracks(
                engines, tracks, ["es"], params=interpretation_params(settings),
                realtime=not args.fast, progress=False,
            )
        )
    finally:
        engines.close()
    stats = result.latency().as_dict()

    print(f"profile {settings.profile}: {len(clips)} utterances fed, {len(result.utterances)} recognised, "
          f"{args.speakers} speaker(s), {'fast' if args.fast else 'real-time'} feed")
    print(f"engines loaded + warmed in {load_s:.2f} s; {result.input_seconds:.1f} s of audio in {result.wall_seconds:.1f} s")
    print(f"hang-over before an utterance ends: {settings.vad.min_silence_ms} ms (not included below)")
    print(f"{'stage':<42}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for key, label in ROWS:
        row = stats.get(key)
        if row:
            print(f"{label:<42}{row['n']:>4}{row['p50'] * 1000:>10.1f}{row['p95'] * 1000:>10.1f}{row['mean'] * 1000:>10.1f}")
    if result.errors:
        print(f"{len(result.errors)} pipeline errors, first: {result.errors[0]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "profile": settings.profile, "speakers": args.speakers, "realtime": not args.fast,
            "utterances_fed": len(clips), "utterances": len(result.utterances),
            "input_seconds": result.input_seconds, "wall_seconds": result.wall_seconds,
            "latency": stats,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
