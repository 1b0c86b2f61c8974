"""Spoken-language identification: the language of participants who speak ``auto``.

A participant whose language is ``"auto"`` (``languages.speaker: auto``, ``polyvox
translate --from auto``, a transport joining them with it) has it identified from their
speech, right before ASR:

* each of their utterances is identified by the ASR engine (``ASREngine.detect_language``,
  Whisper's language ID) among the languages the engine can transcribe, and the
  utterance is labelled with the result, so ASR transcribes it in that language;
* a detection counts only when it is confident (``threshold``); below that the
  utterance keeps the participant's language so far (or the fallback);
* the language **settles** (is no longer identified, which costs a model call per
  utterance) after one very confident detection (``settle_probability``) or ``agreeing``
  confident detections of the same language in a row;
* it is **re-checked** when recognition keeps failing in it (``recheck_after`` utterances
  in a row with no words or an ASR error, which
  :class:`~pipeline.processors.recognition_feedback.RecognitionFeedbackProcessor` reports
  from after ASR);
* the participant's language in the :class:`~pipeline.room.Room` follows (marked as
  identified, so captions and participant lists show it); an explicit setting (joining
  with a language, ``/language``) always wins and is never identified again; setting
  ``"auto"`` again starts over;
* an engine that cannot identify languages (NeMo, PocketSphinx) gets the fallback: the
  configured ``fallback``, else the room's default when it is a language, else English
  when the engine knows it, else the engine's first language.

Participants with a set language pass straight through (no queue, no model call).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.engines.base import ASREngine
from pipeline.frames import UtteranceAudioFrame
from pipeline.languages import display_name, is_auto, normalize
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room

__all__ = ["LanguageIDParams", "LanguageIDProcessor"]


@dataclass(frozen=True)
class LanguageIDParams:
    """How spoken languages are identified (``languages.identification`` in ``config.yaml``).

    Attributes:
        threshold: A detection at least this probable counts (labels the utterance and
            votes); below it the utterance keeps the participant's language so far.
        settle_probability: One detection this probable settles the language at once.
        agreeing: This many confident detections of one language in a row settle it.
        recheck_after: Recognition failing this many utterances in a row in an identified
            language reopens the question.
        fallback: The language assumed when the engine cannot identify languages, or
            before any confident detection (``None``: see the module doc).
        candidates: Identify only among these languages (empty: every language the ASR
            engine transcribes). Narrowing to the room's likely languages helps.
        min_speech_s: Utterances shorter than this may label themselves but never vote
            or settle (a one-word utterance is easily mistaken).
    """

    threshold: float = 0.5
    settle_probability: float = 0.85
    agreeing: int = 2
    recheck_after: int = 2
    fallback: str | None = None
    candidates: tuple[str, ...] = ()
    min_speech_s: float = 1.0


@dataclass
class _Speaker:
    """What has been learnt about one participant's language."""

    votes: list[str] = field(default_factory=list)
    settled: bool = False
    failures: int = 0


class LanguageIDProcessor(UserLaneProcessor):
    """Labels each ``UtteranceAudioFrame`` of an ``auto`` participant with its language.

    Args:
        engine: The shared ASR engine (its ``detect_language`` when it ``detects_language``).
        room: Whose language is ``auto``; receives the identified languages.
        params: Thresholds and fallback.
    """

    handles = (UtteranceAudioFrame,)

    def __init__(
        self, engine: ASREngine, room: Room, params: LanguageIDParams | None = None, **kwargs: Any
    ) -> None:
        super().__init__(stage="lid", **kwargs)
        self._engine = engine
        self._room = room
        self.params = params or LanguageIDParams()
        self._speakers: dict[str, _Speaker] = {}
        self._told_no_detection = False

    # -- what needs identifying --------------------------------------------------------

    def needs_identification(self, user_id: str) -> bool:
        """Whether ``user_id``'s next utterance is identified (their language is ``auto``,
        or was identified and has not settled)."""
        participant = self._room.participants.get(user_id)
        language = participant.language if participant is not None else self._room.default_language
        if is_auto(language):
            return True
        if participant is None or not participant.language_detected:
            return False
        speaker = self._speakers.get(user_id)
        return speaker is None or not speaker.settled

    def settled_language(self, user_id: str) -> str | None:
        """The language identified for ``user_id`` once it has settled, else ``None``."""
        speaker = self._speakers.get(user_id)
        participant = self._room.participants.get(user_id)
        if speaker is None or not speaker.settled or participant is None:
            return None
        return participant.language if participant.language_detected else None

    # -- pipecat ---------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if (
            direction is FrameDirection.DOWNSTREAM
            and isinstance(frame, UtteranceAudioFrame)
            and not self.participant_busy(frame.user_id)
            and not self.needs_identification(frame.user_id)
        ):
            # A known language costs nothing: no queue hop (nothing of theirs is queued
            # here, so the order of their utterances is kept).
            await FrameProcessor.process_frame(self, frame, direction)
            self._label_known(frame)
            await self.push_frame(frame, direction)
            return
        await super().process_frame(frame, direction)

    async def handle(self, frame: Frame) -> None:
        assert isinstance(frame, UtteranceAudioFrame)
        if self.needs_identification(frame.user_id):
            frame.utterance.language = await self._identify(frame)
        else:
            self._label_known(frame)
        await self.push_frame(frame)

    # -- recognition feedback (RecognitionFeedbackProcessor) ---------------------------

    def recognition_result(self, user_id: str, recognised: bool) -> None:
        """ASR found words in an utterance of ``user_id`` (or did not, or failed)."""
        speaker = self._speakers.get(user_id)
        participant = self._room.participants.get(user_id)
        if speaker is None or participant is None or not participant.language_detected:
            return
        if recognised:
            speaker.failures = 0
            return
        speaker.failures += 1
        if (
            speaker.settled
            and speaker.failures >= self.params.recheck_after
            and self._engine.detects_language
        ):
            logger.info(
                f"{user_id}: nothing recognised in {speaker.failures} utterances in "
                f"{participant.language}; identifying their language again"
            )
            speaker.settled = False
            speaker.votes.clear()
            speaker.failures = 0

    # -- ParticipantState ------------------------------------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._speakers or super().holds_participant(user_id)

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        self._speakers.pop(user_id, None)

    # -- internals -------------------------------------------------------------------

    def _label_known(self, frame: UtteranceAudioFrame) -> None:
        """A participant with a set (or settled) language: label the utterance with it."""
        participant = self._room.participants.get(frame.user_id)
        if participant is None:  # already gone: keep the label the segmenter gave
            return
        if not participant.language_detected:
            self._speakers.pop(frame.user_id, None)  # set explicitly: forget what was learnt
        frame.utterance.language = participant.language

    async def _identify(self, frame: UtteranceAudioFrame) -> str:
        user = frame.user_id
        participant = self._room.participant(user)
        if is_auto(participant.language):
            # New, or asked to identify again: start over.
            self._speakers.pop(user, None)
        speaker = self._speakers.setdefault(user, _Speaker())
        tentative = participant.language if participant.language_detected else None
        if not self._engine.detects_language:
            language = self._fallback()
            if not self._told_no_detection:
                self._told_no_detection = True
                logger.info(
                    f"asr engine '{self._engine.name}' cannot identify spoken languages: "
                    f"participants who speak 'auto' are taken to speak {_name(language)}"
                )
            speaker.settled = True  # nothing more to learn
            self._room.set_detected_language(user, language)
            return language

        ranking = await self._detect(frame)
        allowed = self._allowed()
        best = next(((code, p) for code, p in ranking if code in allowed), None)
        seconds = len(frame.audio) / 2 / frame.sample_rate
        if best is not None and best[1] >= self.params.threshold:
            language, probability = best
            if seconds >= self.params.min_speech_s:
                speaker.votes.append(language)
                streak = speaker.votes[-self.params.agreeing :]
                if probability >= self.params.settle_probability or (
                    len(streak) >= self.params.agreeing and len(set(streak)) == 1
                ):
                    speaker.settled = True
                    speaker.failures = 0
                    logger.info(
                        f"{user} speaks {_name(language)} (identified from speech, "
                        f"p={probability:.2f} after {len(speaker.votes)} utterance(s))"
                    )
        else:
            language = tentative or self._fallback()
        logger.debug(
            f"utterance {frame.utterance.id} of {user}: {language} "
            f"(best {best[0] if best else '-'} p={best[1] if best else 0:.2f}, {seconds:.1f} s)"
        )
        self._room.set_detected_language(user, language)
        return language

    async def _detect(self, frame: UtteranceAudioFrame) -> list[tuple[str, float]]:
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        started = time.monotonic()
        try:
            ranking = await asyncio.to_thread(self._engine.detect_language, pcm, frame.sample_rate)
        except Exception as exc:  # noqa: BLE001 - identification failing must not cost the utterance
            logger.warning(f"language identification failed for utterance {frame.utterance.id}: {exc}")
            return []
        finally:
            frame.utterance.add_compute("lid", time.monotonic() - started)
        return [(normalize(code, strict=False), float(p)) for code, p in ranking]

    def _allowed(self) -> frozenset[str]:
        recognised = frozenset(self._engine.languages)
        if self.params.candidates:
            return recognised & {normalize(c, strict=False) for c in self.params.candidates}
        return recognised

    def _fallback(self) -> str:
        if self.params.fallback:
            return normalize(self.params.fallback, strict=False)
        recognised = self._engine.languages
        default = self._room.default_language
        if not is_auto(default) and default in recognised:
            return default
        if "en" in recognised or not recognised:
            return "en"
        return min(recognised)


def _name(code: str) -> str:
    try:
        return f"{display_name(code)} ('{code}')"
    except Exception:  # noqa: BLE001 - a code the registry lacks is named by itself
        return f"'{code}'"
