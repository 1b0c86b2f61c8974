"""Latency benchmark of the cascade: per-stage p50/p95 and the pipeline's own overhead.

Feeds real recorded speech (librivox clips from pocketsphinx-testdata) and flite
speech through the same pipeline `polyvox translate` and the transports use, at
real-time pace (as a live call delivers audio), and prints per-stage latency
percentiles, engine compute, and the overhead: speech end → first TTS audio minus
the engine compute spent before that audio existed.

    .venv/bin/python bench/bench_pipeline.py [--profile offline] [--speakers 2] [--fast] [--json OUT]
    .venv/bin/python bench/bench_pipeline.py --compare --monologue 30   # before/after, one run
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
    ("end_to_first_audio", "speech end → first audio (audible)"),
    ("first_audio_out", "speech end → first audio out"),
    ("ear_voice_span", "first word spoken → its audio (EVS)"),
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


def monologue(clips: list[np.ndarray], seconds: float = 30.0, gap_s: float = 0.15) -> np.ndarray:
    """About ``seconds`` of speech without pauses: clips joined with ``gap_s`` gaps."""
    gap = np.zeros(int(gap_s * 16000), dtype=np.int16)
    parts: list[np.ndarray] = [np.zeros(8000, dtype=np.int16)]
    total = 0.0
    while total < seconds:
        for clip in clips:
            parts += [clip, gap]
            total += len(clip) / 16000 + gap_s
            if total >= seconds:
                break
    parts.append(np.zeros(24000, dtype=np.int16))
    return np.concatenate(parts)


def run(engines, settings, tracks, *, realtime: bool):  # type: ignore[no-untyped-def]
    return asyncio.run(
        run_cascade_on_tracks(
            engines, tracks, ["es"], params=interpretation_params(settings), realtime=realtime, progress=False,
        )
    )


def report(title: str, result, settings) -> dict:  # type: ignore[no-untyped-def]
    stats = result.latency().as_dict()
    live = result.stats.as_dict()
    print(f"\n## {title}")
    print(f"{len(result.utterances)} utterances interpreted; {result.input_seconds:.1f} s of audio in {result.wall_seconds:.1f} s")
    print(f"{'stage':<46}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for key, label in ROWS:
        row = stats.get(key)
        if row:
            print(f"{label:<46}{row['n']:>4}{row['p50'] * 1000:>10.1f}{row['p95'] * 1000:>10.1f}{row['mean'] * 1000:>10.1f}")
    delay = live["partial_caption_delay"]
    if delay["n"]:
        print(f"{'word spoken → partial caption':<46}{delay['n']:>4}{delay['p50'] * 1000:>10.1f}{delay['p95'] * 1000:>10.1f}")
    if live["speculations"]:
        print(f"speculations {live['speculations']}: {live['speculations_committed']} released, "
              f"{live['speculations_wasted']} wasted; clause commits {live['clause_commits']}")
    if result.errors:
        print(f"{len(result.errors)} pipeline errors, first: {result.errors[0]}")
    return {"latency": stats, "live": live, "utterances": len(result.utterances)}


def monologue_report(title: str, result, pcm: np.ndarray) -> dict:  # type: ignore[no-untyped-def]
    """First interpreted audio after the start, and the ear-voice span per segment."""
    firsts = [r.utterance.marks["first_audio_out"] for r in result.utterances if "first_audio_out" in r.utterance.marks]
    first = (min(firsts) - result.started_at) if firsts else None
    spans = [r.utterance.latencies().get("ear_voice_span") for r in result.utterances]
    spans = [s for s in spans if s is not None]
    out = {
        "segments": len(result.utterances),
        "first_audio_after_start_s": None if first is None else round(first, 3),
        "ear_voice_span_mean_s": round(float(np.mean(spans)), 3) if spans else None,
        "ear_voice_span_p95_s": round(float(np.percentile(spans, 95)), 3) if spans else None,
        "speech_s": round(len(pcm) / 16000, 1),
    }
    print(f"\n## {title}: {out['speech_s']} s monologue")
    print(f"segments interpreted: {out['segments']}; first interpreted audio {out['first_audio_after_start_s']} s "
          f"after the start; ear-voice span mean {out['ear_voice_span_mean_s']} s, p95 {out['ear_voice_span_p95_s']} s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--speakers", type=int, default=1, help="participants talking concurrently")
    parser.add_argument("--gap", type=float, default=1.2, help="seconds of silence between a speaker's utterances")
    parser.add_argument("--fast", action="store_true", help="feed as fast as possible (throughput, not latency)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the consecutive, non-streaming cascade (before) on the same engines")
    parser.add_argument("--monologue", type=float, default=0.0, metavar="SECONDS",
                        help="also interpret a monologue of about this long (clips joined by 150 ms gaps)")
    parser.add_argument("--json", metavar="OUT", help="also write the statistics as JSON")
    args = parser.parse_args()

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    settings = load_settings(profile=args.profile, overrides=[*args.overrides, "languages.listeners=[es]"])
    before = load_settings(
        profile=args.profile,
        overrides=[*args.overrides, "languages.listeners=[es]", "interpretation.streaming=false"],
    )
    started = time.monotonic()
    engines = load_engines(settings)
    load_s = time.monotonic() - started
    clips = utterances()
    tracks = tracks_for(clips, args.speakers, args.gap)
    realtime = not args.fast
    print(f"profile {settings.profile}: {len(clips)} utterances, {args.speakers} speaker(s), "
          f"{'fast' if args.fast else 'real-time'} feed; engines loaded + warmed in {load_s:.2f} s; "
          f"ASR streams: {engines.asr.supports_streaming}")
    print("speech end = end of the last voiced audio (endpointing time included)")
    out: dict = {"profile": settings.profile, "speakers": args.speakers, "realtime": realtime}
    try:
        if args.compare:
            out["before"] = report("before: consecutive, whole utterances after the 500 ms hang-over",
                                   run(engines, before, tracks, realtime=realtime), before)
        out["after"] = report("after: streaming (speculative endpointing, adaptive hang-over)",
                              run(engines, settings, tracks, realtime=realtime), settings)
        if args.monologue:
            pcm = monologue(clips, args.monologue)
            track = [SpeakerTrack("speaker1", pcm, "en")]
            if args.compare:
                out["monologue_before"] = monologue_report("before", run(engines, before, track, realtime=realtime), pcm)
            out["monologue_after"] = monologue_report("after (simultaneous)", run(engines, settings, track, realtime=realtime), pcm)
    finally:
        engines.close()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
