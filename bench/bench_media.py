"""Voice changer, speech-to-image and audio-event classification at production shapes,
with random weights (nothing downloaded).

* **Voice changer** — OpenVoice V2's converter (inter/hidden 192, HiFi-GAN from 512
  channels, tone colour 256; built by coqui's real ``OpenVoice`` class and loaded by
  ``OpenVoiceEngine`` from a checkpoint folder) streams speech in 20 ms frames, as a
  transport delivers it. Reported: the algorithmic latency (one chunk plus the
  look-ahead), the compute per chunk (p50/p95/max), the latency a listener gets per
  chunk (algorithmic + compute) and the real-time factor (compute / audio).
* **Speech-to-image** — an LCM pipeline at LCM Dreamshaper v7's shape (SD 1.5 UNet 860M,
  CLIP ViT-L text encoder, VAE; the cpu profile's model) run by ``DiffusersImageEngine``:
  seconds per picture at the given size and steps. FLUX.1-schnell (the gpu profile's,
  12B parameters) does not fit a 2-core CPU benchmark.
* **Audio events** — the AudioSet AST (ViT-B, 1212 patches over 10.24 s): seconds per
  batch of candidates.

    python bench/bench_media.py                       # all three, short
    python bench/bench_media.py --only vc --seconds 20 --json vc.json
    python bench/bench_media.py --only image --size 512 --pictures 2
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _speech(seconds: float) -> np.ndarray:
    """Real speech (librivox, from pocketsphinx-testdata) repeated, else a gliding tone."""
    from pipeline.audio import load_audio

    folder = Path("/usr/share/pocketsphinx/test/data/librivox")
    clips = [load_audio(p) for p in sorted(folder.glob("*.wav"))] if folder.is_dir() else []
    if not clips:
        t = np.arange(int(seconds * 16000)) / 16000
        return (8000 * np.sin(2 * np.pi * (150 + 50 * np.sin(t)) * t)).astype(np.int16)
    pcm = np.concatenate(clips)
    while len(pcm) < seconds * 16000:
        pcm = np.concatenate([pcm, pcm])
    return pcm[: int(seconds * 16000)]


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def bench_vc(seconds: float, device: str) -> dict[str, Any]:
    from pipeline.engines.vc.openvoice import OpenVoiceEngine
    from tests.tiny_media import write_openvoice

    with tempfile.TemporaryDirectory() as folder:
        write_openvoice(Path(folder), production=True)
        engine = OpenVoiceEngine(model=folder, device=device)
        engine.load()
        engine.warmup()
        pcm = _speech(seconds)
        stream = engine.open_stream(engine.neutral_voice("en-default"))
        per_chunk: list[float] = []
        busy = 0.0
        produced = 0
        for first in range(0, len(pcm), 320):  # 20 ms frames
            started = time.perf_counter()
            chunks = stream.feed(pcm[first : first + 320])
            spent = time.perf_counter() - started
            busy += spent
            if chunks:
                per_chunk += [spent / len(chunks)] * len(chunks)
                produced += sum(len(c) for c in chunks)
        started = time.perf_counter()
        produced += sum(len(c) for c in stream.flush())
        busy += time.perf_counter() - started
        params = sum(p.numel() for p in engine.model.parameters())
    algorithmic = engine.latency_s
    compute = _stats(per_chunk)
    return {
        "model": f"OpenVoice V2 converter, random weights ({params / 1e6:.1f} M parameters)",
        "device": engine.device,
        "audio_s": round(len(pcm) / 16000, 2),
        "output_s": round(produced / engine.sample_rate, 2),
        "chunk_ms": round(engine.chunk_frames * engine.hop / engine.sample_rate * 1000, 1),
        "algorithmic_latency_ms": round(algorithmic * 1000, 1),
        "compute_per_chunk_ms": compute,
        "chunk_latency_ms": {k: round(algorithmic * 1000 + v, 1) for k, v in compute.items()},
        "real_time_factor": round(busy / (len(pcm) / 16000), 3),
    }


def bench_image(size: int, steps: int, pictures: int, device: str) -> dict[str, Any]:
    import torch

    from pipeline.engines.image.diffusers import DiffusersImageEngine
    from tests.tiny_media import build_diffusion

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        pipe = build_diffusion(Path(folder), production=True)
        built = time.perf_counter() - started
        engine = DiffusersImageEngine(model=folder, device=device, steps=steps, guidance=1.0, width=size, height=size)
        # Saving 4 GB of random weights to load them again measures the disk, not the
        # engine: hand the built pipeline to the engine as its loader would.
        engine.device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        pipe.to(engine.device)
        pipe.set_progress_bar_config(disable=True)
        engine._torch, engine._pipe = torch, pipe  # noqa: SLF001 - see above
        times = []
        for index in range(pictures):
            started = time.perf_counter()
            png = engine.generate(f"a red house by a lake, picture {index}")
            times.append(time.perf_counter() - started)
    unet = sum(p.numel() for p in pipe.unet.parameters())
    return {
        "model": f"LCM (SD 1.5 shape: UNet {unet / 1e6:.0f} M parameters), random weights",
        "device": engine.device,
        "size": f"{size}x{size}",
        "steps": steps,
        "build_s": round(built, 1),
        "seconds_per_picture": [round(t, 2) for t in times],
        "png_bytes": len(png),
    }


def bench_events(candidates: int, device: str) -> dict[str, Any]:
    from pipeline.engines.events.ast import ASTAudioEventEngine
    from tests.tiny_media import write_ast

    with tempfile.TemporaryDirectory() as folder:
        write_ast(Path(folder), production=True)
        engine = ASTAudioEventEngine(model=folder, device=device)
        engine.load()
        engine.warmup()
        clips = [_speech(1.5)] * candidates
        started = time.perf_counter()
        engine.classify(clips, 16000)
        batch = time.perf_counter() - started
        started = time.perf_counter()
        engine.classify(clips[:1], 16000)
        one = time.perf_counter() - started
    return {
        "model": "AST AudioSet (ViT-B, 527 labels), random weights",
        "device": engine.device,
        "one_candidate_s": round(one, 3),
        f"batch_of_{candidates}_s": round(batch, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["vc", "image", "events"], action="append")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=10.0, help="speech streamed through the voice changer")
    parser.add_argument("--size", type=int, default=256, help="picture size (square)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pictures", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=4, help="sound candidates per classifier batch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    wanted = args.only or ["vc", "events", "image"]
    results: dict[str, Any] = {}
    for name in wanted:
        if name == "vc":
            results["vc"] = bench_vc(args.seconds, args.device)
        elif name == "image":
            results["image"] = bench_image(args.size, args.steps, args.pictures, args.device)
        else:
            results["events"] = bench_events(args.candidates, args.device)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
