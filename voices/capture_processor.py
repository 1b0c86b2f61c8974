"""The cascade stage that gives each participant their cloned voice as they speak."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.engines.base import VADEngine
from pipeline.frames import UtteranceAudioFrame
from pipeline.room import Room
from voices.capture import VoiceCapture, VoiceCaptureParams
from voices.profile import VoiceCloner
from voices.store import VoiceStore

__all__ = ["VoiceCaptureProcessor"]


class VoiceCaptureProcessor(FrameProcessor):
    """Watches each participant's ``UtteranceAudioFrame`` and sets their voice profile.

    Sits after ASR (which passes the utterance audio on). Every frame is forwarded at
    once; the capture work (VAD scoring, model conditioning) runs in worker threads,
    in order per participant, so no utterance waits for it.

    For each participant, in order of precedence:

    * opted out (the room participant's ``voice_opt_out`` flag, the store's opt-out,
      or ``opted_out(user_id)``): nothing is captured, anything captured is dropped,
      and their voice is reset to ``None`` (the neutral voice);
    * an enrolled profile (in the store, or set on the participant by a command during
      the session): it is their voice; nothing is captured;
    * otherwise their first clean utterances are captured (:class:`VoiceCapture`) and
      ``room.participants[user].voice`` is set to each new version of the profile.

    Args:
        engine: The cloning TTS engine that computes voices (``XTTSEngine``).
        vad: VAD engine that measures the speech in each utterance.
        room: This room's participants; their ``voice`` is what TTS speaks in.
        store: Enrolled profiles and opt-outs, if voices are persisted.
        params: Capture targets and thresholds.
        opted_out: Another source of opt-outs (e.g. the Discord bot's guild settings);
            blocking calls are fine, it runs in a worker thread.
    """

    def __init__(
        self,
        engine: VoiceCloner,
        vad: VADEngine,
        room: Room,
        *,
        store: VoiceStore | None = None,
        params: VoiceCaptureParams | None = None,
        opted_out: Callable[[str], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._vad = vad
        self._room = room
        self._store = store
        self._params = params or VoiceCaptureParams()
        self._opted_out = opted_out
        self._captures: dict[str, VoiceCapture] = {}
        #: Users whose capture is complete.
        self._settled: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def capture_of(self, user_id: str) -> VoiceCapture | None:
        """The capture in progress for ``user_id``, if any (for status commands and tests)."""
        return self._captures.get(user_id)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame):
            await self._finish_tasks(cancel=False)
        elif isinstance(frame, CancelFrame):
            await self._finish_tasks(cancel=True)
        await self.push_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, UtteranceAudioFrame):
            task = self.create_task(self._observe(frame), f"voice-capture-{frame.user_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def cleanup(self) -> None:
        await self._finish_tasks(cancel=True)
        await super().cleanup()

    async def _observe(self, frame: UtteranceAudioFrame) -> None:
        user = frame.user_id
        # One participant's utterances are handled in arrival order (asyncio locks are fair).
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            try:
                await self._capture(user, frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - capture must never stop the room
                logger.opt(exception=exc).warning(f"voice capture of {user} failed: {exc}")
                await self.push_error(f"voice capture of {user} failed: {exc}", exception=exc)

    async def _capture(self, user: str, frame: UtteranceAudioFrame) -> None:
        participant = self._room.participant(user)
        store = self._store
        if getattr(participant, "voice_opt_out", False) or await asyncio.to_thread(self._refused, user):
            if self._captures.pop(user, None) is not None or participant.voice is not None:
                logger.info(f"{user} opted out of voice cloning: neutral voice, capture dropped")
            participant.voice = None
            self._settled.discard(user)
            return
        if getattr(participant.voice, "source", None) == "enrolled":
            # Enrolled (from the store, or by a command mid-session): it wins over capture.
            self._captures.pop(user, None)
            return
        if user in self._settled and participant.voice is not None:
            return
        capture = self._captures.get(user)
        if capture is None:
            enrolled = await asyncio.to_thread(store.get, user) if store is not None else None
            if enrolled is not None:
                participant.voice = enrolled
                logger.info(f"{user} speaks in their enrolled voice (v{enrolled.version})")
                return
            capture = self._captures[user] = VoiceCapture(user, self._vad, self._params)
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        due = await asyncio.to_thread(capture.add, pcm, frame.sample_rate)
        if not due:
            return
        profile = await asyncio.to_thread(capture.build, self._engine)
        if getattr(participant.voice, "source", None) == "enrolled":
            self._captures.pop(user, None)  # enrolled while the model worked
            return
        if profile is not None:
            participant.voice = profile
        if capture.done:
            self._settled.add(user)

    def _refused(self, user: str) -> bool:
        """Whether the store or the extra source says ``user`` opted out (blocking)."""
        if self._store is not None and self._store.is_opted_out(user):
            return True
        return self._opted_out is not None and self._opted_out(user)

    async def _finish_tasks(self, *, cancel: bool) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            if cancel:
                await self.cancel_task(task)
            else:
                await task
