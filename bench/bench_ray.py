"""Engines on Ray Serve vs in process: per-call overhead and throughput.

Starts a local Ray instance, deploys the offline engines (pocketsphinx, Apertium,
espeak) as the engines app (``bot.engines_app.deploy_engines``, what ``polyvox engines
serve`` does) and measures, against the same engines loaded in this process:

* **per-call overhead**: median latency of each remote call minus the same local call
  (a small round trip, MT of a sentence, ASR of a short clip, TTS to the first chunk
  and to the last);
* **throughput**: utterances per second (ASR → MT → TTS, every chunk) with ``--clients``
  concurrent callers (rooms), locally and with 1 and 2 replicas per stage.

    .venv/bin/python bench/bench_ray.py [--calls 10] [--utterances 8] [--clients 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import load_engines  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.engines_app import deploy_engines, undeploy_engines  # noqa: E402
from pipeline.audio import load_audio  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
APP = "polyvox-bench"
SENTENCE = "He was not an ill disposed young man, unless to be rather cold hearted."
SPANISH = "No era un joven mal dispuesto. Hace un día muy bonito."


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def paired_ms(local: Callable[[], Any] | None, remote: Callable[[], Any], calls: int) -> tuple[float, float, float]:
    """Medians of the local and the remote call, and of their difference, measured in
    alternation so that a busy machine's drift hits both alike."""
    for fn in (local, remote):
        if fn is not None:
            fn()  # warm: the first call sets up routes and caches
    locals_, remotes, differences = [], [], []
    for _ in range(calls):
        here = timed(local) if local is not None else 0.0
        there = timed(remote)
        locals_.append(here)
        remotes.append(there)
        differences.append(there - here)
    return statistics.median(locals_), statistics.median(remotes), statistics.median(differences)


def first_chunk(engine: Any) -> Callable[[], Any]:
    def run() -> Any:
        chunks = engine.synthesize(SPANISH, "es")
        try:
            return next(iter(chunks))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return run


def interpret(engines: Any, pcm: np.ndarray) -> int:
    """One utterance through ASR → MT → TTS; the samples spoken."""
    text = engines.asr.transcribe(pcm, 16000, "en").text or "nothing"
    (translation,) = engines.mt.translate([text], "en", "es")
    return sum(len(chunk) for chunk in engines.tts.synthesize(translation, "es"))


def throughput(engines: Any, clips: list[np.ndarray], utterances: int, clients: int) -> float:
    work = [clips[i % len(clips)] for i in range(utterances)]
    interpret(engines, work[0])  # warm
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        spoken = list(pool.map(lambda pcm: interpret(engines, pcm), work))
    elapsed = time.perf_counter() - started
    assert all(spoken), "an utterance produced no audio"
    return utterances / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="calls per latency measurement")
    parser.add_argument("--utterances", type=int, default=8, help="utterances per throughput run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent callers (rooms)")
    parser.add_argument("--cpus", type=float, default=None, help="logical CPUs of the Ray instance (default: this machine's)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    import ray
    from ray import serve

    clips = [load_audio(p) for p in sorted(LIBRIVOX.glob("*.wav"))]
    short = clips[1][:16000]  # one second: the hop costs the same, the decode less
    local_settings = load_settings(profile="offline", overrides=["denoise.engine=none"])
    local = load_engines(local_settings)

    cpus = args.cpus or float(os.cpu_count() or 2)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    stage_cpus = [f"engines.{k}.num_cpus={cpus / 6:.3f}" for k in ("asr", "mt", "tts")]

    def remote_settings(replicas: int):  # type: ignore[no-untyped-def]
        return load_settings(
            profile="offline",
            overrides=[
                "denoise.engine=none", "engines.backend=ray", f"engines.app_name={APP}", *stage_cpus,
                *(f"engines.{k}.num_replicas={replicas}" for k in ("asr", "mt", "tts")),
            ],
        )

    figures: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs", "clients": args.clients}
    try:
        started = time.perf_counter()
        deploy_engines(remote_settings(1))
        figures["deploy_s"] = round(time.perf_counter() - started, 1)
        remote = load_engines(remote_settings(1))
        mt_handle = serve.get_deployment_handle("mt", app_name=APP)

        rows = [
            ("round trip (empty call)", lambda e: None, lambda e: mt_handle.stats.remote().result()),
            ("MT, one sentence", lambda e: e.mt.translate([SENTENCE], "en", "es"), None),
            (f"ASR, {len(short) / 16000:.1f} s clip", lambda e: e.asr.transcribe(short, 16000, "en"), None),
            ("TTS, first chunk", lambda e: first_chunk(e.tts)(), None),
            ("TTS, whole utterance", lambda e: sum(len(c) for c in e.tts.synthesize(SPANISH, "es")), None),
        ]
        latency = []
        for name, call, remote_only in rows:
            local_ms, remote_ms, overhead_ms = paired_ms(
                (lambda c=call: c(local)) if remote_only is None else None,
                lambda f=remote_only or call: f(remote),
                args.calls,
            )
            latency.append({"call": name, "local_ms": round(local_ms, 1), "remote_ms": round(remote_ms, 1),
                            "overhead_ms": round(overhead_ms, 1)})
        figures["latency"] = latency

        rates = {"local": throughput(local, clips, args.utterances, args.clients)}
        rates["ray, 1 replica per stage"] = throughput(remote, clips, args.utterances, args.clients)
        deploy_engines(remote_settings(2))
        rates["ray, 2 replicas per stage"] = throughput(remote, clips, args.utterances, args.clients)
        figures["throughput_utt_per_s"] = {k: round(v, 2) for k, v in rates.items()}
        remote.close()
        undeploy_engines(remote_settings(1))
    finally:
        local.close()
        serve.shutdown()
        ray.shutdown()

    print(f"\nper-call latency, median of {args.calls} alternating calls (ms) on {figures['machine']}")
    print(f"{'call':<28} {'local':>8} {'Ray Serve':>10} {'overhead':>9}")
    for row in figures["latency"]:
        local_text = f"{row['local_ms']:8.1f}" if row["local_ms"] else f"{'-':>8}"
        print(f"{row['call']:<28} {local_text} {row['remote_ms']:10.1f} {row['overhead_ms']:9.1f}")
    print(f"\nthroughput, {args.utterances} utterances (ASR → MT → TTS), {args.clients} concurrent callers")
    for name, rate in figures["throughput_utt_per_s"].items():
        print(f"{name:<28} {rate:6.2f} utterances/s")
    print(f"(deploying the app took {figures['deploy_s']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
