"""Voice-changer stage: the speech of participants in voice mode, converted live."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import DataFrame, Frame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection

from pipeline.engines.base import VoiceConversionEngine, VoiceConversionStream
from pipeline.frames import (
    VOICE_CHANGED,
    InterpretationDoneFrame,
    TranslationsDoneFrame,
    Utterance,
    VoiceChangedAudioFrame,
)
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room
from pipeline.voice_changer import VoiceChangerParams

__all__ = ["VoiceChangerProcessor"]

_RATE = 16000


@dataclass
class _FlushFrame(DataFrame):
    """Internal: convert what is buffered for ``user_id`` (their audio stopped)."""

    user_id: str = ""


@dataclass
class _Changer:
    stream: VoiceConversionStream
    target: str
    position: float = 0.0  # input seconds fed (the participant's stream clock)
    emitted: float = 0.0  # output seconds emitted (same clock)
    stretch: Utterance | None = None
    quiet: float = 0.0  # seconds of quiet output at the end of the stretch
    last_audio: float = field(default_factory=time.monotonic)
    buffered: bool = False


class VoiceChangerProcessor(UserLaneProcessor):
    """Converts the speech of voice-mode participants into their chosen voice, live.

    Audio of participants in voice mode (``Room.mode_of``) is taken out of the cascade
    here (nothing of it is recognised or translated) and fed to their own conversion
    stream in their lane; each converted chunk goes out as a ``VoiceChangedAudioFrame``
    for every other participant, as soon as it exists. Chunks are grouped in stretches
    of voice (``Utterance`` of kind ``voice``: converted audio at least ``gate_dbfs``
    loud, ended by ``gap_ms`` of quieter audio), each announced by a
    ``TranslationsDoneFrame`` and closed by an ``InterpretationDoneFrame``, so ordered
    outputs (Discord's queue, results) treat a stretch like an interpretation. Audio of
    everyone else passes through untouched.

    Args:
        engine: The voice-conversion engine.
        room: Modes and chosen voices.
        params: Stretches, idle flush, default voice.
    """

    handles = (UserAudioRawFrame, _FlushFrame)

    def __init__(self, engine: VoiceConversionEngine, room: Room, params: VoiceChangerParams | None = None,
                 **kwargs: Any) -> None:
        super().__init__(stage="vc", **kwargs)
        self._engine = engine
        self._room = room
        self._params = params or VoiceChangerParams()
        self._changers: dict[str, _Changer] = {}
        self._quiet_level = (32768.0 * 10 ** (self._params.gate_dbfs / 20)) ** 2
        self._watch: asyncio.Task[None] | None = None
        self._default: Any = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if (
            direction is FrameDirection.DOWNSTREAM
            and isinstance(frame, UserAudioRawFrame)
            and self._room.mode_of(frame.user_id or "") != "voice"
        ):
            changer = self._changers.get(frame.user_id or "")
            if changer is not None and changer.buffered:
                await self._enqueue(_FlushFrame(user_id=frame.user_id or ""))  # they left voice mode
            elif changer is not None:
                # Keep their clock running, should they come back to voice mode.
                seconds = len(frame.audio) / 2 / _RATE
                changer.position += seconds
                changer.emitted += seconds
            await super(UserLaneProcessor, self).process_frame(frame, direction)
            await self.push_frame(frame, direction)
            return
        await super().process_frame(frame, direction)
        if self._watch is None and isinstance(frame, UserAudioRawFrame):
            self._watch = self.create_task(self._watch_idle(), "vc-idle")

    async def cleanup(self) -> None:
        if self._watch is not None:
            await self.cancel_task(self._watch)
            self._watch = None
        await super().cleanup()

    # -- lanes ------------------------------------------------------------------------

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        audio: list[bytes] = []
        for frame in frames:
            if isinstance(frame, _FlushFrame):
                await self._convert(user, b"".join(audio))
                audio = []
                await self._flush(user)
            else:
                audio.append(frame.audio)  # type: ignore[attr-defined]
        if audio:
            await self._convert(user, b"".join(audio))

    async def _changer(self, user: str) -> _Changer:
        participant = self._room.participant(user)
        voice = participant.changer_voice
        if voice is None:
            if self._default is None:
                from pipeline.voice_changer import resolve_changer_voice

                self._default = await resolve_changer_voice(self._engine, None, self._params.default_voice)
            voice = self._default
        changer = self._changers.get(user)
        if changer is not None and changer.target != voice.key:
            await self._flush(user)  # their voice changed: finish the stretch in the old one
            changer.stream.close()
            changer = None
        if changer is None:
            stream = await self.engine_call(self._engine.open_stream, voice.embedding, timeout_s=self.timeouts.base_s)
            previous = self._changers.get(user)
            changer = self._changers[user] = _Changer(stream, voice.key)
            if previous is not None:
                changer.position = changer.emitted = previous.position
            logger.info(f"voice changer for {user}: {voice.key} (latency {stream.latency_s * 1000:.0f} ms)")
        return changer

    async def _convert(self, user: str, pcm_bytes: bytes) -> None:
        if not pcm_bytes:
            return
        changer = await self._changer(user)
        pcm = np.frombuffer(pcm_bytes, dtype=np.int16)
        changer.last_audio = time.monotonic()
        changer.position += len(pcm) / _RATE
        changer.buffered = True
        chunks = await self.engine_call(changer.stream.feed, pcm, timeout_s=self.timeouts.for_audio(len(pcm) / _RATE))
        for chunk in chunks:
            await self._emit(user, changer, chunk)

    async def _flush(self, user: str) -> None:
        changer = self._changers.get(user)
        if changer is None or not changer.buffered:
            return
        chunks = await self.engine_call(changer.stream.flush, timeout_s=self.timeouts.base_s)
        for chunk in chunks:
            await self._emit(user, changer, chunk)
        # Whatever the resampler kept, the output clock follows the input's from here
        # (and only from here does audio passing by in interpret mode move the clocks).
        changer.emitted = changer.position
        changer.buffered = False
        await self._end_stretch(changer)

    async def _emit(self, user: str, changer: _Changer, chunk: np.ndarray) -> None:
        rate = self._engine.sample_rate
        seconds = len(chunk) / rate
        offset = changer.emitted
        changer.emitted += seconds
        floats = chunk.astype(np.float32)
        loud = len(chunk) > 0 and float(np.dot(floats, floats)) / len(chunk) >= self._quiet_level
        if changer.stretch is None:
            if not loud:
                return
            stretch = changer.stretch = Utterance(
                user_id=user, language=self._room.language_of(user), start=offset, end=offset, kind="voice"
            )
            spoken = self._room.spoken_at(user, offset)
            stretch.mark("speech_end", spoken if spoken is not None else time.monotonic())
            changer.quiet = 0.0
            await self.push_frame(TranslationsDoneFrame(stretch, {VOICE_CHANGED: ""}))
        stretch = changer.stretch
        changer.quiet = 0.0 if loud else changer.quiet + seconds
        stretch.end = offset + seconds
        stretch.mark("first_tts_audio")
        await self.push_frame(
            VoiceChangedAudioFrame(
                audio=chunk.tobytes(), sample_rate=rate, num_channels=1, utterance=stretch,
                target_language=VOICE_CHANGED, offset=offset,
            )
        )
        if changer.quiet * 1000 >= self._params.gap_ms or stretch.end - stretch.start >= self._params.max_stretch_s:
            await self._end_stretch(changer)

    async def _end_stretch(self, changer: _Changer) -> None:
        stretch, changer.stretch = changer.stretch, None
        if stretch is not None:
            stretch.mark("tts_done")
            await self.push_frame(InterpretationDoneFrame(stretch, VOICE_CHANGED))

    async def _watch_idle(self) -> None:
        """Someone whose audio stopped (Discord sends none in silence) is heard to the end."""
        while True:
            await asyncio.sleep(self._params.idle_flush_ms / 2000)
            now = time.monotonic()
            for user, changer in list(self._changers.items()):
                if changer.buffered and now - changer.last_audio >= self._params.idle_flush_ms / 1000:
                    changer.last_audio = now
                    await self._enqueue(_FlushFrame(user_id=user))

    async def on_end(self) -> None:
        for user in list(self._changers):
            await self._flush(user)

    # -- ParticipantState (pipeline.participants) -----------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._changers or super().holds_participant(user_id)

    async def flush_participant(self, user_id: str) -> None:
        if user_id in self._changers:
            await self._flush(user_id)

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        changer = self._changers.pop(user_id, None)
        if changer is not None:
            changer.stream.close()
