"""Beside the VAD: loud stretches it does not call speech, as non-verbal sound candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
from pipecat.frames.frames import Frame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection

from pipeline.engines.base import VADEngine
from pipeline.frames import SoundCandidateFrame
from pipeline.nonverbal import EnergyGate, LoudStretch, NonverbalParams
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room

__all__ = ["NonverbalGateProcessor"]


class NonverbalGateProcessor(UserLaneProcessor):
    """Watches each participant's audio on its way to the VAD and reports loud stretches
    the VAD passes over (``SoundCandidateFrame``), for the non-verbal stage to classify.

    Audio is forwarded at once, untouched; the gate works on a copy in the participant's
    lane (its own VAD stream, asked only about loud windows). Rooms with non-verbal
    sounds off, and voice-changer participants (whose laughter is converted with the
    rest of their voice), cost nothing. Stretches are on the same clock as the VAD's
    utterances: both count the participant's samples from their first audio.

    Args:
        vad: The shared VAD model (one stream per participant here).
        room: Whether the room wants non-verbal sounds; each participant's mode.
        params: Levels and durations.
        speech_threshold: The VAD's threshold (``vad.threshold``).
    """

    handles = (UserAudioRawFrame,)

    def __init__(
        self, vad: VADEngine, room: Room, params: NonverbalParams | None = None, *,
        speech_threshold: float = 0.5, **kwargs: Any,
    ) -> None:
        super().__init__(stage="nonverbal-gate", **kwargs)
        self._vad = vad
        self._room = room
        self._params = params or NonverbalParams()
        self._speech = speech_threshold
        self._gates: dict[str, EnergyGate] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, UserAudioRawFrame):
            # The VAD must not wait for us: forward first, look at a copy afterwards.
            await super(UserLaneProcessor, self).process_frame(frame, direction)
            await self.push_frame(frame, direction)
            await self._enqueue(frame)
            return
        await super().process_frame(frame, direction)

    def _gate(self, user: str) -> EnergyGate:
        gate = self._gates.get(user)
        if gate is None:
            gate = self._gates[user] = EnergyGate(
                self._vad.stream(), self._params, speech_threshold=self._speech, sample_rate=self._vad.sample_rate
            )
        return gate

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)  # type: ignore[attr-defined]
        gate = self._gate(user)  # keeps the clock even while the room has it off
        if not self._room.nonverbal or self._room.mode_of(user) == "voice":
            pcm = np.zeros_like(pcm)  # counted, never loud
        stretches = await self.engine_call(gate.push, pcm, timeout_s=self.timeouts.for_audio(len(pcm) / 16000))
        await self._emit(user, stretches)

    async def _emit(self, user: str, stretches: list[LoudStretch]) -> None:
        for stretch in stretches:
            await self.push_frame(SoundCandidateFrame(user, stretch.start, stretch.end, stretch.audio.tobytes()))

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._gates or super().holds_participant(user_id)

    async def flush_participant(self, user_id: str) -> None:
        gate = self._gates.get(user_id)
        if gate is not None:
            await self._emit(user_id, gate.flush())

    async def on_end(self) -> None:
        for user in list(self._gates):
            await self.flush_participant(user)

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        self._gates.pop(user_id, None)
