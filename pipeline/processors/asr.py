"""ASR stage: utterance audio → transcript."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from pipeline.engines.base import ASREngine, Transcript
from pipeline.frames import (
    CaptionFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
)
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.text import restore_punctuation

__all__ = ["ASRProcessor", "as_language"]


def as_language(code: str) -> Language | None:
    """pipecat's ``Language`` for an ISO code, or ``None`` when it has none."""
    try:
        return Language(code)
    except ValueError:
        return None


class ASRProcessor(UserLaneProcessor):
    """Transcribes each ``UtteranceAudioFrame`` in the speaker's language.

    Pushes the audio frame on (voice capture downstream wants it), then an
    ``UtteranceTranscriptionFrame`` and a first, untranslated ``CaptionFrame``. Engines that output bare lowercase words get
    casing and punctuation restored, so MT sees sentences. An utterance with no
    words is dropped with ``UtteranceDroppedFrame``.

    Args:
        engine: The shared ASR engine.
        warn_slow: Log a warning when recognition is slower than real time.
    """

    handles: tuple[type[Frame], ...] = (UtteranceAudioFrame,)

    def __init__(self, engine: ASREngine, *, warn_slow: bool = True, **kwargs: Any) -> None:
        super().__init__(stage="asr", **kwargs)
        self._engine = engine
        self._warn_slow = warn_slow

    async def handle(self, frame: Frame) -> None:
        assert isinstance(frame, UtteranceAudioFrame)
        await self.push_frame(frame)
        await self.recognise_whole(frame)

    async def recognise_whole(self, frame: UtteranceAudioFrame) -> None:
        """Transcribe a whole utterance and send its transcript on (or drop it: no words)."""
        utterance = frame.utterance
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        started = time.monotonic()
        audio_seconds = len(pcm) / frame.sample_rate
        transcript = await self.engine_call(
            self._engine.transcribe, pcm, frame.sample_rate, utterance.language,
            timeout_s=self.timeouts.for_audio(audio_seconds),
        )
        compute = time.monotonic() - started
        utterance.add_compute("asr", compute)
        if self._warn_slow and compute > audio_seconds:
            logger.warning(
                f"asr is slower than real time: {compute:.2f} s for {audio_seconds:.2f} s of audio"
            )
        text = self.clean(transcript, utterance.language)
        utterance.mark("asr_done")
        if not text:
            await self.push_frame(UtteranceDroppedFrame(utterance, "asr", "no words recognised"))
            return
        await self.send_transcript(utterance, text)

    @staticmethod
    def clean(transcript: Transcript, language: str) -> str:
        """The transcript as text for MT and captions: punctuated where the engine is not."""
        text = transcript.text.strip()
        if text and not transcript.punctuated:
            text = restore_punctuation(text, language)
        return text

    async def send_transcript(self, utterance: Utterance, text: str, *, caption: bool = True) -> None:
        """Send an utterance's final transcript on (and its first, untranslated caption)."""
        logger.info(f"[{utterance.user_id} {utterance.language}] {text}")
        await self.push_frame(
            UtteranceTranscriptionFrame(
                text=text,
                user_id=utterance.user_id,
                timestamp=time_now_iso8601(),
                language=as_language(utterance.language),
                finalized=True,
                utterance=utterance,
            )
        )
        if caption:
            await self.push_frame(CaptionFrame(utterance, text))
