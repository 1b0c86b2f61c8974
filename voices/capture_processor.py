"""The cascade stage that gives each participant their cloned voice as they speak."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.engines.base import VADEngine
from pipeline.engines.calls import EngineCaller
from pipeline.frames import UtteranceAudioFrame, VoiceConsentFrame
from pipeline.room import Room
from voices.capture import VoiceCapture, VoiceCaptureParams
from voices.profile import VoiceCloner

if TYPE_CHECKING:
    from voices.consent import VoiceConsent

__all__ = ["VoiceCaptureProcessor"]


class VoiceCaptureProcessor(FrameProcessor):
    """Watches each participant's ``UtteranceAudioFrame`` and sets their voice profile.

    Sits after ASR (which passes the utterance audio on). Every frame is forwarded at
    once; the capture work (VAD scoring, model conditioning) runs in worker threads,
    in order per participant, so no utterance waits for it.

    For each participant, in order of precedence:

    * opted out (the participant's ``voice_opt_out`` flag, or the consent policy says
      their identity refused): nothing is captured, anything captured is dropped, and
      their voice is reset to ``None`` (the neutral voice);
    * an enrolled profile (loaded at join, or set during the session): it is their voice;
      nothing is captured;
    * otherwise their first clean utterances are captured (:class:`VoiceCapture`) and
      ``room.participants[user].voice`` is set to each new version of the profile.

    A ``VoiceConsentFrame`` refusing cloning (or asking to forget) discards the
    participant's capture at once, even while a profile is being computed.

    Args:
        engine: The cloning TTS engine that computes voices (``XTTSEngine``).
        vad: VAD engine that measures the speech in each utterance.
        room: This room's participants; their ``voice`` is what TTS speaks in.
        consent: The consent policy (``voices.consent.VoiceConsent``): opt-outs and
            enrolled voices by participant identity.
        params: Capture targets and thresholds.
    """

    def __init__(
        self,
        engine: VoiceCloner,
        vad: VADEngine,
        room: Room,
        *,
        consent: VoiceConsent | None = None,
        params: VoiceCaptureParams | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._vad = vad
        self._room = room
        self._consent = consent
        self._params = params or VoiceCaptureParams()
        self._captures: dict[str, VoiceCapture] = {}
        #: Users whose capture is complete.
        self._settled: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[asyncio.Task[None], str] = {}
        #: Bumped whenever a user's capture is discarded: work started before is stale.
        self._epochs: dict[str, int] = {}
        self._call = EngineCaller("voice-capture", concurrency=2)

    def capture_of(self, user_id: str) -> VoiceCapture | None:
        """The capture in progress for ``user_id``, if any (for status commands and tests)."""
        return self._captures.get(user_id)

    # -- ParticipantState (pipeline.participants) -----------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._captures or user_id in self._settled or user_id in self._locks

    def participant_busy(self, user_id: str) -> bool:
        return any(user == user_id and not task.done() for task, user in self._tasks.items())

    async def flush_participant(self, user_id: str) -> None:
        """A capture of someone leaving is never finished: nothing to push."""

    async def release_participant(self, user_id: str) -> None:
        """Discard everything captured from ``user_id`` (their audio and unfinished profile)."""
        self._discard(user_id)
        for task, user in list(self._tasks.items()):
            if user == user_id:
                await self.cancel_task(task)
        self._locks.pop(user_id, None)
        self._epochs.pop(user_id, None)

    # -- frames ------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame):
            await self._finish_tasks(cancel=False)
        elif isinstance(frame, CancelFrame):
            await self._finish_tasks(cancel=True)
        elif isinstance(frame, VoiceConsentFrame) and (frame.forget or not frame.allowed):
            self._discard(frame.user_id)
            logger.info(f"voice capture of {frame.user_id} discarded ({'forget' if frame.forget else 'opt-out'})")
        await self.push_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, UtteranceAudioFrame):
            task = self.create_task(self._observe(frame), f"voice-capture-{frame.user_id}")
            self._tasks[task] = frame.user_id
            task.add_done_callback(lambda t: self._tasks.pop(t, None))

    async def cleanup(self) -> None:
        await self._finish_tasks(cancel=True)
        await super().cleanup()

    def _discard(self, user: str) -> None:
        self._captures.pop(user, None)
        self._settled.discard(user)
        self._epochs[user] = self._epochs.get(user, 0) + 1

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
        participant = self._room.participants.get(user)
        if participant is None:
            return  # left the room before their last utterance got here
        epoch = self._epochs.get(user, 0)
        identity = participant.identity
        if participant.voice_opt_out or (
            self._consent is not None and not await self._consent.allowed(identity)
        ):
            if self._captures.pop(user, None) is not None or participant.voice is not None:
                logger.info(f"{user} opted out of voice cloning: neutral voice, capture dropped")
            participant.voice = None
            self._settled.discard(user)
            return
        if getattr(participant.voice, "source", None) == "enrolled":
            # Enrolled (at join, or by a command mid-session): it wins over capture.
            self._captures.pop(user, None)
            return
        if user in self._settled and participant.voice is not None:
            return
        capture = self._captures.get(user)
        if capture is None:
            enrolled = await self._consent.enrolled_voice(identity) if self._consent is not None else None
            if enrolled is not None:
                participant.voice = enrolled
                logger.info(f"{user} speaks in their enrolled voice (v{enrolled.version})")
                return
            capture = self._captures[user] = VoiceCapture(user, self._vad, self._params)
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        due = await self._call(capture.add, pcm, frame.sample_rate, timeout_s=30.0)
        if not due:
            return
        # Conditioning runs the voice model: minutes on a slow CPU are still a result.
        profile = await self._call(capture.build, self._engine, timeout_s=300.0)
        if self._epochs.get(user, 0) != epoch or participant.voice_opt_out:
            return  # refused (or forgotten) while the model worked: keep nothing
        if getattr(participant.voice, "source", None) == "enrolled":
            self._captures.pop(user, None)  # enrolled while the model worked
            return
        if profile is not None:
            participant.voice = profile
        if capture.done:
            self._settled.add(user)

    async def _finish_tasks(self, *, cancel: bool) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            if cancel:
                await self.cancel_task(task)
            else:
                await task
