"""Fake engines implementing the real base classes, for processor tests.

They are deterministic and fast, and can be told to be slow or to fail, so tests can
check ordering, concurrency and error handling without real models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter

from pipeline.cascade import Engines
from pipeline.engines.base import (
    ASREngine,
    ASRStream,
    DenoiseEngine,
    MTEngine,
    RedecodingASRStream,
    Transcript,
    TTSEngine,
    VADEngine,
    VADStream,
    Word,
)
from pipeline.errors import EngineError, UnsupportedLanguageError
from voices.profile import VoiceLatents


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A sine tone as int16."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def dominant_frequency(pcm: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


class EnergyVADStream(VADStream):
    def __init__(self) -> None:
        self.resets = 0

    def speech_probability(self, window: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        return 1.0 if rms > 500 else 0.0

    def reset(self) -> None:
        self.resets += 1


class EnergyVADEngine(VADEngine):
    """Speech = loud; a stand-in for silero on synthetic tones."""

    name = "energy"

    def stream(self) -> VADStream:
        return EnergyVADStream()


class ToneASREngine(ASREngine):
    """'Recognises' a tone by its frequency: 440 Hz → "tone four hundred forty".

    Args:
        delays: seconds to sleep per recognised frequency (to make one speaker slow).
        fail_on: frequencies that raise EngineError.
        empty_on: frequencies that give an empty transcript.
    """

    name = "tone"
    languages = frozenset({"en", "es"})

    def __init__(self, delays: dict[int, float] | None = None, fail_on: set[int] | None = None,
                 empty_on: set[int] | None = None) -> None:
        self.delays = delays or {}
        self.fail_on = fail_on or set()
        self.empty_on = empty_on or set()
        self.calls: list[tuple[int, str]] = []

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        if language not in self.languages:
            raise UnsupportedLanguageError(language)
        freq = int(round(dominant_frequency(pcm, sample_rate) / 10) * 10)
        self.calls.append((freq, language))
        time.sleep(self.delays.get(freq, 0.0))
        if freq in self.fail_on:
            raise EngineError(f"cannot recognise {freq} Hz")
        if freq in self.empty_on:
            return Transcript("", language)
        return Transcript(f"tone {freq}", language, punctuated=False)


class ToneWordsASREngine(ASREngine):
    """A streaming recogniser of tone "words": each burst of tone is one word named by
    its frequency ("w440"), with its timing. Streams re-decode the growing window
    (``RedecodingASRStream``), as any engine without native streaming may.

    Args:
        delay: Seconds each decode takes (a slow speaker's engine).
        punctuated: Write a "." after a word followed by a long pause (like engines that
            punctuate) instead of bare words.
    """

    name = "tone-words"
    languages = frozenset({"en", "es"})
    supports_streaming = True

    def __init__(self, delay: float = 0.0, punctuated: bool = False) -> None:
        self.delay = delay
        self.punctuated = punctuated
        self.streams = 0

    def open_stream(self, language: str) -> ASRStream:
        if language not in self.languages:
            raise UnsupportedLanguageError(language)
        self.streams += 1
        return RedecodingASRStream(self, language, partial_interval_s=0.0, max_partial_load=None)

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        time.sleep(self.delay)
        step = sample_rate // 100  # 10 ms
        loud = [
            float(np.sqrt(np.mean(pcm[i : i + step].astype(np.float64) ** 2))) > 500
            for i in range(0, len(pcm) - step + 1, step)
        ]
        words: list[Word] = []
        start = None
        for index, on in enumerate([*loud, False]):
            if on and start is None:
                start = index
            elif not on and start is not None:
                if index - start >= 5:  # at least 50 ms of tone
                    burst = pcm[start * step : index * step]
                    freq = int(round(dominant_frequency(burst, sample_rate) / 10) * 10)
                    words.append(Word(f"w{freq}", start * step / sample_rate, index * step / sample_rate))
                start = None
        texts = [w.text for w in words]
        if self.punctuated and words:
            texts[-1] += "."
        return Transcript(" ".join(texts), language, punctuated=self.punctuated, words=words)


class ToneLanguageASREngine(ToneASREngine):
    """:class:`ToneASREngine` that also identifies languages: each tone is "spoken" in one.

    Args:
        spoken: frequency → (language, probability) that ``detect_language`` reports, the
            rest of the probability spread evenly over the other languages; a tone not
            listed gets an even spread over every language.
        **kwargs: See :class:`ToneASREngine`.
    """

    name = "tone-lid"
    languages = frozenset({"en", "es", "fr"})
    detects_language = True

    def __init__(self, spoken: dict[int, tuple[str, float]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spoken = spoken or {}
        self.detections: list[int] = []

    def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        freq = int(round(dominant_frequency(pcm, sample_rate) / 10) * 10)
        self.detections.append(freq)
        time.sleep(self.delays.get(freq, 0.0))
        language, probability = self.spoken.get(freq, ("", 0.0))
        others = sorted(self.languages - {language})
        rest = (1.0 - probability) / len(others)
        ranking = [(other, rest) for other in others]
        if language:
            ranking.append((language, probability))
        return sorted(ranking, key=lambda item: -item[1])


class TagMTEngine(MTEngine):
    """Translates by tagging: "Hello." en→es → "[es] Hello."."""

    name = "tag"

    def __init__(self, pairs: list[tuple[str, str]] | None = None, delay: float = 0.0) -> None:
        self._pairs = pairs or [("en", "es"), ("es", "en"), ("en", "fr")]
        self.delay = delay

    def supports(self, source: str, target: str) -> bool:
        return (source, target) in self._pairs

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        if not self.supports(source, target):
            raise UnsupportedLanguageError(f"{source}→{target}")
        time.sleep(self.delay)
        return [f"[{target}] {t}" for t in texts]


class BeepTTSEngine(TTSEngine):
    """One 100 ms beep chunk per word; records the voices it was given."""

    name = "beep"
    languages = frozenset({"en", "es", "fr"})

    def __init__(self, rate: int = 24000, fail_on: str | None = None) -> None:
        self._rate = rate
        self.fail_on = fail_on
        self.voices: list[Any] = []

    @property
    def sample_rate(self) -> int:
        return self._rate

    def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
        if language not in self.languages:
            raise UnsupportedLanguageError(language)
        self.voices.append(voice)
        if self.fail_on and self.fail_on in text:
            raise EngineError("synthesis failed")
        for _ in text.split():
            yield tone(880, 0.1, self._rate)


class CountingFilter(BaseAudioFilter):
    """Passes audio through, halving its amplitude; counts what it saw."""

    instances = 0

    def __init__(self) -> None:
        CountingFilter.instances += 1
        self.samples = 0
        self.started_at: int | None = None

    async def start(self, sample_rate: int) -> None:
        self.started_at = sample_rate

    async def stop(self) -> None:
        pass

    async def process_frame(self, frame: Any) -> None:
        pass

    async def filter(self, audio: bytes) -> bytes:
        pcm = np.frombuffer(audio, dtype=np.int16)
        self.samples += len(pcm)
        return (pcm // 2).astype(np.int16).tobytes()


class HalvingDenoiseEngine(DenoiseEngine):
    name = "halving"

    def __init__(self) -> None:
        self.filters: list[CountingFilter] = []

    def create_filter(self) -> CountingFilter:
        f = CountingFilter()
        self.filters.append(f)
        return f


class SpectrumCloner:
    """A deterministic stand-in for XTTS's conditioning: band energies of the speech.

    Different speech gives different latents, the same speech the same ones; every call
    is recorded so tests can tell when a voice was (re)computed.
    """

    clones_voices = True
    name = "spectrum"

    def __init__(self) -> None:
        self.calls: list[float] = []  # seconds of audio per call

    def condition(self, pcm: np.ndarray, sample_rate: int) -> VoiceLatents:
        self.calls.append(len(pcm) / sample_rate)
        frames = pcm[: len(pcm) // 512 * 512].reshape(-1, 512).astype(np.float64)
        spectrum = np.log1p(np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0))
        bands = np.array([band.mean() for band in np.array_split(spectrum, 32)])
        gpt = np.tile(bands, (8, 1)).T[None]  # (1, 32, 8)
        speaker = bands[:16] / np.linalg.norm(bands[:16])
        return VoiceLatents(gpt.astype(np.float32), speaker[None, :, None].astype(np.float32))


class CloningBeepTTSEngine(BeepTTSEngine):
    """The beep engine as a cloning one: it conditions voices like :class:`SpectrumCloner`."""

    name = "cloning-beep"
    clones_voices = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cloner = SpectrumCloner()

    @property
    def conditioned(self) -> list[float]:
        """Seconds of audio of each ``condition`` call."""
        return self._cloner.calls

    def condition(self, pcm: np.ndarray, sample_rate: int) -> Any:
        return self._cloner.condition(pcm, sample_rate)


def fake_engines(**overrides: Any) -> Engines:
    """A full set of fake engines; pass e.g. ``asr=ToneASREngine(delays=...)``."""
    parts: dict[str, Any] = {
        "denoise": HalvingDenoiseEngine(),
        "vad": EnergyVADEngine(),
        "asr": ToneASREngine(),
        "mt": TagMTEngine(),
        "tts": BeepTTSEngine(),
    }
    parts.update(overrides)
    return Engines(**parts)
