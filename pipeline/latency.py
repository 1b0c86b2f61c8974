"""Latency statistics over utterances: per-stage p50/p95 and the pipeline's own overhead."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.frames import Utterance

__all__ = ["LatencyStats", "SessionStats", "percentile"]


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
            marks = u.marks
            if "speech_end" in marks and "first_tts_audio" in marks:
                # Until the audio existed (a speculative one may then wait for the hang-over).
                engine = sum(u.compute.get(k, 0.0) for k in ("asr", "mt", "tts_first"))
                stats.add("overhead", marks["first_tts_audio"] - marks["speech_end"] - engine)
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


@dataclass
class SessionStats:
    """Counters of live interpretation in one session (streaming recognition).

    Attributes:
        speculations: Interpretations prepared at a pause, before the hang-over passed.
        speculations_committed: Of those, confirmed by the hang-over and released.
        speculations_wasted: Thrown away because the speaker went on.
        clause_commits: Segments committed while their speaker kept talking.
        partial_captions: Partial captions sent.
        partials_skipped: Partial hypotheses skipped because recognition ran behind real time.
        partial_delays: Seconds from a word being spoken to its first partial caption.
    """

    speculations: int = 0
    speculations_committed: int = 0
    speculations_wasted: int = 0
    clause_commits: int = 0
    partial_captions: int = 0
    partials_skipped: int = 0
    partial_delays: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    #: Also told each caption delay (e.g. a metrics histogram).
    on_partial_delay: Callable[[float], None] | None = field(default=None, repr=False, compare=False)

    #: The counters, by Prometheus-style name.
    COUNTERS = (
        "speculations", "speculations_committed", "speculations_wasted", "clause_commits", "partial_captions",
        "partials_skipped",
    )

    def caption_delay(self, seconds: float) -> None:
        """A word was shown ``seconds`` after it was spoken."""
        self.partial_delays.append(seconds)
        if self.on_partial_delay is not None:
            self.on_partial_delay(seconds)

    def absorb(self, other: SessionStats) -> None:
        """Add ``other``'s counters to these (a closed session's, into a server total)."""
        for name in self.COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters, with the caption delay's p50/p95."""
        return {
            "speculations": self.speculations,
            "speculations_committed": self.speculations_committed,
            "speculations_wasted": self.speculations_wasted,
            "clause_commits": self.clause_commits,
            "partial_captions": self.partial_captions,
            "partials_skipped": self.partials_skipped,
            "partial_caption_delay": {
                "n": len(self.partial_delays),
                "p50": _round(percentile(list(self.partial_delays), 50)),
                "p95": _round(percentile(list(self.partial_delays), 95)),
            },
        }
