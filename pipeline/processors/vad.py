"""VAD stage: each participant's audio cut into utterances."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, UserAudioRawFrame

from pipeline.engines.base import VADEngine
from pipeline.frames import Utterance, UtteranceAudioFrame
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room
from pipeline.segmenter import Segment, SegmenterParams, UtteranceSegmenter

__all__ = ["VADSegmenterProcessor"]


class VADSegmenterProcessor(UserLaneProcessor):
    """Turns ``UserAudioRawFrame`` (16 kHz mono) into ``UtteranceAudioFrame``.

    Each participant has their own VAD state and segmenter, so two people talking at
    once are segmented independently. An utterance ends after the hang-over silence or
    is split at the maximum length. The raw audio frames are consumed here.

    Args:
        engine: The shared VAD model.
        room: Gives each speaker's language.
        params: Segmentation thresholds and durations.
    """

    handles = (UserAudioRawFrame,)

    def __init__(
        self, engine: VADEngine, room: Room, params: SegmenterParams | None = None, **kwargs: Any
    ) -> None:
        super().__init__(stage="vad", **kwargs)
        self._engine = engine
        self._room = room
        self._params = params or SegmenterParams()
        self._segmenters: dict[str, UtteranceSegmenter] = {}

    def _segmenter(self, user: str) -> UtteranceSegmenter:
        seg = self._segmenters.get(user)
        if seg is None:
            seg = self._segmenters[user] = UtteranceSegmenter(
                self._engine.stream(), self._params, self._engine.sample_rate
            )
        return seg

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)  # type: ignore[attr-defined]
        seg = self._segmenter(user)
        # Silero is ~0.1 ms a window, but a batch after a hiccup can be seconds of audio.
        segments = await asyncio.to_thread(seg.push, pcm)
        await self._emit(user, segments)

    async def _emit(self, user: str, segments: list[Segment]) -> None:
        for segment in segments:
            utterance = Utterance(
                user_id=user,
                language=self._room.language_of(user),
                start=segment.start,
                end=segment.end,
                split=segment.split,
            )
            utterance.mark("speech_end")
            logger.debug(
                f"utterance {utterance.id} from {user}: {segment.start:.2f}-{segment.end:.2f} s"
                + (" (split at max length)" if segment.split else "")
            )
            await self.push_frame(
                UtteranceAudioFrame(utterance, segment.audio.tobytes(), self._engine.sample_rate)
            )

    async def on_end(self) -> None:
        """End of input: trailing speech still in a segmenter becomes an utterance."""
        for user, seg in list(self._segmenters.items()):
            await self._emit(user, seg.flush())

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._segmenters or super().holds_participant(user_id)

    async def flush_participant(self, user_id: str) -> None:
        """A participant is leaving: speech cut off mid-utterance becomes an utterance."""
        seg = self._segmenters.get(user_id)
        if seg is not None:
            await self._emit(user_id, seg.flush())

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        self._segmenters.pop(user_id, None)
