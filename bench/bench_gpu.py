"""The production cascade on one GPU: speech end → first interpreted audio, 1 and 8 speakers,
against an S3TVR-style baseline in the same run.

Production shapes with random weights (nothing downloaded), forced output lengths, through
polyvox's real engines: NeMo Parakeet-TDT-0.6B (bf16 autocast, CUDA-graph greedy TDT
decoding), NLLB-200 1.3B on CTranslate2 (int8_float16, converted by the engine itself) and
XTTS v2 (float16 GPT, streamed, batched across speakers). Per utterance: a 5 s clip is
transcribed, a 24-token sentence is translated into exactly 33 tokens, and the
translation is spoken with exactly 60 audio tokens (≈ 2.8 s); the time to the first audio
chunk is what a listener waits for. Random weights make the words meaningless, so the
text handed from stage to stage is fixed; the compute is that of real speech of these
lengths.

Parts, each in its own process with its own timeout, results appended to
``OUT/results.jsonl`` as they are measured (a part that hangs or dies loses only itself):

1. ``build`` — checkpoints in ``/dev/shm`` (models initialised on the GPU), the NLLB
   conversion;
2. ``production`` — engines loaded and warmed as ``polyvox serve`` does; one speaker,
   ``--utterances`` times (first vs last = warm start); then ``--speakers`` simultaneous
   speakers, ``--rounds`` times (per-request p50/p95/max, first-chunk spread, GPU memory);
3. ``baseline`` — S3TVR-style: float32, Parakeet-CTC-1.1B shape, NLLB
   ``generate(max_length=30)``, XTTS non-streamed ``inference``, one request at a time per
   model;
4. ``cold`` — engines loaded without warm-up: the first utterance's cost;
5. ``processors`` — where pipecat is installed (not on the GPU machine's wheel set): one
   utterance through the real pipecat processors (VAD, ASR, MT, TTS), for the pipeline's
   own overhead.

Smoke mode (``--smoke``) runs everything on the CPU with tiny checkpoints, in-process;
``tests/test_bench_gpu.py`` runs it.

On the GPU machine (Python 3.12, torch 2.11, transformers 5.17, no network): the wheel set
of ``../shared/gpu/wheels.txt`` plus ``ctranslate2==4.8.5``, downloaded here into
``build/wheels`` (``build/`` is git-ignored, so it only travels when named in ``carry``;
about 62 MiB, under the 64 MiB ``carry`` limit)::

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d build/wheels ctranslate2==4.8.5 $(grep -v \
        -e antlr4 -e docopt ../shared/gpu/wheels.txt)
    pip wheel --no-deps -w build/wheels antlr4-python3-runtime==4.9.3 docopt==0.6.2

then one device command (``run`` with ``carry: ["build/wheels"]`` and ``timeout_s: 600``)::

    pip install -q --no-index --no-deps --target /tmp/site build/wheels/*.whl && \
    PYTHONPATH=/tmp/site:. POLYVOX_EXTRA_PATH=/tmp/site python3 bench/bench_gpu.py --out $OUT

It prints the table at the end (and writes ``$OUT/table.txt``, ``$OUT/results.jsonl``);
parts are skipped once ``--budget-s`` (400 s) is spent, so the whole command stays within
7 minutes on an H200, building included. ``--parts production,baseline`` reruns parts (the
checkpoints in ``/dev/shm/polyvox-bench`` are reused while the machine stays up).

CTranslate2 4.8.5's CUDA build links CUDA 12's cuBLAS (``libcublas.so.12``); a machine
whose torch is built for CUDA 13 may not have it. Then the MT engine fails its warm-up,
the benchmark records ``mt_fallback`` with the reason and measures the transformers
backend (bfloat16) instead, and the table's MT row names the backend it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in filter(None, os.environ.get("POLYVOX_EXTRA_PATH", "").split(os.pathsep)):
    if extra not in sys.path:
        sys.path.insert(0, extra)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: FastConformer shapes (``tests.tiny_models.nemo_asr_config`` sizes).
PARAKEET_TDT_0_6B = {
    "d_model": 1024, "n_layers": 24, "n_heads": 8, "features": 128, "subsampling_channels": 256,
    "pred_hidden": 640, "pred_layers": 2, "joint_hidden": 640,
}
PARAKEET_CTC_1_1B = {"d_model": 1024, "n_layers": 42, "n_heads": 8, "features": 80, "subsampling_channels": 256}
NLLB_1_3B = {"d_model": 1024, "layers": 24, "ffn": 8192, "heads": 16, "vocab": 256206}

SOURCE_TEXT = "the weather is very good today i would like a cup of coffee please where is the train station"
TARGET_TEXT = "El tiempo es muy bueno hoy, quisiera una taza de café, por favor."


@dataclass(frozen=True)
class Workload:
    """What one utterance costs, and how many are measured."""

    utterance_s: float
    mt_input_tokens: int
    mt_output_tokens: int
    tts_tokens: int
    first_chunk_tokens: int
    chunk_tokens: int
    speakers: int
    utterances: int
    rounds: int
    asr_batch_window_ms: float
    mt_batch_window_ms: float


GPU_WORKLOAD = Workload(5.0, 24, 33, 60, 8, 20, 8, 10, 3, 10.0, 5.0)
#: Smoke: the harness, not the numbers (the tiny XTTS keeps the real-size vocoder, slow on a CPU).
SMOKE_WORKLOAD = Workload(1.0, 12, 8, 4, 2, 2, 2, 2, 1, 10.0, 5.0)
TIMEOUTS = {"build": 240, "production": 200, "baseline": 150, "cold": 90, "processors": 90}
ROWS = {
    "asr": "ASR",
    "mt": "MT",
    "tts_first": "TTS first chunk",
    "e2e": "speech end → first audio (compute)",
    "e2e_endpointing": "speech end → first audio (+ endpointing)",
    "overhead": "pipeline overhead (processors)",
    "warm_first": "first utterance after start-up",
    "warm_last": "last utterance",
    "cold_first": "first utterance without warm-up",
    "multi_e2e": "per request: speech end → first audio",
    "multi_spread": "TTS first-chunk spread in a round",
    "gpu_memory": "GPU memory",
    "base_asr": "baseline ASR",
    "base_mt": "baseline MT",
    "base_tts": "baseline TTS (whole sentence)",
    "base_e2e": "baseline speech end → first audio",
    "base_multi": "baseline per request",
    "ratio_single": "baseline / polyvox, 1 speaker p50",
    "ratio_multi": "baseline / polyvox, N speakers p95",
}


# ---------------------------------------------------------------------------- helpers


class Recorder:
    """Appends results to ``results.jsonl`` as they come (and keeps them for the table)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def previous(self) -> list[dict[str, Any]]:
        """Every row in the file, this process's and earlier parts'."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def __call__(self, part: str, key: str, **values: Any) -> None:
        row = {"part": part, "key": key, **values}
        self.rows.append(row)
        with self.path.open("a") as out:
            out.write(json.dumps(row) + "\n")
        print(f"  [{part}] {key}: {json.dumps(values)}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p95_ms": round(1000 * percentile(values, 0.95), 1),
        "max_ms": round(1000 * max(values), 1),
    }


class GPUMemory:
    """Device memory in use (all processes' allocations in this one: torch and CTranslate2)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.base = self.used()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used(self) -> float:
        if not self.cuda:
            return 0.0
        import torch

        free, total = torch.cuda.mem_get_info()
        return (total - free) / 1024**3

    def sample(self) -> float:
        value = self.used()
        self.peak = max(self.peak, value)
        return value

    def watch(self) -> None:
        if not self.cuda or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(0.02):
                self.sample()

        self._stop.clear()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def clip(seconds: float, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16)


# ----------------------------------------------------------------------------- build


def part_build(ctx: Context) -> None:
    """Checkpoints of the production shapes (or tiny ones) in the work folder.

    ``--checkpoints`` names ready ones instead (the smoke test reuses the test suite's).
    """
    import torch

    from pipeline.engines.mt.nllb import _convert_to_ct2
    from pipeline.models import converted_model
    from tests.tiny_models import build_nemo_asr_model, build_tiny_nllb, nemo_tokenizer, nllb_config

    work, record = ctx.work, ctx.record
    work.mkdir(parents=True, exist_ok=True)
    done = work / "built.json"
    if done.is_file():
        record("build", "reused", folder=str(work))
        return
    given = dict(item.split("=", 1) for item in (ctx.args.checkpoints or "").split(",") if "=" in item)
    paths = {name: given[name] for name in ("asr", "mt", "tts", "baseline_asr") if name in given}
    build_device = ctx.device if ctx.device.startswith("cuda") else "cpu"

    if "asr" not in paths:
        started = time.perf_counter()
        tokenizer_dir = nemo_tokenizer(work / "asr-tokenizer", vocab_size=64 if ctx.smoke else 256)
        sizes = {} if ctx.smoke else PARAKEET_TDT_0_6B
        model = _on_device(build_device, record, "asr", lambda: build_nemo_asr_model("tdt", tokenizer_dir, **sizes))
        model.save_to(str(work / "asr.nemo"))
        params = sum(p.numel() for p in model.parameters())
        del model
        paths["asr"] = str(work / "asr.nemo")
        record("build", "asr", seconds=round(time.perf_counter() - started, 1), params_m=round(params / 1e6, 1))

    if "mt" not in paths:
        started = time.perf_counter()
        tiny = build_tiny_nllb(work / "nllb-tokenizer")
        nllb = tiny
        if not ctx.smoke:
            from transformers import M2M100ForConditionalGeneration

            config = nllb_config(
                NLLB_1_3B["vocab"], d_model=NLLB_1_3B["d_model"], layers=NLLB_1_3B["layers"],
                ffn=NLLB_1_3B["ffn"], heads=NLLB_1_3B["heads"],
            )
            torch.manual_seed(0)
            model = _on_device(build_device, record, "mt", lambda: M2M100ForConditionalGeneration(config).eval().half())
            nllb = work / "nllb"
            model.save_pretrained(nllb)
            del model
            for name in ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (tiny / name).is_file():
                    (nllb / name).write_bytes((tiny / name).read_bytes())
        paths["mt"] = str(nllb)
        record("build", "mt", seconds=round(time.perf_counter() - started, 1))

    # The conversion the engine would do on its first start, done here (CPU work) so the
    # production part measures a warm cache, as a restarted server has.
    started = time.perf_counter()
    quantization = ctx.mt_compute_type
    try:
        folder = converted_model(
            Path(paths["mt"]), runtime="ctranslate2", quantization=quantization,
            convert=lambda source, out: _convert_to_ct2(source, out, quantization),
            label="mt.model", cache_dir=work / "converted",
        )
        record("build", "mt_conversion", seconds=round(time.perf_counter() - started, 1),
               compute_type=quantization, folder=str(folder))
    except Exception as exc:  # noqa: BLE001 - e.g. no ctranslate2 wheel: MT falls back later
        record("build", "mt_conversion_failed", reason=f"{type(exc).__name__}: {str(exc)[:200]}")

    if "tts" not in paths:
        started = time.perf_counter()
        from tests.tiny_xtts import write_tiny_xtts, write_xtts_v2

        write = write_tiny_xtts if ctx.smoke else write_xtts_v2
        _on_device(build_device, record, "tts", lambda: write(work / "xtts", speakers=["Bench Speaker"]))
        paths["tts"] = str(work / "xtts")
        record("build", "tts", seconds=round(time.perf_counter() - started, 1))
    done.write_text(json.dumps(paths))


def _on_device(device: str, record: Recorder, what: str, build: Any) -> Any:
    """``build()`` with new tensors on ``device`` (fast random init on a GPU), else on the CPU."""
    import torch

    if device == "cpu":
        return build()
    try:
        with torch.device(device):
            return build()
    except Exception as exc:  # noqa: BLE001 - some constructors insist on the CPU
        record("build", f"{what}_on_cpu", reason=f"{type(exc).__name__}: {str(exc)[:200]}")
        return build()


# ------------------------------------------------------------------------ the engines


class Context:
    """Settings and paths shared by the parts."""

    def __init__(self, args: argparse.Namespace, record: Recorder) -> None:
        self.args = args
        self.smoke: bool = args.smoke
        self.device: str = args.device
        self.work = Path(args.work)
        self.record = record
        self.workload = SMOKE_WORKLOAD if self.smoke else GPU_WORKLOAD
        if args.speakers:
            self.workload = _replace(self.workload, speakers=args.speakers)
        if args.utterances:
            self.workload = _replace(self.workload, utterances=max(2, args.utterances))

    def checkpoint(self, name: str) -> Path | None:
        """A built (or given) checkpoint's path: ``asr``, ``mt``, ``tts``, ``baseline_asr``."""
        built = json.loads((self.work / "built.json").read_text())
        return Path(built[name]) if name in built else None

    @property
    def nllb_folder(self) -> Path:
        path = self.checkpoint("mt")
        assert path is not None
        return path

    @property
    def mt_compute_type(self) -> str:
        """What the CTranslate2 backend picks on this device (``auto``)."""
        return "int8_float16" if self.device.startswith("cuda") else "int8"

    def mt_engine(self, folder: Path, **extra: Any) -> Any:
        from pipeline.engines.mt.nllb import NLLBMTEngine

        load = self.workload
        # After a fallback in an earlier part (see engines()), the later ones use it too.
        fell_back = any(row["key"] == "mt_fallback" for row in self.record.previous())
        extra.setdefault("backend", "transformers" if fell_back else "ctranslate2")
        return NLLBMTEngine(
            model=str(folder),
            device=self.device,
            compute_type=self.mt_compute_type,
            cache_dir=str(self.work / "converted"),
            # Forced length: a budget of ceil(0.01 × input) + (out - 1) tokens, all required.
            length_factor=0.01,
            extra_tokens=load.mt_output_tokens - 1,
            generation={"min_new_tokens": load.mt_output_tokens},
            batch_window_ms=load.mt_batch_window_ms,
            **extra,
        )

    def engines(self, *, warm: bool) -> dict[str, Any]:
        from pipeline.engines.asr.nemo import NeMoASREngine
        from pipeline.engines.tts.xtts import XTTSEngine

        load = self.workload
        engines = {
            "asr": NeMoASREngine(
                model=str(self.checkpoint("asr")), device=self.device,
                batch_window_ms=load.asr_batch_window_ms, max_batch=max(8, load.speakers),
                warmup_seconds=[1.0, load.utterance_s], warmup_batches=[1, load.speakers],
            ),
            "mt": self.mt_engine(self.nllb_folder, warmup_batches=[1, load.speakers]),
            "tts": XTTSEngine(
                model=str(self.checkpoint("tts")), device=self.device,
                first_chunk_tokens=load.first_chunk_tokens, stream_chunk_size=load.chunk_tokens,
                fixed_audio_tokens=load.tts_tokens, max_batch=max(8, load.speakers),
                warmup_concurrency=load.speakers if warm else 0,
            ),
        }
        part = "production" if warm else "cold"
        for name in list(engines):
            try:
                loaded, warm_s = self._start(engines[name], warm)
            except Exception as exc:
                if name != "mt" or engines[name].backend != "ctranslate2":
                    raise
                # CTranslate2's CUDA build needs CUDA 12's cuBLAS, which a CUDA 13 torch
                # machine may lack: measure transformers instead, and say so.
                self.record(part, "mt_fallback", reason=f"{type(exc).__name__}: {str(exc)[:200]}")
                engines[name].close()
                engines[name] = self.mt_engine(
                    self.nllb_folder, backend="transformers", warmup_batches=[1, load.speakers]
                )
                loaded, warm_s = self._start(engines[name], warm)
            self.record(part, f"load_{name}", seconds=round(loaded, 1), warmup_s=round(warm_s, 1),
                        **_describe(name, engines[name]))
        return engines

    @staticmethod
    def _start(engine: Any, warm: bool) -> tuple[float, float]:
        started = time.perf_counter()
        engine.load()
        loaded = time.perf_counter() - started
        warm_s = 0.0
        if warm:
            started = time.perf_counter()
            engine.warmup()
            warm_s = time.perf_counter() - started
        return loaded, warm_s


def _describe(name: str, engine: Any) -> dict[str, Any]:
    if name == "asr":
        return {"decoder": engine.decoder_type, "cuda_graphs": engine.cuda_graphs, "device": engine.device}
    if name == "mt":
        return {"backend": engine.backend, "dtype": engine.dtype, "device": engine.device}
    return {"dtype": engine.dtype, "device": engine.device}


def cascade_once(engines: dict[str, Any], audio: Any, device: str) -> dict[str, float]:
    """One utterance, speech end → first audio, stage by stage (engine calls only)."""
    started = time.perf_counter()
    engines["asr"].transcribe(audio, 16000, "en")
    asr = time.perf_counter()
    engines["mt"].translate([SOURCE_TEXT], "en", "es")
    mt = time.perf_counter()
    stream = engines["tts"].synthesize(TARGET_TEXT, "es")
    next(stream)
    first = time.perf_counter()
    for _ in stream:
        pass
    synchronize(device)
    done = time.perf_counter()
    return {
        "asr": asr - started, "mt": mt - asr, "tts_first": first - mt,
        "e2e": first - started, "tts_total": done - mt,
    }


def simultaneous(run: Any, speakers: int) -> list[dict[str, float]]:
    """``run(index)`` in ``speakers`` threads started together; their results."""
    barrier = threading.Barrier(speakers)
    results: list[dict[str, float] | BaseException] = [{} for _ in range(speakers)]

    def work(index: int) -> None:
        try:
            barrier.wait()
            results[index] = run(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[index] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(speakers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------ production


def part_production(ctx: Context) -> None:
    import torch

    record, load, device = ctx.record, ctx.workload, ctx.device
    memory = GPUMemory(device)
    record("production", "device", name=_device_name(device), torch=torch.__version__,
           context_gib=round(memory.base, 2))
    engines = ctx.engines(warm=True)
    try:
        loaded = memory.sample()
        record("production", "memory_loaded", gib=round(loaded - memory.base, 2))
        audio = [clip(load.utterance_s, seed) for seed in range(load.utterances)]
        runs = [cascade_once(engines, a, device) for a in audio]
        for stage in ("asr", "mt", "tts_first", "e2e", "tts_total"):
            record("production", stage, **summary([r[stage] for r in runs]))
        record("production", "warm_start", first_ms=round(1000 * runs[0]["e2e"], 1),
               last_ms=round(1000 * runs[-1]["e2e"], 1), last_index=len(runs))
        endpointing = ctx.args.endpointing_ms / 1000
        record("production", "e2e_endpointing", endpointing_ms=ctx.args.endpointing_ms,
               **summary([r["e2e"] + endpointing for r in runs]))

        memory.watch()
        multi: list[dict[str, float]] = []
        spreads = []
        for round_index in range(load.rounds):
            clips = [clip(load.utterance_s, 100 + round_index * load.speakers + i) for i in range(load.speakers)]
            results = simultaneous(lambda i, clips=clips: cascade_once(engines, clips[i], device), load.speakers)
            multi += results
            firsts = [r["e2e"] for r in results]
            spreads.append(max(firsts) - min(firsts))
        memory.stop()
        record("production", "multi_e2e", speakers=load.speakers, rounds=load.rounds,
               **summary([r["e2e"] for r in multi]))
        for stage in ("asr", "mt", "tts_first"):
            record("production", f"multi_{stage}", **summary([r[stage] for r in multi]))
        record("production", "multi_spread", **summary(spreads))
        peak_torch = torch.cuda.max_memory_allocated() / 1024**3 if device.startswith("cuda") else 0.0
        record("production", "gpu_memory", loaded_gib=round(loaded - memory.base, 2),
               peak_gib=round(memory.peak - memory.base, 2), torch_peak_gib=round(peak_torch, 2))
        decoder = engines["tts"].decoder
        if decoder is not None:
            record("production", "tts_batching", max_step_batch=max(decoder.step_sizes or [0]),
                   gpt_forward_calls=decoder.gpt_forward_calls)
    finally:
        memory.stop()
        for engine in engines.values():
            engine.close()


def part_cold(ctx: Context) -> None:
    engines = ctx.engines(warm=False)
    try:
        run = cascade_once(engines, clip(ctx.workload.utterance_s, 7), ctx.device)
        ctx.record("cold", "cold_first", e2e_ms=round(1000 * run["e2e"], 1),
                   **{f"{k}_ms": round(1000 * v, 1) for k, v in run.items() if k != "e2e"})
    finally:
        for engine in engines.values():
            engine.close()


# -------------------------------------------------------------------------- baseline


def part_baseline(ctx: Context) -> None:
    """S3TVR-style: float32 everywhere, one request at a time per model."""
    import numpy as np
    import torch

    from tests.tiny_models import build_nemo_asr_model, nemo_tokenizer

    record, load, device = ctx.record, ctx.workload, ctx.device
    memory = GPUMemory(device)
    started = time.perf_counter()
    given = ctx.checkpoint("baseline_asr")
    if given is not None:
        from nemo.collections.asr.models import ASRModel

        asr = ASRModel.restore_from(str(given), map_location=torch.device(device))
    else:
        tokenizer_dir = ctx.work / "asr-tokenizer"
        if not tokenizer_dir.is_dir():
            nemo_tokenizer(tokenizer_dir, vocab_size=64 if ctx.smoke else 256)
        asr = _on_device(
            device, record, "baseline_asr",
            lambda: build_nemo_asr_model("ctc", tokenizer_dir, **({} if ctx.smoke else PARAKEET_CTC_1_1B)),
        )
    asr = asr.to(device).eval()
    from nemo.collections.asr.parts.mixins.transcription import TranscribeConfig

    asr_config = TranscribeConfig(batch_size=1, return_hypotheses=True, verbose=False)

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.nllb_folder)
    mt = AutoModelForSeq2SeqLM.from_pretrained(ctx.nllb_folder, dtype=torch.float32).to(device).eval()
    spa = tokenizer.convert_tokens_to_ids("spa_Latn")

    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    xtts_folder = ctx.checkpoint("tts")
    assert xtts_folder is not None
    config.load_json(str(xtts_folder / "config.json"))
    xtts = Xtts(config)
    xtts.load_checkpoint(config, checkpoint_dir=str(xtts_folder), eval=True)
    xtts.to(device)
    speaker = next(iter(xtts.speaker_manager.speakers.values()))
    cond = speaker["gpt_cond_latent"].to(device)
    embedding = speaker["speaker_embedding"].to(device)
    record("baseline", "load", seconds=round(time.perf_counter() - started, 1),
           gib=round(memory.sample() - memory.base, 2))
    locks = {"asr": threading.Lock(), "mt": threading.Lock(), "tts": threading.Lock()}

    def once(audio: Any) -> dict[str, float]:
        began = time.perf_counter()
        with locks["asr"], torch.inference_mode():
            signal = torch.from_numpy(audio.astype(np.float32) / 32768.0)[None].to(device)
            length = torch.tensor([signal.shape[1]], device=device)
            outputs = asr._transcribe_forward((signal, length), asr_config)
            asr._transcribe_output_processing(outputs, asr_config)
            synchronize(device)
        t_asr = time.perf_counter()
        with locks["mt"], torch.inference_mode():
            tokenizer.src_lang = "eng_Latn"
            batch = tokenizer([SOURCE_TEXT], return_tensors="pt").to(device)
            out = mt.generate(**batch, forced_bos_token_id=spa, max_length=30, min_length=30, num_beams=1)
            tokenizer.batch_decode(out, skip_special_tokens=True)
        t_mt = time.perf_counter()
        with locks["tts"], torch.inference_mode():
            result = xtts.inference(
                TARGET_TEXT, "es", cond, embedding, temperature=0.75, top_k=50, top_p=0.85,
                repetition_penalty=5.0, min_new_tokens=load.tts_tokens, max_new_tokens=load.tts_tokens,
            )
            assert len(result["wav"]) > 0
            synchronize(device)
        t_tts = time.perf_counter()
        return {"asr": t_asr - began, "mt": t_mt - t_asr, "tts": t_tts - t_mt, "e2e": t_tts - began}

    once(clip(load.utterance_s, 99))  # the baseline warms up too: a fair comparison
    runs = [once(clip(load.utterance_s, seed)) for seed in range(max(1, load.utterances // 2))]
    for stage in ("asr", "mt", "tts", "e2e"):
        record("baseline", f"base_{stage}", **summary([r[stage] for r in runs]))
    memory.watch()
    clips = [clip(load.utterance_s, 200 + i) for i in range(load.speakers)]
    multi = simultaneous(lambda i: once(clips[i]), load.speakers)
    memory.stop()
    record("baseline", "base_multi", speakers=load.speakers, **summary([r["e2e"] for r in multi]))
    record("baseline", "gpu_memory", peak_gib=round(memory.peak - memory.base, 2))


# ------------------------------------------------------------------------ processors


def part_processors(ctx: Context) -> None:
    """One utterance through the pipecat processors, for the pipeline's own overhead."""
    try:
        import asyncio

        from pipeline.cascade import Engines
        from pipeline.engines.denoise.passthrough import PassthroughDenoiseEngine
        from pipeline.engines.vad.silero import SileroVADEngine
        from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
        from pipeline.session import InterpretationParams
    except ImportError as exc:
        ctx.record("processors", "skipped", reason=f"pipecat processors not importable here ({exc})")
        return
    speech = _speech_clip()
    if speech is None:
        ctx.record("processors", "skipped", reason="no recorded speech here (apt pocketsphinx-testdata)")
        return
    import numpy as np

    from pipeline.engines.base import ASREngine, MTEngine, Transcript

    engines = ctx.engines(warm=True)

    class FixedTextASR(ASREngine):
        """The real engine's compute; a fixed transcript (random weights say nothing)."""

        name = "bench-asr"
        languages = frozenset({"en"})

        def transcribe(self, pcm: Any, sample_rate: int, language: str) -> Transcript:
            engines["asr"].transcribe(pcm, sample_rate, language)
            return Transcript(text=SOURCE_TEXT, language="en")

    class FixedTextMT(MTEngine):
        name = "bench-mt"

        def supports(self, source: str, target: str) -> bool:
            return True

        def pairs(self) -> list[tuple[str, str]]:
            return [("en", "es")]

        def translate(self, texts: list[str], source: str, target: str) -> list[str]:
            engines["mt"].translate(texts, source, target)
            return [TARGET_TEXT for _ in texts]

    vad = SileroVADEngine()
    vad.load()
    cascade = Engines(
        asr=FixedTextASR(), mt=FixedTextMT(), tts=engines["tts"], vad=vad,
        denoise=PassthroughDenoiseEngine(),
    )
    silence = np.zeros(16000, dtype=np.int16)
    track = SpeakerTrack("speaker1", np.concatenate([silence, speech, silence, silence]), "en")
    try:
        # Whole utterances (the fixed-text ASR does not stream), no voice capture.
        params = InterpretationParams(voice_capture=False, streaming=None)
        result = asyncio.run(run_cascade_on_tracks(
            cascade, [track], ["es"], params=params, realtime=True, progress=False,
        ))
    finally:
        for engine in engines.values():
            engine.close()
    stats = result.latency().as_dict()
    for key in ("asr", "mt", "tts_first", "end_to_first_audio", "overhead"):
        if key in stats:
            row = stats[key]
            ctx.record("processors", key, n=row["n"], p50_ms=round(1000 * row["p50"], 1),
                       p95_ms=round(1000 * row["p95"], 1))


def _speech_clip() -> Any:
    from pipeline.audio import load_audio

    folder = Path("/usr/share/pocketsphinx/test/data/librivox")
    clips = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    return load_audio(clips[0])[: 16000 * 4] if clips else None


# ----------------------------------------------------------------------------- table


def table(rows: list[dict[str, Any]], ctx_args: argparse.Namespace) -> str:
    """The closing table, from whatever parts produced results."""
    by = {(row["part"], row["key"]): row for row in rows}
    smoke = ctx_args.smoke
    lines = []
    device = by.get(("production", "device"), {})
    lines.append(f"== polyvox GPU benchmark ({'smoke, tiny shapes on CPU' if smoke else 'production shapes'}; "
                 f"device {device.get('name', ctx_args.device)}, torch {device.get('torch', '?')})")

    def fmt(row: dict[str, Any] | None, label: str, extra: str = "") -> str:
        if row is None:
            return f"{label:<52} {'—':>9} {'—':>9} {'—':>9}  (not measured)"
        return (f"{label:<52} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['max_ms']:>9.1f}"
                + (f"  {extra}" if extra else ""))

    loads = {name: by.get(("production", f"load_{name}"), {}) for name in ("asr", "mt", "tts")}
    load = SMOKE_WORKLOAD if smoke else GPU_WORKLOAD
    measured = by.get(("production", "e2e"), {}).get("n", load.utterances)
    lines.append(f"{'one speaker (' + str(measured) + ' utterances)':<52} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    asr_label = f"{ROWS['asr']} ({'tiny TDT' if smoke else 'Parakeet-TDT-0.6B shape'}, {load.utterance_s:g} s)"
    lines.append(fmt(by.get(("production", "asr")), asr_label,
                     f"cuda_graphs={loads['asr'].get('cuda_graphs')}"))
    mt_label = f"{ROWS['mt']} ({loads['mt'].get('backend', '?')} {loads['mt'].get('dtype', '?')}, →{load.mt_output_tokens} tok)"
    lines.append(fmt(by.get(("production", "mt")), mt_label))
    tts_label = f"{ROWS['tts_first']} (XTTS {loads['tts'].get('dtype', '?')}, {load.first_chunk_tokens} tok)"
    lines.append(fmt(by.get(("production", "tts_first")), tts_label))
    lines.append(fmt(by.get(("production", "e2e")), ROWS["e2e"]))
    endpointing = by.get(("production", "e2e_endpointing"))
    lines.append(fmt(endpointing, ROWS["e2e_endpointing"],
                     f"hang-over {endpointing['endpointing_ms']} ms" if endpointing else ""))
    overhead = by.get(("processors", "overhead"))
    skipped = by.get(("processors", "skipped"))
    if overhead:
        lines.append(f"{ROWS['overhead']:<52} {overhead['p50_ms']:>9.1f} {overhead['p95_ms']:>9.1f} {'':>9}  "
                     "(pipecat processors, 1 utterance)")
    else:
        reason = skipped["reason"] if skipped else "not measured"
        lines.append(f"{ROWS['overhead']:<52} {'n/a':>9} {'n/a':>9} {'':>9}  ({reason})")
    warm = by.get(("production", "warm_start"))
    cold = by.get(("cold", "cold_first"))
    lines.append("warm start")
    lines.append(f"  {ROWS['warm_first']:<50} {warm['first_ms'] if warm else '—':>9}" )
    lines.append(f"  {ROWS['warm_last'] + (' (#' + str(warm['last_index']) + ')' if warm else ''):<50} "
                 f"{warm['last_ms'] if warm else '—':>9}")
    lines.append(f"  {ROWS['cold_first']:<50} {cold['e2e_ms'] if cold else '—':>9}")
    multi = by.get(("production", "multi_e2e"))
    speakers = multi["speakers"] if multi else load.speakers
    lines.append(f"{str(speakers) + ' simultaneous speakers':<52} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    lines.append(fmt(multi, "  " + ROWS["multi_e2e"]))
    for stage in ("asr", "mt", "tts_first"):
        lines.append(fmt(by.get(("production", f"multi_{stage}")), f"    {ROWS[stage]}"))
    lines.append(fmt(by.get(("production", "multi_spread")), "  " + ROWS["multi_spread"]))
    memory = by.get(("production", "gpu_memory"))
    if memory and not str(ctx_args.device).startswith("cuda"):
        memory_text = "n/a on the CPU"
    elif memory:
        memory_text = (f"all models {memory['loaded_gib']} GiB, peak {memory['peak_gib']} GiB "
                       f"(torch alone {memory['torch_peak_gib']} GiB)")
    else:
        memory_text = "—"
    lines.append(f"  {ROWS['gpu_memory']:<50} {memory_text}")
    lines.append("S3TVR-style baseline (float32, Parakeet-CTC-1.1B shape, NLLB generate(max_length=30), "
                 "XTTS inference, one request at a time)")
    for key in ("base_asr", "base_mt", "base_tts", "base_e2e"):
        lines.append(fmt(by.get(("baseline", key)), "  " + ROWS[key]))
    lines.append(fmt(by.get(("baseline", "base_multi")), f"  {ROWS['base_multi']} ({speakers} speakers)"))
    single, base_single = by.get(("production", "e2e")), by.get(("baseline", "base_e2e"))
    base_multi = by.get(("baseline", "base_multi"))
    ratio_single = base_single["p50_ms"] / single["p50_ms"] if single and base_single else None
    ratio_multi = base_multi["p95_ms"] / multi["p95_ms"] if multi and base_multi else None
    lines.append(f"{ROWS['ratio_single']:<52} {f'{ratio_single:.2f}x' if ratio_single else '—':>9}")
    lines.append(f"{ROWS['ratio_multi'].replace('N', str(speakers)):<52} "
                 f"{f'{ratio_multi:.2f}x' if ratio_multi else '—':>9}")
    errors = [row for row in rows if row["key"] == "error"]
    for row in errors:
        lines.append(f"error in {row['part']}: {row['message']}")
    if not smoke:
        lines.append("targets (H100/H200): ASR ≤ 30 ms, MT ≤ 120 ms, TTS first chunk ≤ 150 ms, speech end → "
                     "first audio p50 ≤ 0.6 s incl. endpointing; 8 speakers p95 ≤ 1.2 s; ≤ 8 GB; ≥ 4× baseline")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


PARTS = {
    "build": part_build,
    "production": part_production,
    "baseline": part_baseline,
    "cold": part_cold,
    "processors": part_processors,
}


def _replace(workload: Workload, **changes: Any) -> Workload:
    from dataclasses import replace

    return replace(workload, **changes)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run_part(name: str, args: argparse.Namespace, record: Recorder) -> None:
    """Run one part here; failures become an ``error`` row, not an exception."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    import torch

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(args, record)
    started = time.perf_counter()
    try:
        PARTS[name](ctx)
    except BaseException as exc:  # noqa: BLE001 - recorded, the next part still runs
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        record(name, "error", message=message[:300])
        traceback.print_exc()
    record(name, "done", seconds=round(time.perf_counter() - started, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints on the CPU, in-process, in seconds")
    parser.add_argument("--device", help="cuda (default; cpu with --smoke)")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", help="results folder (results.jsonl, table.txt); default: the work folder")
    parser.add_argument("--work", help="checkpoints folder (default /dev/shm/polyvox-bench[-smoke])")
    parser.add_argument("--speakers", type=int, help="simultaneous speakers (default 8; 3 with --smoke)")
    parser.add_argument("--utterances", type=int, help="one-speaker utterances (default 10; 3 with --smoke)")
    parser.add_argument("--endpointing-ms", type=int, default=None,
                        help="VAD hang-over added to speech end → first audio (default: config.yaml vad.min_silence_ms)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="skip parts that would start after this")
    parser.add_argument("--isolate", action="store_true", help="with --smoke: still one process per part")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--checkpoints", help="ready checkpoints instead of building: asr=X.nemo,mt=DIR,tts=DIR[,baseline_asr=Y.nemo]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))
    args.work = args.work or str(shm / ("polyvox-bench-smoke" if args.smoke else "polyvox-bench"))
    if args.endpointing_ms is None:
        args.endpointing_ms = _configured_hangover()
    out = Path(args.out or args.work)
    out.mkdir(parents=True, exist_ok=True)
    record = Recorder(out / "results.jsonl")

    if args.child:
        run_part(args.child, args, record)
        return 0

    (out / "results.jsonl").write_text("")
    parts = args.parts.split(",") if args.parts else list(PARTS)
    if "build" not in parts and not (Path(args.work) / "built.json").is_file():
        parts.insert(0, "build")
    inline = args.smoke and not args.isolate
    started = time.monotonic()
    for name in parts:
        if name not in PARTS:
            raise SystemExit(f"unknown part {name!r} (parts: {', '.join(PARTS)})")
        left = args.budget_s - (time.monotonic() - started)
        if left < 20 and name != "build":
            record(name, "error", message=f"skipped: {args.budget_s:.0f} s budget spent")
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        if inline:
            run_part(name, args, record)
            continue
        timeout = min(TIMEOUTS[name], max(20.0, left))
        command = [sys.executable, __file__, "--child", name, *_passthrough(args, out)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
            [p for p in (os.environ.get("POLYVOX_EXTRA_PATH", ""), str(ROOT)) if p]
        ))
        try:
            done = subprocess.run(command, env=env, timeout=timeout)
            if done.returncode != 0:
                record(name, "error", message=f"exited with status {done.returncode}")
        except subprocess.TimeoutExpired:
            record(name, "error", message=f"timed out after {timeout:.0f} s")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    text = table(rows, args)
    (out / "table.txt").write_text(text + "\n")
    print(text, flush=True)
    print(f"(total {time.monotonic() - started:.0f} s; results in {out})", flush=True)
    return 0


def _passthrough(args: argparse.Namespace, out: Path) -> list[str]:
    flags = ["--device", args.device, "--work", args.work, "--out", str(out),
             "--endpointing-ms", str(args.endpointing_ms)]
    if args.smoke:
        flags.append("--smoke")
    for name in ("speakers", "utterances", "threads", "checkpoints"):
        value = getattr(args, name)
        if value:
            flags += [f"--{name}", str(value)]
    return flags


def _configured_hangover() -> int:
    """``vad.min_silence_ms`` from config.yaml (500 when it cannot be read)."""
    try:
        import yaml

        return int(yaml.safe_load((ROOT / "config.yaml").read_text())["vad"]["min_silence_ms"])
    except Exception:  # noqa: BLE001 - pyyaml may be missing on the GPU machine
        return 500


if __name__ == "__main__":
    sys.exit(main())
