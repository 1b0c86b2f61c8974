"""Non-verbal sounds carried through: classified candidates become sound in the
interpretation stream, captioned ``[laughs]``."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601

from pipeline.audio import resample
from pipeline.engines.base import AudioEventEngine, VoiceConversionEngine
from pipeline.engines.calls import EngineCaller, StageTimeouts
from pipeline.frames import (
    CaptionFrame,
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    SoundCandidateFrame,
    TranslationsDoneFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
)
from pipeline.nonverbal import NonverbalParams, caption_text, event_kind
from pipeline.processors.asr import as_language
from pipeline.room import Room

__all__ = ["NonverbalProcessor"]

#: Utterance audio kept per participant, to classify it if no words are found in it.
_KEEP_UTTERANCES = 8
_RATE = 16000


@dataclass
class _Candidate:
    user_id: str
    start: float
    end: float
    audio: np.ndarray


@dataclass
class _Event:
    utterance: Utterance
    kind: str
    audio: np.ndarray  # at the output rate
    ready: float = field(default_factory=time.monotonic)


@dataclass
class _Open:
    """An utterance of someone whose interpretation has not started in every language."""

    utterance: Utterance
    expected: set[str] | None = None
    started: set[str] = field(default_factory=set)

    @property
    def settled(self) -> bool:
        return self.expected is not None and self.expected <= self.started


class NonverbalProcessor(FrameProcessor):
    """Classifies non-verbal sound candidates and places the sounds among the interpretations.

    Candidates are the loud stretches the gate beside the VAD reported
    (``SoundCandidateFrame``) and utterances in which the recogniser found no words.
    Everything waiting is classified in one batch (the classifier runs in its own
    thread, off the event loop). A candidate the classifier calls one of the room's
    kinds becomes an utterance of kind ``nonverbal``: its caption (``[laughs]``, in every
    language), and its sound as the interpretation into every language the speaker is
    interpreted into: the original sound, or, for someone who refused voice cloning
    when a voice-conversion engine is loaded, converted into the neutral voice their
    interpretation speaks in.

    Placed after the speculation gate, it releases an event only once the
    interpretations of what the same participant said before it have started, so the
    sound is heard where it happened (transports that order by speech end do so too).

    Args:
        engine: The audio-event classifier.
        room: Languages, voices and whether the room wants non-verbal sounds.
        params: Kinds, threshold, waits.
        output_rate: Sample rate of the interpretation audio (the TTS engine's).
        converter: A voice-conversion engine, for those who refused cloning.
        timeouts: Deadline of a classification.
    """

    def __init__(
        self,
        engine: AudioEventEngine,
        room: Room,
        params: NonverbalParams | None = None,
        *,
        output_rate: int = 24000,
        converter: VoiceConversionEngine | None = None,
        timeouts: StageTimeouts | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._room = room
        self._params = params or NonverbalParams()
        self._rate = output_rate
        self._converter = converter
        self._timeouts = timeouts or StageTimeouts()
        self._call = EngineCaller("events", 1)
        self._audio: dict[str, deque[UtteranceAudioFrame]] = {}
        self._open: dict[str, dict[int, _Open]] = {}
        self._waiting: list[_Candidate] = []
        self._events: dict[str, list[_Event]] = {}
        self._wake = asyncio.Event()
        self._classifying = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._busy = 0
        #: Events placed so far, by kind (for logs and tests).
        self.placed: dict[str, int] = {}

    # -- ParticipantState (pipeline.participants) -----------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return bool(self._audio.get(user_id) or self._open.get(user_id) or self._events.get(user_id)) or any(
            c.user_id == user_id for c in self._waiting
        )

    def participant_busy(self, user_id: str) -> bool:
        return any(c.user_id == user_id for c in self._waiting) or bool(self._events.get(user_id)) or self._busy > 0

    async def flush_participant(self, user_id: str) -> None:
        """Their candidates are classified and placed as usual (nothing waits on them)."""
        for entry in self._open.get(user_id, {}).values():
            entry.expected = entry.expected or set()
            entry.started |= entry.expected
        await self._release(user_id)

    async def release_participant(self, user_id: str) -> None:
        self._audio.pop(user_id, None)
        self._open.pop(user_id, None)
        self._events.pop(user_id, None)
        self._waiting = [c for c in self._waiting if c.user_id != user_id]

    # -- frames ---------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, SoundCandidateFrame):
            self._candidate(_Candidate(frame.user_id, frame.start, frame.end, np.frombuffer(frame.audio, np.int16)))
            return  # consumed: nothing after us wants it
        if isinstance(frame, EndFrame):
            await self._finish_all()
        elif isinstance(frame, CancelFrame):
            await self._stop_worker()
        await self.push_frame(frame, direction)
        await self._watch(frame)

    async def cleanup(self) -> None:
        await self._stop_worker()
        await super().cleanup()

    async def _watch(self, frame: Frame) -> None:
        utterance: Utterance | None = getattr(frame, "utterance", None)
        if utterance is None or utterance.kind != "speech":
            return
        user = utterance.user_id
        opened = self._open.setdefault(user, {})
        if isinstance(frame, UtteranceAudioFrame):
            kept = self._audio.setdefault(user, deque(maxlen=_KEEP_UTTERANCES))
            kept.append(frame)
            if frame.interpreted:
                opened.setdefault(utterance.id, _Open(utterance))
            return
        if isinstance(frame, UtteranceDroppedFrame):
            opened.pop(utterance.id, None)
            if frame.stage == "asr" and "no words" in frame.reason and self._room.nonverbal:
                audio = self._audio_of(utterance)
                if audio is not None and self._room.mode_of(user) != "voice":
                    self._candidate(_Candidate(user, utterance.start, utterance.end, audio))
        elif isinstance(frame, UtteranceTranscriptionFrame):
            opened.setdefault(utterance.id, _Open(utterance)).utterance = utterance
        elif isinstance(frame, TranslationsDoneFrame):
            opened.setdefault(utterance.id, _Open(utterance)).expected = set(frame.translations)
        elif isinstance(frame, (InterpretationAudioFrame, InterpretationDoneFrame)):
            entry = opened.get(utterance.id)
            if entry is not None:
                entry.started.add(frame.target_language)
        else:
            return
        for key in [k for k, o in opened.items() if o.settled]:
            del opened[key]
        while len(opened) > 64:  # an utterance whose frames were lost must not stay forever
            del opened[next(iter(opened))]
        await self._release(user)

    def _audio_of(self, utterance: Utterance) -> np.ndarray | None:
        """The audio of an utterance: its own frame, or (a streaming recogniser's
        utterances) the VAD's utterances overlapping it."""
        parts = []
        for frame in self._audio.get(utterance.user_id, ()):
            if frame.utterance.id == utterance.id:
                return np.frombuffer(frame.audio, dtype=np.int16)
            if frame.utterance.start < utterance.end and frame.utterance.end > utterance.start:
                parts.append(np.frombuffer(frame.audio, dtype=np.int16))
        return np.concatenate(parts) if parts else None

    # -- classification ---------------------------------------------------------------

    def _candidate(self, candidate: _Candidate) -> None:
        if not self._room.nonverbal:
            return
        self._waiting.append(candidate)
        if self._worker is None or self._worker.done():
            self._worker = self.create_task(self._classify_forever(), "nonverbal-classify")
        self._wake.set()

    async def _classify_forever(self) -> None:
        while True:
            if any(self._events.values()):
                # Events wait for earlier interpretations: look again now and then.
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.25)
                except TimeoutError:
                    pass
            else:
                await self._wake.wait()
            self._wake.clear()
            if self._waiting:
                await self._classify_waiting()
            for user in [u for u, events in self._events.items() if events]:
                await self._release(user)

    async def _classify_waiting(self) -> None:
        async with self._classifying:
            await self._classify_batch()

    async def _classify_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        self._busy += 1
        try:
            seconds = sum(len(c.audio) for c in batch) / _RATE
            try:
                results = await self._call(
                    self._engine.classify, [c.audio for c in batch], _RATE, timeout_s=self._timeouts.for_audio(seconds)
                )
            except Exception as exc:  # noqa: BLE001 - sounds are extras: never stop the room for them
                logger.warning(f"non-verbal classification of {len(batch)} candidates failed: {exc}")
                await self.push_error(f"non-verbal classification failed: {exc}", exception=exc)
                return
            for candidate, events in zip(batch, results, strict=True):
                found = event_kind(events, self._params.kinds, self._params.threshold)
                if found is not None:
                    await self._event(candidate, found[0], found[1])
        finally:
            self._busy -= 1
        for user in {c.user_id for c in batch}:
            await self._release(user)

    async def _event(self, candidate: _Candidate, kind: str, score: float) -> None:
        user = candidate.user_id
        participant = self._room.participants.get(user)
        utterance = Utterance(
            user_id=user,
            language=self._room.language_of(user),
            start=candidate.start,
            end=candidate.end,
            kind="nonverbal",
        )
        spoken = self._room.spoken_at(user, candidate.end)
        utterance.mark("speech_end", spoken if spoken is not None else time.monotonic())
        audio = candidate.audio
        rate = _RATE
        if participant is not None and participant.voice_opt_out and self._converter is not None:
            # Their interpretation speaks in a neutral voice: so does their laugh.
            converter = self._converter
            voice = converter.neutral_voice(converter.neutral_voices()[0])
            audio = await self._call(converter.convert, audio, _RATE, voice, timeout_s=self._timeouts.for_audio(len(audio) / _RATE))
            rate = converter.sample_rate
        if rate != self._rate:
            audio = resample(audio, rate, self._rate)
        logger.info(f"[{user}] {caption_text(kind)} ({score:.2f}) at {candidate.start:.2f}-{candidate.end:.2f} s")
        self._events.setdefault(user, []).append(_Event(utterance, kind, audio))

    # -- placing events in order ------------------------------------------------------------

    def _blocked(self, event: _Event) -> bool:
        if time.monotonic() - event.ready > self._params.max_wait_s:
            return False
        start = event.utterance.start
        return any(o.utterance.end <= start + 0.05 for o in self._open.get(event.utterance.user_id, {}).values())

    async def _release(self, user: str) -> None:
        events = self._events.get(user)
        while events:
            events.sort(key=lambda e: e.utterance.start)
            if self._blocked(events[0]):
                return  # the worker looks again (the wait has a limit)
            await self._place(events.pop(0))

    async def _place(self, event: _Event) -> None:
        utterance = event.utterance
        text = caption_text(event.kind)
        targets = self._room.targets_for(utterance.user_id)
        await self.push_frame(
            UtteranceTranscriptionFrame(
                text=text, user_id=utterance.user_id, timestamp=time_now_iso8601(),
                language=as_language(utterance.language), finalized=True, utterance=utterance,
            )
        )
        translations = {target: text for target in targets}
        await self.push_frame(CaptionFrame(utterance, text, dict(translations), final=True))
        await self.push_frame(TranslationsDoneFrame(utterance, dict(translations)))
        pcm = np.ascontiguousarray(event.audio, dtype=np.int16).tobytes()
        for target in targets:
            utterance.mark("first_tts_audio")
            await self.push_frame(
                InterpretationAudioFrame(
                    audio=pcm, sample_rate=self._rate, num_channels=1, utterance=utterance, target_language=target
                )
            )
            await self.push_frame(InterpretationDoneFrame(utterance, target))
        self.placed[event.kind] = self.placed.get(event.kind, 0) + 1

    async def _finish_all(self) -> None:
        """End of input: classify what waits, then place every event (nothing more will come)."""
        await self._classify_waiting()  # after any batch in progress
        for user in list(self._events):
            await self.flush_participant(user)
        await self._stop_worker()

    async def _stop_worker(self) -> None:
        if self._worker is not None:
            task, self._worker = self._worker, None
            await self.cancel_task(task)
