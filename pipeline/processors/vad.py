"""VAD stage: each participant's audio cut into utterances (and, for streaming
recognisers, reported step by step while they speak)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, UserAudioRawFrame

from pipeline.engines.base import VADEngine
from pipeline.frames import SpeechActivityFrame, Utterance, UtteranceAudioFrame
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room
from pipeline.segmenter import Segment, SegmenterParams, SpeechEvent, UtteranceSegmenter

__all__ = ["VADSegmenterProcessor"]


class VADSegmenterProcessor(UserLaneProcessor):
    """Turns ``UserAudioRawFrame`` (16 kHz mono) into ``UtteranceAudioFrame``.

    Each participant has their own VAD state and segmenter, so two people talking at
    once are segmented independently. An utterance ends after the hang-over silence or
    is split at the maximum length. The raw audio frames are consumed here.

    Every utterance's ``speech_end`` mark is when its last voiced audio *arrived*, not
    when the hang-over passed, so latencies count the endpointing time too.

    With ``streaming`` on, a ``SpeechActivityFrame`` is also pushed for each step while
    someone speaks (start with the preroll, audio, pause, resume, end, split), for the
    ASR stage to recognise as they talk and to finalise at the pause.

    Args:
        engine: The shared VAD model.
        room: Gives each speaker's language.
        params: Segmentation thresholds and durations.
        streaming: Also report speech step by step.
        whole: With ``streaming``: says, when someone starts speaking, that this stretch
            of their speech must be recognised whole rather than streamed (their language
            is still being identified).
    """

    handles = (UserAudioRawFrame,)

    def __init__(
        self,
        engine: VADEngine,
        room: Room,
        params: SegmenterParams | None = None,
        *,
        streaming: bool = False,
        whole: Callable[[str], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stage="vad", **kwargs)
        self._whole = whole
        #: Participants whose stretch of speech under way is recognised whole.
        self._whole_now: set[str] = set()
        self._engine = engine
        self._room = room
        self._params = params or SegmenterParams()
        self._streaming = streaming
        self._segmenters: dict[str, UtteranceSegmenter] = {}

    def _segmenter(self, user: str) -> UtteranceSegmenter:
        seg = self._segmenters.get(user)
        if seg is None:
            seg = self._segmenters[user] = UtteranceSegmenter(
                self._engine.stream(), self._params, self._engine.sample_rate
            )
        return seg

    def _spoken_at(self, user: str, seconds: float) -> float:
        when = self._room.spoken_at(user, seconds)
        return when if when is not None else time.monotonic()

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)  # type: ignore[attr-defined]
        seg = self._segmenter(user)
        # Silero is ~0.1 ms a window, but a batch after a hiccup can be seconds of audio.
        if self._streaming:
            events = await self.engine_call(seg.push_events, pcm, timeout_s=self.timeouts.for_audio(len(pcm) / 16000))
            await self._emit_events(user, events)
        else:
            segments = await self.engine_call(seg.push, pcm, timeout_s=self.timeouts.for_audio(len(pcm) / 16000))
            await self._emit(user, segments)

    async def _emit_events(self, user: str, events: list[SpeechEvent]) -> None:
        for event in events:
            if event.kind == "start":
                if self._whole is not None and self._whole(user):
                    self._whole_now.add(user)
                else:
                    self._whole_now.discard(user)
            utterance = None
            if event.segment is not None:
                utterance = (await self._emit(user, [event.segment]))[0]
            # An ``end`` without a segment (a blip too short to be an utterance) is still
            # reported: a streaming recogniser was fed its audio.
            await self.push_frame(
                SpeechActivityFrame(
                    user_id=user,
                    kind=event.kind,
                    at=event.at,
                    position=event.position,
                    wall=self._spoken_at(user, event.position),
                    audio=event.audio.tobytes() if event.audio is not None else b"",
                    utterance=utterance,
                    whole=user in self._whole_now,
                )
            )

    async def _emit(self, user: str, segments: list[Segment]) -> list[Utterance]:
        emitted = []
        for segment in segments:
            utterance = Utterance(
                user_id=user,
                language=self._room.language_of(user),
                start=segment.start,
                end=segment.end,
                split=segment.split,
            )
            utterance.mark("speech_end", self._spoken_at(user, segment.end))
            logger.debug(
                f"utterance {utterance.id} from {user}: {segment.start:.2f}-{segment.end:.2f} s"
                + (" (split at max length)" if segment.split else "")
            )
            await self.push_frame(
                UtteranceAudioFrame(
                    utterance, segment.audio.tobytes(), self._engine.sample_rate,
                    interpreted=not self._streaming or user in self._whole_now,
                )
            )
            emitted.append(utterance)
        return emitted

    async def on_end(self) -> None:
        """End of input: trailing speech still in a segmenter becomes an utterance."""
        for user in list(self._segmenters):
            await self.flush_participant(user)

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._segmenters or super().holds_participant(user_id)

    async def flush_participant(self, user_id: str) -> None:
        """A participant is leaving (or the input ended): speech cut off mid-utterance
        becomes an utterance."""
        seg = self._segmenters.get(user_id)
        if seg is None:
            return
        if self._streaming:
            await self._emit_events(user_id, seg.flush_events())
        else:
            await self._emit(user_id, seg.flush())

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        self._segmenters.pop(user_id, None)
        self._whole_now.discard(user_id)
