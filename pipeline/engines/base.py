"""The engine interfaces.

Engines are plain classes that know nothing about frames. Their methods are
synchronous and may block for as long as the model needs: processors call them
off the event loop (``asyncio.to_thread``). An engine must be safe to call from
several threads at once (one engine instance serves every room and participant);
engines whose model is not thread-safe keep a pool or a lock inside.

Audio crossing these interfaces is always 16-bit signed little-endian PCM,
mono, as a 1-D ``numpy.int16`` array, with its sample rate given alongside.

Speech recognition comes in two shapes: ``ASREngine.transcribe`` decodes one finished
utterance; engines with ``supports_streaming`` also open an :class:`ASRStream` per
participant, fed while the person speaks, with partial hypotheses on the way and a
final one moments after the last audio. :class:`RedecodingASRStream` gives any engine a
stream by re-decoding the audio since the last cut.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from loguru import logger

from pipeline.errors import EngineError

__all__ = [
    "ASREngine",
    "ASRStream",
    "AudioEvent",
    "AudioEventEngine",
    "DenoiseEngine",
    "Engine",
    "ImageEngine",
    "MTEngine",
    "RedecodingASRStream",
    "TTSEngine",
    "Transcript",
    "VADEngine",
    "VADStream",
    "VoiceConversionEngine",
    "VoiceConversionStream",
    "Word",
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


@dataclass(frozen=True)
class Word:
    """One recognised word and where it was heard.

    Attributes:
        text: The word as the engine wrote it.
        start: Seconds from the start of the audio (for a stream: of the stream) to the
            word's first frame.
        end: Seconds to the end of its last frame.
    """

    text: str
    start: float
    end: float


@dataclass
class Transcript:
    """What an ASR engine heard in one utterance.

    Attributes:
        text: The words, as the engine produced them.
        language: ISO 639-1 code of the language recognised.
        punctuated: Whether ``text`` already has sentence casing and punctuation.
        confidence: Engine-specific confidence in [0, 1], where it has one.
        extra: Engine-specific details (n-best, posteriors, ...).
        words: The words of ``text`` with their timings, where the engine has them
            (empty otherwise). Times count from the start of the audio passed to
            ``transcribe``, or for a stream from the moment it was opened.
    """

    text: str
    language: str
    punctuated: bool = False
    confidence: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    words: list[Word] = field(default_factory=list)


class ASRStream(abc.ABC):
    """Incremental recognition of one participant's speech.

    Methods block (call them from a worker thread); one stream is used by one thread at
    a time, different streams concurrently. Times are seconds of audio since the stream
    was opened: cuts do not reset the clock.

    A stream is also a context manager that closes it.

    Attributes:
        language: ISO 639-1 code of the language being recognised.
    """

    language: str

    @abc.abstractmethod
    def feed(self, pcm: np.ndarray) -> None:
        """Add audio: 16 kHz mono int16, any length (20 ms .. seconds).

        Cheap: the audio is queued or forwarded and decoded incrementally.

        Raises:
            EngineError: the stream is closed or broken (a dead worker), or the audio is
                malformed (not retryable).
        """

    @abc.abstractmethod
    def partial(self) -> Transcript:
        """The current hypothesis for the audio fed since the last cut (fast).

        Raises:
            EngineError: the stream is closed or broken, or the model failed.
        """

    @abc.abstractmethod
    def finalize(self) -> Transcript:
        """The final-quality hypothesis of everything fed since the last cut.

        The stream stays open: more audio may follow (speech resumed after a
        speculative endpoint), and a later ``finalize`` covers the old and new audio.

        Raises:
            EngineError: the stream is closed or broken, or the model failed.
        """

    @abc.abstractmethod
    def cut(self, at: float) -> None:
        """Forget the audio before ``at`` (stream seconds): the caller committed it.

        Later hypotheses cover only the audio after ``at``, which keeps the decoding
        window of a long monologue bounded. Cut at a word's ``end``; a cut before an
        earlier cut, or past the audio fed so far, is clamped.

        Raises:
            EngineError: the stream is closed or broken.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the stream holds; idempotent."""

    def __enter__(self) -> ASRStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ASREngine(Engine):
    """Speech to text."""

    #: Languages this engine can transcribe (ISO 639-1); may depend on the loaded model.
    languages: frozenset[str] = frozenset()
    #: The sample rate the model wants; callers resample before calling.
    sample_rate: ClassVar[int] = 16000
    #: Whether ``open_stream`` works; processors use ``transcribe`` for engines without.
    supports_streaming: ClassVar[bool] = False

    def open_stream(self, language: str) -> ASRStream:
        """A new stream recognising ``language`` (16 kHz audio), for one participant.

        Raises:
            NotImplementedError: the engine does not stream (``supports_streaming``).
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: no stream could be opened now (retryable).
        """
        raise NotImplementedError(f"the {self.name or type(self).__name__} engine does not stream")

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


class RedecodingASRStream(ASRStream):
    """A stream for any engine: re-decodes the audio since the last cut with ``transcribe``.

    ``partial`` decodes the growing window again, at most once per
    ``partial_interval_s`` and only so often that partial decodes take at most
    ``max_partial_load`` of the wall-clock time (a long window decodes slowly, so its
    partials come less often); between decodes it returns the previous hypothesis. ``finalize`` decodes the whole window, so its result is
    exactly what ``transcribe`` gives for the audio since the last cut. Concurrent
    streams call ``transcribe`` concurrently, which batching engines merge into one
    forward pass.

    Args:
        engine: The engine whose ``transcribe`` decodes the window.
        language: ISO 639-1 code passed to ``transcribe``.
        partial_interval_s: Least wall-clock time between two partial decodes.
        max_partial_load: Largest share of wall-clock time spent decoding partials
            (0.5: the next partial decode waits at least as long as the last one took);
            ``None`` for no limit. With ``partial_interval_s=0`` and no limit, every
            ``partial`` that has new audio decodes.
        max_window_s: Safety net for callers that never cut: older audio beyond this
            is dropped (with a warning) so one decode stays bounded.
    """

    def __init__(
        self,
        engine: ASREngine,
        language: str,
        *,
        partial_interval_s: float = 0.3,
        max_partial_load: float | None = 0.5,
        max_window_s: float = 60.0,
    ) -> None:
        if partial_interval_s < 0 or max_window_s <= 0:
            raise ValueError("partial_interval_s must be >= 0 and max_window_s > 0")
        if max_partial_load is not None and not 0 < max_partial_load <= 1:
            raise ValueError("max_partial_load must be in (0, 1]")
        self.engine = engine
        self.language = language
        self.sample_rate = engine.sample_rate
        self._partial_interval_s = partial_interval_s
        self._partial_gap = 0.0 if max_partial_load is None else 1.0 / max_partial_load - 1.0
        self._max_window = int(max_window_s * self.sample_rate)
        self._chunks: list[np.ndarray] = []
        self._window_start = 0  # samples since open: where the window begins
        self._fed = 0  # samples fed since open
        self._partial: Transcript | None = None
        self._partial_fed = -1  # ``_fed`` when ``_partial`` was decoded
        self._final: Transcript | None = None
        self._final_fed = -1
        self._next_partial_at = 0.0  # monotonic time before which partials are cached
        self._overflowed = False
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread

    # --- ASRStream ---------------------------------------------------------------------

    def feed(self, pcm: np.ndarray) -> None:
        samples = _mono_int16(pcm)
        with self._lock:
            self._check_open()
            if samples.size == 0:
                return
            self._chunks.append(samples)
            self._fed += samples.size
            excess = self._fed - self._window_start - self._max_window
        if excess > 0:
            if not self._overflowed:
                self._overflowed = True
                logger.warning(
                    "ASR stream window passed {:.0f} s without a cut; dropping its oldest audio",
                    self._max_window / self.sample_rate,
                )
            self.cut((self._window_start + excess) / self.sample_rate)

    def partial(self) -> Transcript:
        with self._lock:
            self._check_open()
            fed = self._fed
            if self._final is not None and self._final_fed == fed:
                return self._final
            cached = self._partial
            if cached is not None and (
                self._partial_fed == fed or time.monotonic() < self._next_partial_at
            ):
                return cached
            window, start = self._window()
        began = time.monotonic()
        transcript = self._decode(window, start)
        took = time.monotonic() - began
        with self._lock:
            if self._window_start == start:  # not cut meanwhile
                self._partial, self._partial_fed = transcript, fed
            self._next_partial_at = began + max(self._partial_interval_s, took * (1.0 + self._partial_gap))
        return transcript

    def finalize(self) -> Transcript:
        with self._lock:
            self._check_open()
            fed = self._fed
            if self._final is not None and self._final_fed == fed:
                return self._final
            window, start = self._window()
        transcript = self._decode(window, start)
        with self._lock:
            if self._window_start == start:
                self._final, self._final_fed = transcript, fed
                self._partial, self._partial_fed = transcript, fed
        return transcript

    def cut(self, at: float) -> None:
        with self._lock:
            self._check_open()
            target = min(max(int(round(at * self.sample_rate)), self._window_start), self._fed)
            drop = target - self._window_start
            if drop <= 0:
                return
            kept: list[np.ndarray] = []
            for chunk in self._chunks:
                if drop >= chunk.size:
                    drop -= chunk.size
                    continue
                kept.append(chunk[drop:])
                drop = 0
            self._chunks = kept
            self._window_start = target
            # What was heard after the cut is still the best guess until the next decode.
            cut_s = target / self.sample_rate
            self._partial = _words_after(self._partial, cut_s)
            self._final, self._final_fed = None, -1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._chunks = []
            self._partial = self._final = None

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the ASR stream is closed", retryable=False)

    def _window(self) -> tuple[np.ndarray, int]:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        window = self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)
        return window, self._window_start

    def _decode(self, window: np.ndarray, start: int) -> Transcript:
        transcript = self.engine.transcribe(window, self.sample_rate, self.language)
        offset = start / self.sample_rate
        if not transcript.words or offset == 0:
            return transcript
        return replace(transcript, words=[
            Word(w.text, w.start + offset, w.end + offset) for w in transcript.words
        ])


def _words_after(transcript: Transcript | None, at: float) -> Transcript | None:
    """``transcript`` without the words that start before ``at`` (None without timings)."""
    if transcript is None or not transcript.words:
        return None
    words = [w for w in transcript.words if w.start >= at]
    return replace(transcript, text=" ".join(w.text for w in words), words=words, confidence=None)


def _mono_int16(pcm: np.ndarray) -> np.ndarray:
    """1-D int16 samples from ``pcm`` (float in [-1, 1] is converted).

    Raises:
        EngineError: not 1-D, or another dtype (not retryable).
    """
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise EngineError(f"ASR streams need mono 1-D audio, got shape {array.shape}", retryable=False)
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (not np.all(np.isfinite(array)) or np.max(np.abs(array)) > 1.0):
            raise EngineError("float audio must be finite and within [-1, 1]", retryable=False)
        return np.round(array * 32767.0).astype(np.int16)
    raise EngineError(f"ASR streams need int16 (or float) samples, got {array.dtype}", retryable=False)


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


@dataclass(frozen=True)
class AudioEvent:
    """One sound an audio-event classifier heard in a clip.

    Attributes:
        label: The classifier's label (AudioSet's ``Laughter``, ``Crying, sobbing``...).
        score: Its probability in [0, 1].
    """

    label: str
    score: float


class AudioEventEngine(Engine):
    """Audio-event classification (laughter, crying, sighs...): clips in, scored labels out."""

    #: The sample rate the model wants; callers resample before calling.
    sample_rate: ClassVar[int] = 16000

    @abc.abstractmethod
    def classify(self, clips: list[np.ndarray], sample_rate: int) -> list[list[AudioEvent]]:
        """Score every clip (mono int16) in one batch; per clip, its events best first.

        Raises:
            EngineError: the model failed on this input.
        """


class VoiceConversionStream(abc.ABC):
    """Streaming voice conversion of one participant's speech into one target voice.

    Methods block (call them from a worker thread); one stream is used by one thread at
    a time. Output keeps the input's timing: ``n`` seconds in give ``n`` seconds out,
    delayed by :attr:`latency_s`.
    """

    #: Algorithmic latency in seconds: how much later than its input a sample comes out
    #: (one chunk plus the look-ahead), whatever the compute time.
    latency_s: float = 0.0

    @abc.abstractmethod
    def feed(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Add 16 kHz mono int16 audio; returns the converted chunks it completed
        (mono int16 at the engine's ``sample_rate``), in order."""

    @abc.abstractmethod
    def flush(self) -> list[np.ndarray]:
        """The input ended (or paused): convert what is buffered, padding the look-ahead
        with silence; the stream can be fed again afterwards."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the stream holds."""


class VoiceConversionEngine(Engine):
    """Speech to speech in another voice, no text in between (the voice changer).

    A target voice is an embedding: :meth:`embed` computes one from someone's speech
    (their consent is the caller's business: ``voices.consent``), :meth:`neutral_voice`
    gives one of the engine's built-in voices.
    """

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate of the converted audio."""

    @abc.abstractmethod
    def neutral_voices(self) -> list[str]:
        """Names of the built-in voices (the first one is the default)."""

    @abc.abstractmethod
    def neutral_voice(self, name: str) -> np.ndarray:
        """The embedding of built-in voice ``name``.

        Raises:
            KeyError: no such voice.
        """

    @abc.abstractmethod
    def embed(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """The target embedding of the voice speaking in ``pcm`` (mono int16).

        Raises:
            EngineError: too little audio, or the model failed.
        """

    @abc.abstractmethod
    def open_stream(self, target: np.ndarray) -> VoiceConversionStream:
        """A new stream converting one participant's speech into voice ``target``."""

    def convert(self, pcm: np.ndarray, sample_rate: int, target: np.ndarray) -> np.ndarray:
        """A whole clip (mono int16) in voice ``target``, at :attr:`sample_rate`."""
        from pipeline.audio import resample

        if sample_rate != 16000:
            pcm = resample(pcm, sample_rate, 16000)
        stream = self.open_stream(target)
        try:
            chunks = [*stream.feed(pcm), *stream.flush()]
        finally:
            stream.close()
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class ImageEngine(Engine):
    """Text to image (speech-to-image: the transcript, translated, is the prompt)."""

    #: The language prompts must be written in (ISO 639-1).
    prompt_language: ClassVar[str] = "en"

    @abc.abstractmethod
    def generate(self, prompt: str) -> bytes:
        """One picture for ``prompt``, as PNG bytes.

        Raises:
            EngineError: the model failed.
        """
