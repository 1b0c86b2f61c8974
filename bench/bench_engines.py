"""Latency and memory of the production engines at production shapes, with random weights.

Nothing is downloaded: the models are built from their real architectures with random
weights (NLLB-200 1.3B: ``M2M100Config`` with d_model 1024, 24+24 layers, ffn 8192,
vocabulary 256206; Parakeet-TDT-0.6B: FastConformer d_model 1024, 24 layers, 128 mels,
TDT decoder with a 2-layer 640 LSTM). Output lengths are forced
(``min_new_tokens = max_new_tokens``), so the compute equals that of a real translation
of that length. The ASR cases run the engine's own batch path (one padded forward
pass + the model's greedy decoding).

Each model runs in its own child process, so "peak memory" is that model's alone: the
resident set (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

    python bench/bench_engines.py                      # cpu (and cuda if available)
    python bench/bench_engines.py --only mt --iterations 5 --json out.json
    python bench/bench_engines.py --only mt-backends --device cpu   # CTranslate2 int8 vs transformers fp32

``mt-backends`` runs NLLB-200 600M of the real shape through ``NLLBMTEngine`` twice, side by
side: the ``ctranslate2`` backend (converted by the engine itself, int8 on the CPU,
int8_float16 on CUDA) and the ``transformers`` backend (float32 on the CPU), a handful of
sentences each (24 input tokens → 32 forced output tokens), plus the first call of each
(warm start) and the conversion time.

TTS joins when ``bench/bench_tts.py`` provides ``bench_tts(device) -> dict``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NLLB_1_3B = {"d_model": 1024, "layers": 24, "ffn": 8192, "heads": 16, "vocab": 256206}
NLLB_600M = {"d_model": 1024, "layers": 12, "ffn": 4096, "heads": 16, "vocab": 256206}
PARAKEET_TDT_0_6B = {
    "d_model": 1024, "n_layers": 24, "n_heads": 8, "features": 128, "subsampling_channels": 256,
    "pred_hidden": 640, "pred_layers": 2, "joint_hidden": 640,
}
FASTCONFORMER_LARGE = {
    "d_model": 512, "n_layers": 17, "n_heads": 8, "features": 80, "subsampling_channels": 256,
    "pred_hidden": 640, "pred_layers": 1, "joint_hidden": 640,
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _timed(fn: Any, iterations: int, device: str) -> dict[str, float]:
    import torch

    fn()  # warm-up: kernels, allocator, caches
    times = []
    for _ in range(iterations):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "p50_s": round(statistics.median(times), 4),
        "p95_s": round(_percentile(times, 0.95), 4),
        "iterations": iterations,
    }


def _peak_memory(device: str) -> dict[str, float]:
    import torch

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_gib": round(rss_kb / 1024**2, 2)}
    if device.startswith("cuda"):
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    return out


# ---------------------------------------------------------------------------------- MT


def bench_mt(device: str, iterations: int) -> dict[str, Any]:
    """NLLB-200 1.3B: one sentence (24 → 32 tokens) and a batch of 4 speakers' sentences."""
    import torch
    from transformers import M2M100ForConditionalGeneration

    from tests.tiny_models import nllb_config

    started = time.perf_counter()
    torch.manual_seed(0)
    config = nllb_config(
        NLLB_1_3B["vocab"], d_model=NLLB_1_3B["d_model"], layers=NLLB_1_3B["layers"],
        ffn=NLLB_1_3B["ffn"], heads=NLLB_1_3B["heads"],
    )
    model = M2M100ForConditionalGeneration(config).eval()
    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model.to(device=device, dtype=dtype)
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    eng, spa = 256047, 256161  # where eng_Latn / spa_Latn sit in NLLB's vocabulary

    def case(batch: int, in_tokens: int, out_tokens: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(batch)
        ids = torch.randint(4, 256000, (batch, in_tokens), generator=generator)
        ids[:, 0] = eng
        ids[:, -1] = 2
        ids = ids.to(device)
        mask = torch.ones_like(ids)

        def run() -> None:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=mask, forced_bos_token_id=spa,
                    num_beams=1, do_sample=False,
                    min_new_tokens=out_tokens, max_new_tokens=out_tokens,
                )
            assert out.shape[1] >= out_tokens

        result = _timed(run, iterations, device)
        result.update(batch=batch, input_tokens=in_tokens, output_tokens=out_tokens)
        result["per_output_token_ms"] = round(1000 * result["p50_s"] / out_tokens, 1)
        return result

    cases = [case(1, 24, 32), case(4, 24, 32)]
    return {
        "model": "NLLB-200 1.3B shape (random weights)",
        "params_m": round(params / 1e6),
        "dtype": str(dtype).removeprefix("torch."),
        "build_s": round(build_s, 1),
        "cases": cases,
        **_peak_memory(device),
    }


def _write_nllb_600m(folder: Path) -> Path:
    """An NLLB-200 600M-shaped checkpoint (random weights, float16 on disk) + tiny tokenizer.

    The tokenizer is the tests' tiny one (its pieces are the first ids of the real
    vocabulary's size); CTranslate2's converter pads the vocabulary to the model's
    256206 entries as it does for the real checkpoint.
    """
    import torch
    from transformers import M2M100ForConditionalGeneration

    from tests.tiny_models import build_tiny_nllb, nllb_config

    tiny = build_tiny_nllb(folder / "tokenizer")
    torch.manual_seed(0)
    config = nllb_config(
        NLLB_600M["vocab"], d_model=NLLB_600M["d_model"], layers=NLLB_600M["layers"],
        ffn=NLLB_600M["ffn"], heads=NLLB_600M["heads"],
    )
    model = M2M100ForConditionalGeneration(config).eval().half()
    out = folder / "nllb-600m-shape"
    model.save_pretrained(out)
    for name in ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny / name).is_file():
            (out / name).write_bytes((tiny / name).read_bytes())
    return out


def bench_mt_backends(device: str, iterations: int, sentences: int = 4) -> dict[str, Any]:
    """NLLB-200 600M shape through NLLBMTEngine: CTranslate2 vs transformers, same inputs.

    CTranslate2 runs in each of its compute types that matter on the device (int8 and
    float32 on the CPU: CPUs without int8 dot-product instructions may run float32
    faster; int8_float16 on CUDA), transformers in its production dtype.
    """
    import torch

    from pipeline.engines.mt.nllb import NLLBMTEngine

    started = time.perf_counter()
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="nllb-600m-", dir=shm if shm.is_dir() else None))
    cuda = device.startswith("cuda")
    try:
        checkpoint = _write_nllb_600m(work)
        build_s = time.perf_counter() - started
        # Forced lengths: ~24 input tokens (language token and </s> included) → 33 output
        # tokens (target language token included) whatever the random weights prefer: a
        # budget of ceil(0.01 × input) + 32 = 33 tokens, all of them required.
        words = "the weather is very good today i would like a cup of coffee please".split()
        forced = {"min_new_tokens": 33}
        common = {
            "model": str(checkpoint), "device": device, "batch_window_ms": 0,
            "length_factor": 0.01, "extra_tokens": 32, "warmup_batches": [],
        }
        engines: dict[str, Any] = {}
        for compute_type in (["int8_float16"] if cuda else ["int8", "float32"]):
            engines[f"ctranslate2 {compute_type}"] = lambda compute_type=compute_type: NLLBMTEngine(
                backend="ctranslate2", compute_type=compute_type, cache_dir=str(work / "converted"),
                threads=0 if cuda else torch.get_num_threads(), generation=forced, **common,
            )
        engines["transformers"] = lambda: NLLBMTEngine(backend="transformers", generation=forced, **common)
        results: dict[str, Any] = {}
        for name, make in engines.items():
            engine = make()
            began = time.perf_counter()
            engine.load()
            load_s = time.perf_counter() - began
            tokenizer = engine._tokenizer
            tokenizer.src_lang = "eng_Latn"
            texts = []
            for index in range(sentences + 1):
                picked = [words[(index + k) % len(words)] for k in range(40)]
                while len(tokenizer(" ".join(picked))["input_ids"]) > 24:
                    picked.pop()
                texts.append(" ".join(picked))
            times = []
            for text in texts:
                began = time.perf_counter()
                engine.translate([text], "en", "es")
                times.append(time.perf_counter() - began)
            row = {
                "dtype": engine.dtype,
                "load_s": round(load_s, 1),  # conversion included for ctranslate2
                "first_call_s": round(times[0], 3),
                "p50_s": round(statistics.median(times[1:]), 3),
                "p95_s": round(_percentile(times[1:], 0.95), 3),
                "input_tokens": len(tokenizer(texts[-1])["input_ids"]),
                "output_tokens": 33,
                "sentences": sentences,
            }
            if cuda:
                began = time.perf_counter()
                engine.translate(texts[1:5], "en", "es")
                row["batch4_s"] = round(time.perf_counter() - began, 3)
            results[name] = row
            engine.close()
            print(f"  {name}: {row}", file=sys.stderr, flush=True)
        reference = results["transformers"]["p50_s"]
        return {
            "model": "NLLB-200 600M shape (random weights)",
            "build_s": round(build_s, 1),
            "threads": torch.get_num_threads(),
            "backends": results,
            "speedup_p50": {
                name: round(reference / max(row["p50_s"], 1e-9), 2)
                for name, row in results.items() if name != "transformers"
            },
            **_peak_memory(device),
        }
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------- ASR


def bench_asr(device: str, iterations: int, shape: str = "parakeet") -> dict[str, Any]:
    """Parakeet-TDT-0.6B (or FastConformer hybrid large) through NeMoASREngine's batch path.

    The checkpoint is written as a ``.nemo`` and restored by the engine, like a real one.
    """
    import numpy as np

    from pipeline.engines.asr.nemo import NeMoASREngine
    from tests.tiny_models import build_nemo_asr_model, nemo_tokenizer

    sizes = PARAKEET_TDT_0_6B if shape == "parakeet" else FASTCONFORMER_LARGE
    kind = "tdt" if shape == "parakeet" else "hybrid"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # The toy corpus caps the BPE vocabulary at 256 pieces (Parakeet v2 has 1024):
        # that only narrows the joint's output layer, a small part of the compute.
        tokenizer = nemo_tokenizer(Path(tmp) / "tok", vocab_size=256)
        model = build_nemo_asr_model(kind, tokenizer, **sizes)
        params = sum(p.numel() for p in model.parameters())
        path = Path(tmp) / f"{shape}.nemo"
        model.save_to(str(path))
        del model
        engine = NeMoASREngine(model=str(path), device=device, batch_window_ms=0, max_batch=8)
        engine.load()
    build_s = time.perf_counter() - started

    rng = np.random.default_rng(0)

    def case(batch: int, seconds: float) -> dict[str, Any]:
        clips = [
            (rng.normal(0, 3000, int(16000 * seconds)).astype(np.int16), 16000, "en")
            for _ in range(batch)
        ]
        last: list[Any] = []

        def run() -> None:
            last[:] = engine.transcribe_batch(clips)

        result = _timed(run, iterations, device)
        result.update(batch=batch, audio_s=seconds)
        result["rtf"] = round(result["p50_s"] / (seconds * batch), 3)
        result["emitted_words"] = sum(len(t.text.split()) for t in last)
        return result

    cases = [case(1, 5.0), case(4, 5.0)]
    engine.close()
    return {
        "model": f"{'Parakeet-TDT-0.6B' if shape == 'parakeet' else 'FastConformer hybrid large'} "
                 "shape (random weights)",
        "params_m": round(params / 1e6),
        "decoder": kind,
        "build_s": round(build_s, 1),
        "cases": cases,
        **_peak_memory(device),
        "note": "random weights decide how many tokens the greedy decoder emits "
                "(emitted_words); the encoder pass, the bulk of the cost, is exact",
    }


# -------------------------------------------------------------------------------- main


def _child(part: str, device: str, iterations: int) -> dict[str, Any]:
    import torch

    torch.set_grad_enabled(False)
    if part == "mt":
        return bench_mt(device, iterations)
    if part == "mt-backends":
        return bench_mt_backends(device, iterations)
    if part in ("asr", "asr-large"):
        return bench_asr(device, iterations, "parakeet" if part == "asr" else "large")
    if part == "tts":
        try:
            from bench.bench_tts import bench_tts  # owned by the XTTS side
        except ImportError:
            return {"skipped": "bench/bench_tts.py is not there"}
        return bench_tts(device)
    raise SystemExit(f"unknown part {part}")


def _run_child(part: str, device: str, iterations: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            sys.executable, __file__, "--child", part, "--device", device,
            "--iterations", str(iterations), "--json", out.name,
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return {"error": " | ".join(tail)}
        result = json.loads(Path(out.name).read_text())
        result["wall_s"] = round(time.perf_counter() - started, 1)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cpu, plus cuda when available), cpu or cuda")
    parser.add_argument("--iterations", type=int, default=3, help="timed calls per case (after one warm-up)")
    parser.add_argument("--only", action="append", choices=["asr", "asr-large", "mt", "mt-backends", "tts"],
                        help="run only these parts (repeatable; default asr, mt, tts)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = _child(args.child, args.device, args.iterations)
        Path(args.json).write_text(json.dumps(result))
        return 0

    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device]
    )
    parts = args.only or ["asr", "mt", "tts"]
    results: dict[str, dict[str, Any]] = {}
    for device in devices:
        for part in parts:
            key = f"{part}@{device}"
            print(f"== {key} ...", flush=True)
            results[key] = _run_child(part, device, args.iterations)
            print(json.dumps(results[key], indent=1), flush=True)
    print("\n== summary (p50 / p95 per call)")
    for key, result in results.items():
        for case in result.get("cases", []):
            label = ", ".join(f"{k}={case[k]}" for k in ("batch", "input_tokens", "output_tokens", "audio_s") if k in case)
            mem = result.get("peak_gpu_gib", result.get("peak_rss_gib"))
            print(f"{key:<14} {label:<48} {case['p50_s']:.3f} s / {case['p95_s']:.3f} s  peak {mem} GiB")
        if "backends" in result:
            for name, row in result["backends"].items():
                print(f"{key:<14} {name + ' (' + row['dtype'] + ')':<48} {row['p50_s']:.3f} s / "
                      f"{row['p95_s']:.3f} s  first call {row['first_call_s']:.3f} s")
            for name, ratio in result["speedup_p50"].items():
                print(f"{key:<14} {name} is {ratio}x as fast as transformers per sentence (p50)")
        if "error" in result or "skipped" in result:
            print(f"{key:<14} {result.get('error') or result.get('skipped')}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
