"""Results stage: one ``InterpretationResultFrame`` per utterance, once it is finished."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.frames import (
    CaptionFrame,
    InterpretationDoneFrame,
    InterpretationResult,
    InterpretationResultFrame,
    TranslationsDoneFrame,
    Utterance,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
)

__all__ = ["InterpretationResultProcessor"]


@dataclass
class _Open:
    utterance: Utterance
    transcript: str = ""
    translations: dict[str, str] | None = None
    spoken: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)
    captioned: bool = False
    seen: float = field(default_factory=time.monotonic)


class InterpretationResultProcessor(FrameProcessor):
    """The last stage of the cascade: says when each utterance is finished.

    It watches the frames every stage already sends (transcript, the MT stage's
    ``TranslationsDoneFrame``, one ``InterpretationDoneFrame`` per language, and
    ``UtteranceDroppedFrame``), forwards all of them, and pushes one
    ``InterpretationResultFrame`` per utterance once its interpretation into every
    language has ended (or a stage dropped it). An utterance dropped after its transcript
    was captioned gets its final caption here, so no reader waits on a partial one. Transports, file mode and metrics read
    results from that frame instead of from shared state.

    Args:
        max_open_s: An utterance still unfinished after this long is closed as dropped,
            so a frame lost to a bug can never grow this table forever.
    """

    def __init__(self, *, max_open_s: float = 300.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_open_s = max_open_s
        self._open: dict[int, _Open] = {}

    @property
    def open_utterances(self) -> int:
        """Utterances seen but not finished yet."""
        return len(self._open)

    def holds_participant(self, user_id: str) -> bool:
        return any(o.utterance.user_id == user_id for o in self._open.values())

    def participant_busy(self, user_id: str) -> bool:
        # An open utterance is interpretation still under way somewhere before this stage.
        return self.holds_participant(user_id)

    async def flush_participant(self, user_id: str) -> None:
        """Nothing buffered: results come when the stages before are done."""

    async def release_participant(self, user_id: str) -> None:
        """Close what is still open of a departed participant as dropped."""
        for entry in [o for o in self._open.values() if o.utterance.user_id == user_id]:
            await self._finish(entry, ("session", "participant left"))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        utterance: Utterance | None = getattr(frame, "utterance", None)
        if utterance is None or not isinstance(
            frame,
            (UtteranceTranscriptionFrame, TranslationsDoneFrame, InterpretationDoneFrame, UtteranceDroppedFrame, CaptionFrame),
        ):
            return
        entry = self._open.get(utterance.id)
        if isinstance(frame, CaptionFrame):
            # Partial captions come before an utterance exists for us (and may never
            # lead to one); only a final caption of a known utterance matters here.
            if entry is not None:
                entry.captioned = entry.captioned or frame.final
            return
        if entry is None:
            entry = self._open[utterance.id] = _Open(utterance)
            await self._expire()
        if isinstance(frame, UtteranceTranscriptionFrame):
            entry.transcript = frame.text
            entry.utterance = utterance  # the record the stages stamp (a released attempt)
        elif isinstance(frame, TranslationsDoneFrame):
            entry.translations = dict(frame.translations)
        elif isinstance(frame, InterpretationDoneFrame):
            entry.settled.add(frame.target_language)
            if frame.error is None:
                entry.spoken.add(frame.target_language)
        elif isinstance(frame, UtteranceDroppedFrame):
            await self._finish(entry, (frame.stage, frame.reason))
            return
        if entry.translations is not None and set(entry.translations) <= entry.settled:
            await self._finish(entry, None)

    async def _finish(self, entry: _Open, dropped: tuple[str, str] | None) -> None:
        if self._open.pop(entry.utterance.id, None) is None:
            return
        result = InterpretationResult(
            utterance=entry.utterance,
            transcript=entry.transcript,
            translations=dict(entry.translations or {}),
            spoken=tuple(sorted(entry.spoken)),
            dropped=dropped,
        )
        u = entry.utterance
        if dropped is not None and entry.transcript and not entry.captioned:
            # Readers saw a partial caption: close it, with whatever was translated.
            await self.push_frame(CaptionFrame(u, entry.transcript, dict(entry.translations or {}), final=True))
        if dropped is None:
            latency = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in u.latencies().items())
            logger.info(f"utterance {u.id} of {u.user_id} done ({', '.join(result.spoken) or 'no audio'}): {latency}")
        await self.push_frame(InterpretationResultFrame(result))

    async def _expire(self) -> None:
        now = time.monotonic()
        for entry in [o for o in self._open.values() if now - o.seen > self._max_open_s]:
            logger.warning(f"utterance {entry.utterance.id} of {entry.utterance.user_id} never finished; closing it")
            await self._finish(entry, ("session", f"unfinished after {self._max_open_s:.0f} s"))
