"""polyvox's own frames and the per-utterance record they carry.

pipecat's frames are reused where they fit (``UserAudioRawFrame`` in,
``TranscriptionFrame``, ``TranslationFrame``, ``TTSAudioRawFrame``); the subclasses
here add the :class:`Utterance` so that every stage can stamp its timing on the
same record and the output side knows which utterance a chunk belongs to.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    DataFrame,
    TranscriptionFrame,
    TranslationFrame,
    TTSAudioRawFrame,
)

__all__ = [
    "STAGE_MARKS",
    "InterpretationAudioFrame",
    "InterpretationDoneFrame",
    "Utterance",
    "UtteranceAudioFrame",
    "UtteranceDroppedFrame",
    "UtteranceTranscriptionFrame",
    "UtteranceTranslationFrame",
]

_ids = itertools.count(1)

#: The wall-clock marks an utterance collects, in pipeline order.
STAGE_MARKS = ("speech_end", "asr_done", "mt_done", "first_tts_audio", "tts_done", "first_audio_out")


@dataclass
class Utterance:
    """One stretch of one participant's speech, from speech start to hang-over silence.

    Attributes:
        user_id: The participant who spoke.
        language: ISO 639-1 code of the spoken language.
        start: Start of speech in the participant's audio, seconds from their first sample.
        end: End of speech (before the hang-over silence), same clock.
        id: Process-unique, increasing in order of creation.
        split: True when the utterance was cut at the maximum length, not at a pause.
        marks: Wall-clock times (``time.monotonic()``) each stage finished, by name:
            see ``STAGE_MARKS``.
        compute: Seconds of engine compute per stage (``asr``, ``mt``, ``tts``), so the
            pipeline's own overhead can be told apart from model time.
        transcript: Filled in by the ASR stage.
        translations: Filled in by the MT stage, by target language.
    """

    user_id: str
    language: str
    start: float
    end: float
    id: int = field(default_factory=lambda: next(_ids))
    split: bool = False
    marks: dict[str, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    translations: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of speech."""
        return self.end - self.start

    def mark(self, name: str, when: float | None = None) -> None:
        """Record that stage ``name`` finished now (the first time only)."""
        self.marks.setdefault(name, time.monotonic() if when is None else when)

    def add_compute(self, stage: str, seconds: float) -> None:
        """Add engine compute time to ``stage``."""
        self.compute[stage] = self.compute.get(stage, 0.0) + seconds

    def latencies(self) -> dict[str, float]:
        """Per-stage latency in seconds, each from the previous mark that exists.

        Keys: ``asr`` (speech end → transcript), ``mt`` (→ translations), ``tts_first``
        (→ first synthesized audio), ``end_to_first_audio`` (speech end → first audio,
        the figure a listener feels).
        """
        m = self.marks
        out: dict[str, float] = {}
        pairs = (
            ("asr", "speech_end", "asr_done"),
            ("mt", "asr_done", "mt_done"),
            ("tts_first", "mt_done", "first_tts_audio"),
            ("end_to_first_audio", "speech_end", "first_tts_audio"),
        )
        for name, a, b in pairs:
            if a in m and b in m:
                out[name] = m[b] - m[a]
        return out

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (captions, logs, metrics)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "language": self.language,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "split": self.split,
            "transcript": self.transcript,
            "translations": dict(self.translations),
            "latency": {k: round(v, 4) for k, v in self.latencies().items()},
            "compute": {k: round(v, 4) for k, v in self.compute.items()},
        }


@dataclass
class UtteranceAudioFrame(DataFrame):
    """The speech of one utterance, 16 kHz mono int16, cut by the VAD stage."""

    utterance: Utterance
    audio: bytes
    sample_rate: int

    @property
    def user_id(self) -> str:
        return self.utterance.user_id

    @property
    def language(self) -> str:
        return self.utterance.language


@dataclass
class UtteranceTranscriptionFrame(TranscriptionFrame):
    """A final transcript, with the utterance it belongs to."""

    utterance: Utterance | None = None


@dataclass
class UtteranceTranslationFrame(TranslationFrame):
    """One translation of an utterance's transcript into one listener language."""

    utterance: Utterance | None = None
    source_text: str = ""
    target_language: str = ""


@dataclass
class InterpretationAudioFrame(TTSAudioRawFrame):
    """A chunk of synthesized interpretation of one utterance into one language."""

    utterance: Utterance | None = None
    target_language: str = ""


@dataclass
class InterpretationDoneFrame(DataFrame):
    """All audio of one utterance's interpretation into ``target_language`` has been sent."""

    utterance: Utterance
    target_language: str


@dataclass
class UtteranceDroppedFrame(DataFrame):
    """A stage gave up on an utterance (bad audio, engine error); later stages skip it.

    Sent downstream so ordered consumers (captions, the Discord queue) do not wait for
    an utterance that will never arrive.
    """

    utterance: Utterance
    stage: str
    reason: str
