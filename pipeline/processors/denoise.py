"""Denoise stage: one pipecat audio filter per participant."""

from __future__ import annotations

from typing import Any

import numpy as np
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import Frame, UserAudioRawFrame

from pipeline.engines.base import DenoiseEngine
from pipeline.processors.lanes import UserLaneProcessor

__all__ = ["DenoiseProcessor"]


class DenoiseProcessor(UserLaneProcessor):
    """Runs each participant's 16 kHz mono audio through their own denoise filter.

    Filters carry recurrent state, so every participant gets a fresh one from the
    engine; frames of one participant stay in order in their lane.

    Audio quieter than ``silence_dbfs`` (RMS) is passed on as it is: denoising a quiet
    line costs as much as denoising speech and changes nothing anyone hears, and most
    participants are quiet most of the time.

    Args:
        engine: Hands out the ``BaseAudioFilter`` instances.
        sample_rate: Rate of the audio arriving (the cascade's, 16 kHz).
        silence_dbfs: Below this level a chunk is not denoised (``None``: always denoise).
    """

    handles = (UserAudioRawFrame,)

    def __init__(
        self, engine: DenoiseEngine, *, sample_rate: int = 16000, silence_dbfs: float | None = -55.0, **kwargs: Any
    ) -> None:
        super().__init__(stage="denoise", **kwargs)
        self._engine = engine
        self._rate = sample_rate
        # Mean square of int16 samples at that level (full scale = 32768).
        self._quiet = None if silence_dbfs is None else (32768.0 * 10 ** (silence_dbfs / 20)) ** 2
        #: Chunks passed on without denoising (quiet), and denoised.
        self.skipped = 0
        self.denoised = 0
        self._filters: dict[str, BaseAudioFilter] = {}

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        audio = b"".join(f.audio for f in frames)  # type: ignore[attr-defined]
        if self._quiet is not None and audio:
            pcm = np.frombuffer(audio, dtype=np.int16).astype(np.float32)
            if float(np.dot(pcm, pcm)) / len(pcm) < self._quiet:
                self.skipped += 1
                out = UserAudioRawFrame(audio=audio, sample_rate=self._rate, num_channels=1, user_id=user)
                out.transport_source = frames[-1].transport_source
                await self.push_frame(out)
                return
        self.denoised += 1
        filt = self._filters.get(user)
        if filt is None:
            filt = self._filters[user] = self._engine.create_filter()
            await filt.start(self._rate)
        try:
            cleaned = await filt.filter(audio)
        except Exception as exc:  # noqa: BLE001 - noisy audio is better than lost audio
            await self._report(f"denoise failed for {user}, passing audio through: {exc}", exc, None)
            cleaned = audio
        if cleaned:
            out = UserAudioRawFrame(audio=cleaned, sample_rate=self._rate, num_channels=1, user_id=user)
            out.transport_source = frames[-1].transport_source
            await self.push_frame(out)

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._filters or super().holds_participant(user_id)

    async def release_participant(self, user_id: str) -> None:
        """Drop the lane, then free the participant's filter (safe under a running call:
        the filters free their native state only once idle)."""
        await super().release_participant(user_id)
        filt = self._filters.pop(user_id, None)
        if filt is not None:
            await filt.stop()

    async def cleanup(self) -> None:
        for user in list(self._filters):
            await self.release_participant(user)
        await super().cleanup()
