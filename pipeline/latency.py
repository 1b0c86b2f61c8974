"""Latency statistics over utterances: per-stage p50/p95 and the pipeline's own overhead."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pipeline.frames import Utterance

__all__ = ["LatencyStats", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) of ``values``, or ``None`` when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass
class LatencyStats:
    """Samples per stage (seconds), gathered from utterances' marks and compute times.

    ``overhead`` is, per utterance, speech end → first TTS audio minus the engine
    compute spent on it before that audio existed (ASR + MT + TTS up to its first
    chunk): what the pipeline itself costs in queues, frames and thread hops.
    """

    samples: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_utterances(cls, utterances: Iterable[Utterance]) -> LatencyStats:
        stats = cls()
        for u in utterances:
            for name, value in u.latencies().items():
                stats.add(name, value)
            for stage, value in u.compute.items():
                stats.add(f"compute_{stage}", value)
            lat = u.latencies()
            if "end_to_first_audio" in lat:
                engine = sum(u.compute.get(k, 0.0) for k in ("asr", "mt", "tts_first"))
                stats.add("overhead", lat["end_to_first_audio"] - engine)
        return stats

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def as_dict(self) -> dict[str, dict[str, float | int | None]]:
        """``{stage: {"n", "p50", "p95", "mean"}}`` in seconds, rounded to 0.1 ms."""
        out: dict[str, dict[str, float | int | None]] = {}
        for name, values in sorted(self.samples.items()):
            out[name] = {
                "n": len(values),
                "p50": _round(percentile(values, 50)),
                "p95": _round(percentile(values, 95)),
                "mean": _round(float(np.mean(values)) if values else None),
            }
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
