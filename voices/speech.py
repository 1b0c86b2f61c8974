"""How much of a recording is speech, and only that speech, measured with a VAD engine.

Enrollment limits and automatic capture count *seconds of speech*, not seconds of audio:
a 20 s recording with 15 s of pauses is 5 s of voice to clone from. The same VAD model the
pipeline segments with (silero) decides, window by window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.engines.base import VADEngine

__all__ = ["SpeechMeasure", "measure_speech"]

#: Speech windows are kept with this many windows of context on each side (~100 ms at
#: 512 samples / 16 kHz), so that word onsets and endings are not clipped off.
_PAD_WINDOWS = 3


@dataclass(frozen=True)
class SpeechMeasure:
    """The speech found in a recording.

    Attributes:
        seconds: Seconds of speech (windows the VAD scored at or above the threshold).
        speech: The speech with the pauses between it removed (plus a little context
            around each stretch), mono int16 at the VAD's sample rate.
    """

    seconds: float
    speech: np.ndarray


def measure_speech(pcm: np.ndarray, vad: VADEngine, *, threshold: float = 0.5) -> SpeechMeasure:
    """Score ``pcm`` window by window and keep what is speech.

    Args:
        pcm: Mono int16 samples at ``vad.sample_rate`` (16 kHz for silero).
        vad: A loaded (or loadable) VAD engine; a fresh stream is used, so calls are
            independent and safe from several threads.
        threshold: Speech probability at which a window counts as speech.

    Returns:
        The seconds of speech and the speech itself.
    """
    pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
    stream = vad.stream()
    window = stream.window
    count = len(pcm) // window
    if count == 0:
        return SpeechMeasure(0.0, np.empty(0, dtype=np.int16))
    is_speech = np.fromiter(
        (stream.speech_probability(pcm[i * window : (i + 1) * window]) >= threshold for i in range(count)),
        dtype=bool,
        count=count,
    )
    seconds = float(is_speech.sum()) * window / vad.sample_rate
    # Widen every speech window by the padding, then keep the samples of kept windows.
    kept = np.convolve(is_speech.astype(np.int8), np.ones(2 * _PAD_WINDOWS + 1, dtype=np.int8), "same") > 0
    speech = pcm[: count * window].reshape(count, window)[kept].reshape(-1)
    return SpeechMeasure(seconds, speech.copy())
