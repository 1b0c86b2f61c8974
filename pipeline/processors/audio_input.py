"""Audio input: every participant's audio as 16 kHz mono int16, malformed frames rejected."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import Frame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory

from pipeline.frames import ARRIVED_AT
from pipeline.room import Room

__all__ = ["AudioInputProcessor"]

#: Frames larger than this are not audio a transport sends (20 ms is typical).
MAX_FRAME_SECONDS = 10.0


class AudioInputProcessor(FrameProcessor):
    """Normalises ``UserAudioRawFrame`` to the cascade's format and registers speakers.

    It also records when each participant's audio arrived (``Room.clock``), before any
    stage's queue, so utterances' speech-end times are when the speech was spoken.

    Transports resample at the edge already; this is the guard that makes sure: any
    sample rate or channel count becomes 16 kHz mono (a streaming resampler per
    participant, so chunk edges do not click), and a frame that is not whole int16
    samples, is empty, or is implausibly large is dropped with an error frame while
    the room keeps running.

    Args:
        room: The room whose participants are registered on their first audio.
        sample_rate: The cascade's sample rate.
    """

    def __init__(self, room: Room, *, sample_rate: int = 16000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._room = room
        self._rate = sample_rate
        self._resamplers: dict[tuple[str, int], soxr.ResampleStream] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, UserAudioRawFrame):
            normalised = await self._normalise(frame)
            if normalised is not None:
                await self.push_frame(normalised, direction)
        else:
            await self.push_frame(frame, direction)

    async def _normalise(self, frame: UserAudioRawFrame) -> UserAudioRawFrame | None:
        user = frame.user_id or ""
        problem = None
        channels = frame.num_channels
        if not user:
            problem = "audio without a user_id"
        elif frame.sample_rate <= 0 or channels <= 0:
            problem = f"bad audio format ({frame.sample_rate} Hz, {channels} channels)"
        elif len(frame.audio) % (2 * channels):
            problem = f"{len(frame.audio)} bytes is not a whole number of {channels}-channel int16 samples"
        elif len(frame.audio) > MAX_FRAME_SECONDS * frame.sample_rate * 2 * channels:
            problem = f"{len(frame.audio)} bytes in one frame is more than {MAX_FRAME_SECONDS:.0f} s"
        if problem:
            message = f"dropped audio from {user or '?'}: {problem}"
            logger.warning(message)
            await self.push_error(message, category=ErrorCategory.APPLICATION)
            return None
        if not frame.audio:
            return None
        self._room.participant(user)
        # A transport that receives on another thread stamps the true arrival time.
        arrived = float(frame.metadata.get(ARRIVED_AT, 0.0)) or time.monotonic()
        if frame.sample_rate == self._rate and channels == 1:
            self._room.clock(user).add(len(frame.audio) // 2, arrived)
            return frame
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        if channels > 1:
            pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != self._rate:
            key = (user, frame.sample_rate)
            stream = self._resamplers.get(key)
            if stream is None:
                stream = self._resamplers[key] = soxr.ResampleStream(
                    frame.sample_rate, self._rate, 1, dtype="int16", quality="HQ"
                )
            pcm = stream.resample_chunk(pcm)
        self._room.clock(user).add(len(pcm), arrived)
        out = UserAudioRawFrame(
            audio=pcm.tobytes(), sample_rate=self._rate, num_channels=1, user_id=user
        )
        out.transport_source = frame.transport_source
        return out

    # -- ParticipantState (pipeline.participants) -----------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return any(key[0] == user_id for key in self._resamplers)

    def participant_busy(self, user_id: str) -> bool:
        return False  # works inline: nothing is ever queued here

    async def flush_participant(self, user_id: str) -> None:
        """A resampler's few buffered samples are not worth an utterance."""

    async def release_participant(self, user_id: str) -> None:
        """Drop a participant's resampler state."""
        for key in [k for k in self._resamplers if k[0] == user_id]:
            del self._resamplers[key]
