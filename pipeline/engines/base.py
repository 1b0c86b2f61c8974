"""The engine interfaces.

Engines are plain classes that know nothing about frames. Their methods are
synchronous and may block for as long as the model needs: processors call them
off the event loop (``asyncio.to_thread``). An engine must be safe to call from
several threads at once (one engine instance serves every room and participant);
engines whose model is not thread-safe keep a pool or a lock inside.

Audio crossing these interfaces is always 16-bit signed little-endian PCM,
mono, as a 1-D ``numpy.int16`` array, with its sample rate given alongside.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "ASREngine",
    "DenoiseEngine",
    "Engine",
    "MTEngine",
    "TTSEngine",
    "Transcript",
    "VADEngine",
    "VADStream",
]


class Engine(abc.ABC):  # noqa: B024 - every hook is optional; subclasses are abstract
    """What every engine has: a name, a load step and a warm-up step."""

    #: The name this engine is chosen by in ``config.yaml`` (``asr.engine: pocketsphinx``).
    name: ClassVar[str] = ""

    def load(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Load the model (blocking). Called once per process, before ``warmup``."""

    def warmup(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Run one small request so the first user does not pay for lazy initialisation."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release processes, threads and memory held by the engine."""


@dataclass
class Transcript:
    """What an ASR engine heard in one utterance.

    Attributes:
        text: The words, as the engine produced them.
        language: ISO 639-1 code of the language recognised.
        punctuated: Whether ``text`` already has sentence casing and punctuation.
        confidence: Engine-specific confidence in [0, 1], where it has one.
        extra: Engine-specific details (word timings, n-best, ...).
    """

    text: str
    language: str
    punctuated: bool = False
    confidence: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ASREngine(Engine):
    """Speech to text."""

    #: Languages this engine can transcribe (ISO 639-1); may depend on the loaded model.
    languages: frozenset[str] = frozenset()
    #: The sample rate the model wants; callers resample before calling.
    sample_rate: ClassVar[int] = 16000

    @abc.abstractmethod
    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe one utterance.

        Args:
            pcm: Mono int16 samples.
            sample_rate: Sample rate of ``pcm``; must equal ``self.sample_rate``.
            language: ISO 639-1 code of the spoken language.

        Raises:
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: the model failed on this input.
        """

    def transcribe_batch(
        self, items: list[tuple[np.ndarray, int, str]]
    ) -> list[Transcript]:
        """Transcribe several utterances; engines that batch on the device override this."""
        return [self.transcribe(pcm, sr, lang) for pcm, sr, lang in items]

    #: Whether :meth:`detect_language` works: an optional capability (Whisper has it).
    detects_language: bool = False

    def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        """Which language an utterance is spoken in (engines with ``detects_language``).

        Returns:
            ``(ISO 639-1 code, probability)`` for the languages the model tells apart,
            most probable first.

        Raises:
            NotImplementedError: this engine cannot identify languages.
            EngineError: the model failed on this input.
        """
        raise NotImplementedError(f"asr engine '{self.name}' cannot identify spoken languages")


class MTEngine(Engine):
    """Text to text translation."""

    @abc.abstractmethod
    def supports(self, source: str, target: str) -> bool:
        """Whether ``source`` → ``target`` (ISO 639-1 codes) can be translated."""

    @abc.abstractmethod
    def pairs(self) -> list[tuple[str, str]]:
        """The supported (source, target) pairs, for error messages and help."""

    @abc.abstractmethod
    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text; the result has one entry per input, in order.

        Raises:
            UnsupportedLanguageError: the pair is not supported.
            EngineError: the model failed on this input.
        """


class TTSEngine(Engine):
    """Text to speech, streamed in chunks."""

    #: Languages this engine can speak (ISO 639-1); may depend on the loaded model.
    languages: frozenset[str] = frozenset()
    #: Whether ``synthesize`` honours a cloned ``voice``.
    clones_voices: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate of the chunks ``synthesize`` yields."""

    @abc.abstractmethod
    def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
        """Speak ``text``, yielding mono int16 chunks as soon as each is ready.

        The iterator is lazy: callers consume it inside a worker thread.

        Raises:
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: the model failed on this input.
        """


class VADStream(abc.ABC):
    """Voice activity state for one participant's audio."""

    #: Samples per call to ``speech_probability``.
    window: int = 512

    @abc.abstractmethod
    def speech_probability(self, window: np.ndarray) -> float:
        """Probability in [0, 1] that this window (``window`` int16 samples) is speech."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the recurrent state (after a long pause or a participant rejoining)."""


class VADEngine(Engine):
    """Voice activity detection; one shared model, one stream of state per participant."""

    sample_rate: ClassVar[int] = 16000

    @abc.abstractmethod
    def stream(self) -> VADStream:
        """A new, independent per-participant stream."""


class DenoiseEngine(Engine):
    """Noise suppression; hands out one pipecat ``BaseAudioFilter`` per participant.

    Filters hold recurrent state, so two participants never share one.
    """

    @abc.abstractmethod
    def create_filter(self) -> Any:
        """A new ``pipecat.audio.filters.base_audio_filter.BaseAudioFilter``."""
