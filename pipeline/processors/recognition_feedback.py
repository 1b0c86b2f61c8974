"""After ASR: whether each utterance gave words, for language identification."""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.frames import UtteranceDroppedFrame, UtteranceTranscriptionFrame
from pipeline.processors.language_id import LanguageIDProcessor

__all__ = ["RecognitionFeedbackProcessor"]


class RecognitionFeedbackProcessor(FrameProcessor):
    """After ASR: tells the :class:`LanguageIDProcessor` whether each utterance gave words.

    Every frame passes straight through; a transcript counts as recognised, an utterance
    the ASR stage dropped (no words, or an error) as not.
    """

    def __init__(self, language_id: LanguageIDProcessor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._language_id = language_id

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            if isinstance(frame, UtteranceTranscriptionFrame) and frame.utterance is not None:
                self._language_id.recognition_result(frame.utterance.user_id, True)
            elif isinstance(frame, UtteranceDroppedFrame) and frame.stage == "asr":
                self._language_id.recognition_result(frame.utterance.user_id, False)
        await self.push_frame(frame, direction)
