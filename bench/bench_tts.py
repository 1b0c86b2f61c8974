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

``--compare-coqui`` also runs coqui's own ``Xtts.inference_stream`` (what the engine used
before: 20-token chunks) on the same loaded model, and counts for both what the GPT and
the vocoder computed per sentence: GPT forward calls and positions, vocoder frames.
``--size tiny|small`` swaps the 30×1024 GPT for a smaller one (the vocoder keeps its real
size), for CPU runs that finish in seconds.

    python bench/bench_tts.py                  # cpu
    python bench/bench_tts.py --size small --compare-coqui --threads 1
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


#: GPT sizes: XTTS v2's own, and smaller stand-ins for CPU runs (same vocoder).
SIZES: dict[str, dict[str, Any]] = {
    "v2": {},
    "small": {"gpt_layers": 8, "gpt_n_model_channels": 512, "gpt_n_heads": 8, "decoder_input_dim": 512},
    "tiny": {"gpt_layers": 2, "gpt_n_model_channels": 64, "gpt_n_heads": 4, "decoder_input_dim": 64},
}


class _CoquiCounter:
    """Counts what coqui's GPT and vocoder compute (forward hooks; nothing is changed)."""

    def __init__(self, model: Any) -> None:
        self.gpt_calls = self.gpt_positions = self.vocoder_frames = 0
        self._handles = [
            model.gpt.gpt.register_forward_pre_hook(self._on_gpt, with_kwargs=True),
            model.hifigan_decoder.waveform_decoder.register_forward_pre_hook(self._on_vocoder),
        ]

    def _on_gpt(self, module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        self.gpt_calls += 1
        self.gpt_positions += int(embeds.shape[0] * embeds.shape[1]) if embeds is not None else 0

    def _on_vocoder(self, module: Any, args: tuple) -> None:
        self.vocoder_frames += int(args[0].shape[-1])

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def bench_tts(
    device: str,
    *,
    iterations: int | None = None,
    tokens: tuple[int, ...] | None = None,
    stream_chunk_size: int = 20,
    first_chunk_tokens: int = 8,
    threads: int | None = None,
    size: str = "v2",
    compare_coqui: bool = False,
) -> dict[str, Any]:
    """Benchmark ``XTTSEngine`` on XTTS v2 of the real size with random weights.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        iterations: Timed calls per case after one warm-up (default 3 on CPU, 10 on CUDA).
        tokens: Audio tokens per call, one case each (default 40 on CPU; 40 and 120 on CUDA).
        stream_chunk_size: Tokens per later streamed chunk (the engine's default, 20).
        first_chunk_tokens: Tokens before the first chunk (the engine's default, 8).
        threads: Torch CPU threads (``None``: torch's default).
        size: ``v2`` (the real GPT), ``small`` or ``tiny`` (see :data:`SIZES`).
        compare_coqui: Also run coqui's ``inference_stream`` (20-token chunks) per case.

    Returns:
        ``{"model", "device", "dtype", "load_s", "conditioning_s", "cases": [...],
        "peak_rss_gib"[, "peak_gpu_gib"]}``; each case has ``output_tokens``,
        ``audio_s``, ``chunks``, ``p50_s``/``p95_s`` per call, ``first_chunk_p50_s``/
        ``first_chunk_p95_s`` and ``rtf`` (p50 call time / audio seconds).
    """
    import numpy as np
    import torch

    from pipeline.engines.tts.xtts import XTTSEngine
    from tests.tiny_xtts import XTTS_V2_ARGS, write_xtts_checkpoint
    from voices.profile import VoiceProfile

    cuda = device.startswith("cuda")
    iterations = iterations or (10 if cuda else 3)
    tokens = tokens or (GPU_TOKENS if cuda else CPU_TOKENS)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory(prefix="xtts-v2-random-") as folder:
        model_args = {**XTTS_V2_ARGS, **SIZES[size]}
        checkpoint = write_xtts_checkpoint(
            Path(folder) / "XTTS-v2", model_args, vocab_size=6681, speakers=["Random Speaker"]
        )
        engine = XTTSEngine(
            model=str(checkpoint),
            device=device,
            first_chunk_tokens=first_chunk_tokens,
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

    decoder = engine.decoder
    assert decoder is not None
    requests: list[Any] = []
    submit = decoder.submit
    decoder.submit = lambda request: requests.append(request) or submit(request)  # type: ignore[method-assign]

    def ours(count: int) -> Any:
        engine._fixed_tokens = count  # the case's forced length; same engine, same weights
        return engine.synthesize(SENTENCE, "en", voice)

    model = engine._model
    cond, speaker = engine._voice_tensors(voice)
    options = {
        "temperature": 0.75, "top_k": 50, "top_p": 0.85, "repetition_penalty": 5.0,
        "length_penalty": 1.0, "stream_chunk_size": 20, "enable_text_splitting": False,
    }

    def coqui(count: int) -> Any:
        return model.inference_stream(
            SENTENCE, "en", cond, speaker, min_new_tokens=count, max_new_tokens=count, **options
        )

    variants = {"polyvox": ours, **({"coqui_inference_stream": coqui} if compare_coqui else {})}
    cases = []
    for count in tokens:
        for name, start in variants.items():
            totals: list[float] = []
            firsts: list[float] = []
            chunks = samples = 0
            counter = _CoquiCounter(model) if name != "polyvox" else None
            gpt_before = (decoder.gpt_forward_calls, decoder.gpt_positions)
            for index in range(iterations + 1):
                if cuda:
                    torch.cuda.synchronize()
                requests.clear()
                started = time.perf_counter()
                first = None
                chunks = samples = 0
                for chunk in start(count):
                    if first is None:
                        first = time.perf_counter() - started
                    chunks += 1
                    samples += chunk.numel() if hasattr(chunk, "numel") else chunk.size
                if cuda:
                    torch.cuda.synchronize()
                if index:  # the first call of a case warms it up
                    totals.append(time.perf_counter() - started)
                    firsts.append(first or 0.0)
            calls = iterations + 1
            if counter is not None:
                counter.close()
                work = {
                    "gpt_forward_calls": counter.gpt_calls // calls,
                    "gpt_positions": counter.gpt_positions // calls,
                    "vocoder_frames": counter.vocoder_frames // calls,
                }
            else:
                work = {
                    "gpt_forward_calls": (decoder.gpt_forward_calls - gpt_before[0]) // calls,
                    "gpt_positions": (decoder.gpt_positions - gpt_before[1]) // calls,
                    "vocoder_frames": sum(frames for _, frames, _ in requests[-1].vocoder_calls),
                }
            audio_s = samples / rate
            case = {
                "variant": name,
                "output_tokens": count,
                "audio_s": round(audio_s, 2),
                "chunks": chunks,
                **_stats(totals),
                **_stats(firsts, "first_chunk_"),
                **work,
                "iterations": iterations,
            }
            case["rtf"] = round(case["p50_s"] / audio_s, 3)
            cases.append(case)
            print(json.dumps(case), file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "model": (
            f"XTTS v2 ({size}), random weights: GPT {model_args['gpt_layers']}x"
            f"{model_args['gpt_n_model_channels']}, first chunk {first_chunk_tokens} tokens, "
            f"then {stream_chunk_size}"
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
    parser.add_argument("--chunk", type=int, default=20, help="stream_chunk_size (tokens per later chunk)")
    parser.add_argument("--first", type=int, default=8, help="first_chunk_tokens")
    parser.add_argument("--size", choices=sorted(SIZES), default="v2", help="GPT size (vocoder always real)")
    parser.add_argument("--compare-coqui", action="store_true", help="also run coqui's inference_stream")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = bench_tts(
        args.device,
        iterations=args.iterations,
        tokens=tuple(args.tokens) if args.tokens else None,
        stream_chunk_size=args.chunk,
        first_chunk_tokens=args.first,
        threads=args.threads,
        size=args.size,
        compare_coqui=args.compare_coqui,
    )
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
