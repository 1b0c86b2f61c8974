"""Latency and memory of XTTS v2 text to speech at its real size, with random weights.

Nothing is downloaded: an XTTS v2 checkpoint folder of the real architecture (GPT of 30
layers × 1024 channels with the perceiver conditioning, 6681 text tokens, 1026 audio
codes; HiFi-GAN decoder and speaker encoder) is written with random weights to a
temporary folder and loaded through ``XTTSEngine`` exactly as coqui/XTTS-v2 would be.
Random weights never choose to stop, so the number of audio tokens per sentence is
forced (``fixed_audio_tokens``): the compute equals that of real speech of that length
(one token ≈ 46 ms of audio).

Measured per case: the time of one ``synthesize`` call (p50/p95), the time to its first
streamed chunk (what a listener waits for), the real-time factor, plus model load time,
voice conditioning time and peak memory (resident set; ``max_memory_allocated`` on CUDA).

    python bench/bench_tts.py                  # cpu
    python bench/bench_tts.py --device cuda --iterations 10
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: A sentence of the length an interpreter speaks at a time.
SENTENCE = "The meeting has been moved to Thursday afternoon, right after lunch."
#: Audio tokens per call: ~1.9 s of speech on the CPU (kept short), ~5.6 s on a GPU.
CPU_TOKENS = (40,)
GPU_TOKENS = (40, 120)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(values: list[float], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}p50_s": round(statistics.median(values), 4),
        f"{prefix}p95_s": round(_percentile(values, 0.95), 4),
    }


def bench_tts(
    device: str,
    *,
    iterations: int | None = None,
    tokens: tuple[int, ...] | None = None,
    stream_chunk_size: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """Benchmark ``XTTSEngine`` on XTTS v2 of the real size with random weights.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        iterations: Timed calls per case after one warm-up (default 3 on CPU, 10 on CUDA).
        tokens: Audio tokens per call, one case each (default 40 on CPU; 40 and 120 on CUDA).
        stream_chunk_size: Tokens per streamed chunk (the engine's default, 20).
        threads: Torch CPU threads (``None``: torch's default).

    Returns:
        ``{"model", "device", "dtype", "load_s", "conditioning_s", "cases": [...],
        "peak_rss_gib"[, "peak_gpu_gib"]}``; each case has ``output_tokens``,
        ``audio_s``, ``chunks``, ``p50_s``/``p95_s`` per call, ``first_chunk_p50_s``/
        ``first_chunk_p95_s`` and ``rtf`` (p50 call time / audio seconds).
    """
    import numpy as np
    import torch

    from pipeline.engines.tts.xtts import XTTSEngine
    from tests.tiny_xtts import XTTS_V2_ARGS, write_xtts_v2
    from voices.profile import VoiceProfile

    cuda = device.startswith("cuda")
    iterations = iterations or (10 if cuda else 3)
    tokens = tokens or (GPU_TOKENS if cuda else CPU_TOKENS)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory(prefix="xtts-v2-random-") as folder:
        checkpoint = write_xtts_v2(Path(folder) / "XTTS-v2", speakers=["Random Speaker"])
        engine = XTTSEngine(
            model=str(checkpoint),
            device=device,
            stream_chunk_size=stream_chunk_size,
            fixed_audio_tokens=max(tokens),
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        engine.load()
        engine.warmup()
        load_s = time.perf_counter() - started

    rate = engine.sample_rate
    rng = np.random.default_rng(0)
    # Conditioning cost does not depend on what is said: 10 s of noise-like "speech".
    reference = (rng.standard_normal(16000 * 10) * 3000).astype(np.int16)
    started = time.perf_counter()
    latents = engine.condition(reference, 16000)
    conditioning_s = time.perf_counter() - started
    voice = VoiceProfile("bench", latents, 10.0, "enrolled")

    cases = []
    for count in tokens:
        engine._fixed_tokens = count  # the case's forced length; same engine, same weights
        totals: list[float] = []
        firsts: list[float] = []
        chunks = samples = 0
        for index in range(iterations + 1):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            first = None
            chunks = samples = 0
            for chunk in engine.synthesize(SENTENCE, "en", voice):
                if first is None:
                    first = time.perf_counter() - started
                chunks += 1
                samples += chunk.size
            if cuda:
                torch.cuda.synchronize()
            if index:  # the first call of a case warms it up
                totals.append(time.perf_counter() - started)
                firsts.append(first or 0.0)
        audio_s = samples / rate
        case = {
            "output_tokens": count,
            "audio_s": round(audio_s, 2),
            "chunks": chunks,
            **_stats(totals),
            **_stats(firsts, "first_chunk_"),
            "iterations": iterations,
        }
        case["rtf"] = round(case["p50_s"] / audio_s, 3)
        cases.append(case)

    result: dict[str, Any] = {
        "model": (
            f"XTTS v2, random weights: GPT {XTTS_V2_ARGS['gpt_layers']}x"
            f"{XTTS_V2_ARGS['gpt_n_model_channels']}, stream_chunk_size {stream_chunk_size}"
        ),
        "device": engine.device,
        "dtype": engine.dtype,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "conditioning_s": round(conditioning_s, 3),
        "cases": cases,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
    }
    if cuda:
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    engine.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--iterations", type=int, help="timed calls per case (after one warm-up)")
    parser.add_argument("--tokens", type=int, action="append", help="audio tokens per call (repeatable)")
    parser.add_argument("--chunk", type=int, default=20, help="stream_chunk_size (tokens per chunk)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = bench_tts(
        args.device,
        iterations=args.iterations,
        tokens=tuple(args.tokens) if args.tokens else None,
        stream_chunk_size=args.chunk,
        threads=args.threads,
    )
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
