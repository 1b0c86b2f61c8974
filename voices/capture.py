"""Automatic voice capture: a participant's voice cloned from their first clean utterances.

The first profile is made once about 6 s of clean speech has been heard, then remade as
more speech arrives (at 1.5 times the speech of the last one: 6, 9, 13.5, 20 and 30 s),
up to 30 s, after which the audio is dropped. Profiles and audio are kept in memory
for the session only.

"Clean" means: enough speech in the utterance (not a cough or a "yes"), a usable level
(not a whisper far from the microphone) and no clipping. Only the speech itself (as the
VAD sees it) is kept, so pauses do not count towards the targets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from loguru import logger

from pipeline.audio import rms_dbfs
from pipeline.engines.base import VADEngine
from voices.profile import VoiceCloner, VoiceProfile
from voices.speech import measure_speech

__all__ = ["VoiceCapture", "VoiceCaptureParams"]

_CLIP_LEVEL = 32000


@dataclass(frozen=True)
class VoiceCaptureParams:
    """When a captured voice is (re)made and which utterances count.

    Attributes:
        first_profile_s: Seconds of clean speech before the first profile.
        max_speech_s: Seconds of speech after which the voice is final.
        refine_growth: Remake the profile once the speech has grown by this factor.
        min_utterance_speech_s: Utterances with less speech than this are skipped.
        min_level_dbfs: Quieter utterances (RMS of their speech) are skipped.
        max_clipped_fraction: Utterances with more samples at full scale are skipped.
    """

    first_profile_s: float = 6.0
    max_speech_s: float = 30.0
    refine_growth: float = 1.5
    min_utterance_speech_s: float = 0.8
    min_level_dbfs: float = -45.0
    max_clipped_fraction: float = 0.001

    def __post_init__(self) -> None:
        if not 0 < self.first_profile_s <= self.max_speech_s:
            raise ValueError("need 0 < first_profile_s <= max_speech_s")
        if self.refine_growth <= 1.0:
            raise ValueError("refine_growth must be above 1")


class VoiceCapture:
    """One participant's voice, captured from their utterances as they speak.

    ``add`` takes each utterance and says whether a profile is due; ``build`` makes it.
    Both block (the VAD, the model): call them off the event loop. One participant's
    calls are expected in order; the object is nonetheless safe to share across threads.

    Args:
        user_id: The participant.
        vad: VAD engine that measures the speech in each utterance.
        params: Targets and cleanliness thresholds.
    """

    def __init__(self, user_id: str, vad: VADEngine, params: VoiceCaptureParams | None = None):
        self.user_id = user_id
        self.params = params or VoiceCaptureParams()
        self._vad = vad
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._speech_s = 0.0
        self._profile: VoiceProfile | None = None

    @property
    def speech_seconds(self) -> float:
        """Seconds of clean speech collected so far (capped at ``max_speech_s``)."""
        return self._speech_s

    @property
    def profile(self) -> VoiceProfile | None:
        """The latest profile made, if any."""
        return self._profile

    @property
    def done(self) -> bool:
        """Whether the final profile (from ``max_speech_s`` of speech) has been made."""
        profile = self._profile
        return profile is not None and profile.seconds >= self.params.max_speech_s

    @property
    def due(self) -> bool:
        """Whether enough new speech has arrived for a (better) profile."""
        profile = self._profile
        if profile is None:
            return self._speech_s >= self.params.first_profile_s
        target = min(profile.seconds * self.params.refine_growth, self.params.max_speech_s)
        return self._speech_s > profile.seconds and self._speech_s >= target

    def add(self, pcm: np.ndarray, sample_rate: int) -> bool:
        """Add one utterance (mono int16) if it is clean speech.

        Returns:
            Whether a profile is now due (call :meth:`build`).
        """
        if self.done:
            return False
        if sample_rate != self._vad.sample_rate:
            raise ValueError(f"voice capture takes {self._vad.sample_rate} Hz audio, not {sample_rate}")
        measure = measure_speech(pcm, self._vad)
        reason = self._unclean(measure.seconds, measure.speech)
        if reason:
            logger.debug(f"voice capture of {self.user_id}: utterance skipped ({reason})")
            return self.due
        with self._lock:
            room = self.params.max_speech_s - self._speech_s
            if room <= 0:
                return self.due
            speech = measure.speech
            seconds = measure.seconds
            if seconds > room:
                # Keep the first part only: the cap bounds memory and model time.
                speech = speech[: int(len(speech) * room / seconds)]
                seconds = room
            self._chunks.append(speech)
            # Exactly the cap once reached, so that ``done`` is not lost to rounding.
            self._speech_s = self.params.max_speech_s if seconds == room else self._speech_s + seconds
        return self.due

    def build(self, cloner: VoiceCloner) -> VoiceProfile | None:
        """Make the next profile from everything collected, if one is due.

        The first profile is version 1; each refinement keeps its id and adds a version.
        After the final one the collected audio is released.

        Returns:
            The new profile, or ``None`` when none was due.
        """
        with self._lock:
            if not self.due:
                return None
            seconds = self._speech_s
            audio = np.concatenate(self._chunks)
            self._chunks = [audio]
        latents = cloner.condition(audio, self._vad.sample_rate)
        with self._lock:
            if self._profile is None:
                profile = VoiceProfile(self.user_id, latents, seconds, "auto")
            else:
                profile = self._profile.refined(latents, seconds)
            self._profile = profile
            if self.done:
                self._chunks = []
        logger.info(
            f"voice of {self.user_id} captured from {seconds:.1f} s of speech "
            f"(v{profile.version}{', final' if self.done else ''})"
        )
        return profile

    def _unclean(self, speech_s: float, speech: np.ndarray) -> str:
        """Why an utterance is not clean enough to clone from ("" when it is)."""
        p = self.params
        if speech_s < p.min_utterance_speech_s:
            return f"{speech_s:.1f} s of speech"
        level = rms_dbfs(speech)
        if level < p.min_level_dbfs:
            return f"too quiet ({level:.0f} dBFS)"
        clipped = float(np.mean(np.abs(speech.astype(np.int32)) >= _CLIP_LEVEL))
        if clipped > p.max_clipped_fraction:
            return f"clipped ({clipped:.1%} of samples at full scale)"
        return ""
