"""Checks on audio before it becomes an enrolled voice: speech, not silence, within limits.

Every refusal is a :class:`VoiceEnrollmentError` whose message says what was wrong and
what to do, in one line a chat command or the CLI can show as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline.audio import load_audio, rms_dbfs
from pipeline.engines.base import VADEngine
from pipeline.errors import AudioInputError
from voices.speech import SpeechMeasure, measure_speech

__all__ = [
    "ENROLLMENT_SAMPLE_RATE",
    "CheckedRecording",
    "EnrollmentLimits",
    "VoiceEnrollmentError",
    "check_enrollment_file",
    "check_enrollment_speech",
    "load_enrollment_audio",
]

#: Enrollment audio is handled at the pipeline's rate (the VAD's and the capture's).
ENROLLMENT_SAMPLE_RATE = 16000

#: Below this level a recording with no speech is called silence rather than noise.
_SILENCE_DBFS = -55.0
_MiB = 2**20


class VoiceEnrollmentError(AudioInputError):
    """Audio that cannot be enrolled as a voice: silence, too little or too much speech."""


@dataclass(frozen=True)
class EnrollmentLimits:
    """What an enrollment recording must be.

    Attributes:
        min_speech_s: Fewest seconds of speech (pauses do not count).
        max_speech_s: Most seconds of speech; longer recordings must be trimmed.
        max_audio_s: Longest recording, pauses included, that is decoded at all.
        max_file_bytes: Largest file accepted.
    """

    min_speech_s: float = 3.0
    max_speech_s: float = 60.0
    max_audio_s: float = 300.0
    max_file_bytes: int = 25 * _MiB

    def __post_init__(self) -> None:
        if not 0 < self.min_speech_s <= self.max_speech_s <= self.max_audio_s:
            raise ValueError(
                "enrollment limits must satisfy 0 < min_speech_s <= max_speech_s <= max_audio_s"
            )
        if self.max_file_bytes <= 0:
            raise ValueError("max_file_bytes must be positive")


@dataclass(frozen=True)
class CheckedRecording:
    """A recording that passed every enrollment check, ready for the voice model.

    Attributes:
        name: What to call it in messages (the file name as given).
        measure: The speech found in it (seconds, and the speech without pauses).
    """

    name: str
    measure: SpeechMeasure


def load_enrollment_audio(
    path: str | os.PathLike[str], limits: EnrollmentLimits | None = None
) -> np.ndarray:
    """Decode an enrollment file (wav, mp3, ogg, m4a, ...) to 16 kHz mono int16.

    Decoding is capped by the limits' size and length (and so by total samples: see
    ``pipeline.audio.load_audio``), so a small file that would decode into gigabytes
    is refused from its header.

    Raises:
        AudioInputError: missing, empty, too large, too long, not audio or corrupt
            (the message names the file).
    """
    limits = limits or EnrollmentLimits()
    return load_audio(
        path,
        sample_rate=ENROLLMENT_SAMPLE_RATE,
        max_bytes=limits.max_file_bytes,
        max_seconds=limits.max_audio_s,
    )


def check_enrollment_file(
    path: str | os.PathLike[str], vad: VADEngine, limits: EnrollmentLimits | None = None
) -> CheckedRecording:
    """Every check an enrollment file must pass, with no voice model involved.

    The file must exist, fit the size cap, decode, and hold enough (and not too much)
    speech by the VAD. Run it before loading a cloning model (XTTS takes ~10 s and
    1.1 GB to load), so a bad file is refused at once.

    Raises:
        AudioInputError: missing, empty, too large, too long, not audio or corrupt.
        VoiceEnrollmentError: silence, no speech, too little or too much speech.
    """
    limits = limits or EnrollmentLimits()
    name = os.fsdecode(path)
    pcm = load_enrollment_audio(path, limits)
    return CheckedRecording(name, check_enrollment_speech(pcm, vad, limits, name=name))


def check_enrollment_speech(
    pcm: np.ndarray,
    vad: VADEngine,
    limits: EnrollmentLimits | None = None,
    *,
    name: str = "recording",
) -> SpeechMeasure:
    """Measure the speech in ``pcm`` and refuse it unless it is enough, and not too much.

    Args:
        pcm: Mono int16 samples at 16 kHz.
        vad: The VAD engine that tells speech from the rest.
        limits: The limits to enforce (defaults: 3-60 s of speech).
        name: What to call the audio in messages (a file name).

    Returns:
        The measured speech (seconds, and the speech with pauses removed).

    Raises:
        VoiceEnrollmentError: no audio, silence, no speech, too little or too much speech.
    """
    limits = limits or EnrollmentLimits()
    pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
    if pcm.size == 0:
        raise VoiceEnrollmentError(f"{name}: contains no audio")
    audio_s = pcm.size / ENROLLMENT_SAMPLE_RATE
    if audio_s > limits.max_audio_s:
        raise VoiceEnrollmentError(
            f"{name}: {audio_s:.0f} s of audio is too long to enroll "
            f"(the limit is {limits.max_audio_s:.0f} s); send 5-30 s of your voice"
        )
    measure = measure_speech(pcm, vad)
    need = f"at least {limits.min_speech_s:g} s"
    if measure.seconds < min(0.5, limits.min_speech_s):
        level = rms_dbfs(pcm)
        if level < _SILENCE_DBFS:
            raise VoiceEnrollmentError(
                f"{name}: is silence (level {level:.0f} dBFS); record yourself speaking for {need}"
            )
        raise VoiceEnrollmentError(
            f"{name}: no speech found (noise or music?); record yourself speaking for {need}"
        )
    if measure.seconds < limits.min_speech_s:
        raise VoiceEnrollmentError(
            f"{name}: only {measure.seconds:.1f} s of speech; enrollment needs {need} "
            "(5-30 s works best)"
        )
    if measure.seconds > limits.max_speech_s:
        raise VoiceEnrollmentError(
            f"{name}: {measure.seconds:.1f} s of speech is too long; enrollment takes at most "
            f"{limits.max_speech_s:g} s (trim the recording)"
        )
    return measure
