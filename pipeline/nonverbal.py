"""Non-verbal sounds: what counts as one, and where the candidates come from.

A cascade through text drops laughter, crying and sighs: the recogniser finds no words
in them. polyvox looks for them in two places, and only there (the classifier is the
expensive part, so it runs on candidates alone, batched):

* **utterances without words**: speech the VAD cut but the recogniser found nothing in
  (laughter often sounds like speech to a VAD);
* **loud stretches the VAD passes over**: :class:`EnergyGate` runs beside the VAD on
  every participant's audio and reports stretches that are loud (``gate_dbfs``) while
  the VAD's speech probability stays low, e.g. a sob or a long sigh.

An audio-event classifier (``pipeline.engines.events``) scores each candidate; a kind
(:data:`KINDS`: AudioSet labels per kind) scoring at least ``threshold`` becomes an
event: the sound itself is placed into the interpretation stream at its position and
captions mark it (``[laughs]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pipeline.engines.base import AudioEvent, VADStream

__all__ = ["KINDS", "EnergyGate", "LoudStretch", "NonverbalParams", "caption_text", "event_kind"]

#: Event kinds and the AudioSet labels that mean them.
KINDS: dict[str, frozenset[str]] = {
    "laughs": frozenset({"Laughter", "Baby laughter", "Giggle", "Snicker", "Belly laugh", "Chuckle, chortle"}),
    "cries": frozenset({"Crying, sobbing", "Baby cry, infant cry", "Whimper", "Wail, moan"}),
    "sighs": frozenset({"Sigh"}),
    "gasps": frozenset({"Gasp"}),
    "screams": frozenset({"Screaming"}),
    "coughs": frozenset({"Cough"}),
}


@dataclass
class NonverbalParams:
    """How non-verbal sounds are found (``interpretation.nonverbal``).

    Attributes:
        enabled: Rooms look for them by default (each room can turn it off).
        kinds: Which kinds of :data:`KINDS` are carried through.
        threshold: Least classifier score for a kind to count.
        gate_dbfs: A window at least this loud (RMS) is a candidate when the VAD calls it
            no speech.
        min_ms: Shortest loud stretch worth classifying.
        gap_ms: Quieter windows a stretch may contain without ending.
        max_s: Longer stretches are cut into pieces of this length.
        max_wait_s: Longest an event waits for the interpretations of what was said
            before it (so it is heard after them).
    """

    enabled: bool = True
    kinds: list[str] = field(default_factory=lambda: ["laughs", "cries", "sighs"])
    threshold: float = 0.3
    gate_dbfs: float = -40.0
    min_ms: int = 300
    gap_ms: int = 200
    max_s: float = 8.0
    max_wait_s: float = 15.0

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown non-verbal kind(s) {', '.join(unknown)} (known: {', '.join(KINDS)})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


def event_kind(events: Iterable[AudioEvent], kinds: Iterable[str], threshold: float) -> tuple[str, float] | None:
    """The kind (of ``kinds``) the classifier heard best, with its score, if it reached ``threshold``."""
    scores: dict[str, float] = {}
    for event in events:
        for kind in kinds:
            if event.label in KINDS[kind]:
                scores[kind] = max(scores.get(kind, 0.0), event.score)
    if not scores:
        return None
    kind = max(scores, key=scores.__getitem__)
    return (kind, scores[kind]) if scores[kind] >= threshold else None


def caption_text(kind: str) -> str:
    """How captions mark an event: ``[laughs]``."""
    return f"[{kind}]"


@dataclass
class LoudStretch:
    """A loud stretch the VAD did not call speech: seconds on the participant's stream
    clock (as the VAD's utterances), and its audio."""

    start: float
    end: float
    audio: np.ndarray


class EnergyGate:
    """Finds loud non-speech stretches in one participant's audio (beside the VAD).

    Audio is scored in the VAD's windows. A window is a candidate when it is at least
    ``gate_dbfs`` loud and the VAD's speech probability for it is below
    ``speech_threshold``; the VAD model is asked only for loud windows, so quiet lines
    cost nothing. Candidates separated by at most ``gap_ms`` form one stretch.

    Args:
        stream: This participant's own VAD stream.
        params: Levels and durations.
        speech_threshold: The VAD probability from which a window is speech.
        sample_rate: Of the pushed audio (the VAD's).
    """

    def __init__(self, stream: VADStream, params: NonverbalParams, *, speech_threshold: float = 0.5,
                 sample_rate: int = 16000) -> None:
        self._stream = stream
        self._params = params
        self._speech = speech_threshold
        self._rate = sample_rate
        self._window = int(stream.window)
        level = 32768.0 * 10 ** (params.gate_dbfs / 20)
        self._loud = level * level  # mean square
        self._pending = np.zeros(0, dtype=np.int16)
        self._consumed = 0
        self._start: int | None = None
        self._last: int = 0  # end of the last candidate window
        self._chunks: list[np.ndarray] = []
        self._gap = round(params.gap_ms * sample_rate / 1000)
        self._min = round(params.min_ms * sample_rate / 1000)
        self._max = round(params.max_s * sample_rate)

    @property
    def in_stretch(self) -> bool:
        """Whether a loud stretch is under way."""
        return self._start is not None

    def push(self, pcm: np.ndarray) -> list[LoudStretch]:
        """Add audio (mono int16, any length); returns the stretches it completed."""
        data = np.concatenate((self._pending, pcm)) if self._pending.size else np.asarray(pcm, dtype=np.int16)
        whole = data.size - data.size % self._window
        out: list[LoudStretch] = []
        for offset in range(0, whole, self._window):
            stretch = self._window_done(data[offset : offset + self._window])
            if stretch is not None:
                out.append(stretch)
        self._pending = data[whole:].copy()
        return out

    def flush(self) -> list[LoudStretch]:
        """End of the participant's audio: the stretch under way, if long enough."""
        stretch = self._close()
        return [stretch] if stretch is not None else []

    def _window_done(self, window: np.ndarray) -> LoudStretch | None:
        begin = self._consumed
        self._consumed += window.size
        floats = window.astype(np.float32)
        loud = float(np.dot(floats, floats)) / window.size >= self._loud
        candidate = loud and self._stream.speech_probability(window) < self._speech
        if self._start is None:
            if not candidate:
                return None
            self._start = begin
            self._chunks = []
        self._chunks.append(window.copy())
        if candidate:
            self._last = self._consumed
        if self._consumed - self._last > self._gap:
            return self._close()
        if self._consumed - self._start >= self._max:
            return self._close()
        return None

    def _close(self) -> LoudStretch | None:
        start, self._start = self._start, None
        chunks, self._chunks = self._chunks, []
        if start is None or self._last - start < self._min:
            return None
        audio = np.concatenate(chunks)[: self._last - start]
        return LoudStretch(start / self._rate, self._last / self._rate, audio)
