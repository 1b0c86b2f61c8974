"""Speculation gate: speculative interpretations wait here until the hang-over confirms them."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.frames import SpeculationAbortedFrame, Utterance, UtteranceCommittedFrame

__all__ = ["SpeculationGateProcessor"]

_Key = tuple[int, int]


class SpeculationGateProcessor(FrameProcessor):
    """Holds every frame of a speculative attempt until it is committed or aborted.

    The ASR stage sends a speculative attempt (``Utterance.speculative``) down the
    cascade at a pause; MT and TTS work on it as usual. Its frames (captions, audio,
    results) stop here: an ``UtteranceCommittedFrame`` releases them in order (and lets
    later ones straight through), a ``SpeculationAbortedFrame`` drops them (and later
    ones). So a listener never hears an interpretation of words the speaker then
    continued, and hears a confirmed one the moment the hang-over ends. The release time
    is the utterance's ``released`` mark.

    Args:
        max_remembered: How many decided attempts are remembered (frames of an attempt
            can still arrive after it was decided).
    """

    def __init__(self, *, max_remembered: int = 4096, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held: dict[_Key, list[tuple[Frame, FrameDirection]]] = {}
        self._decided: OrderedDict[_Key, bool] = OrderedDict()
        self._max_remembered = max_remembered

    @property
    def held(self) -> int:
        """Frames waiting for a decision."""
        return sum(len(frames) for frames in self._held.values())

    # -- ParticipantState ----------------------------------------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return any(frames and _user(frames[0][0]) == user_id for frames in self._held.values())

    def participant_busy(self, user_id: str) -> bool:
        return False  # decisions come from upstream; held frames are not work

    async def flush_participant(self, user_id: str) -> None:
        """Undecided attempts of someone leaving are decided by the ASR stage's end step."""

    async def release_participant(self, user_id: str) -> None:
        for key in [k for k, frames in self._held.items() if frames and _user(frames[0][0]) == user_id]:
            del self._held[key]
            self._decide(key, False)

    # -- frames --------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UtteranceCommittedFrame):
            await self._commit(frame.utterance)
            return
        if isinstance(frame, SpeculationAbortedFrame):
            key = _key(frame.utterance)
            self._held.pop(key, None)
            self._decide(key, False)
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            # Nothing will decide what is still held: it was never confirmed.
            self._held.clear()
        utterance: Utterance | None = getattr(frame, "utterance", None)
        if direction is FrameDirection.DOWNSTREAM and utterance is not None and utterance.speculative:
            key = _key(utterance)
            decided = self._decided.get(key)
            if decided is None:
                self._held.setdefault(key, []).append((frame, direction))
                return
            if not decided:
                return
        await self.push_frame(frame, direction)

    async def _commit(self, utterance: Utterance) -> None:
        key = _key(utterance)
        utterance.mark("released", time.monotonic())
        self._decide(key, True)
        for frame, direction in self._held.pop(key, []):
            await self.push_frame(frame, direction)

    def _decide(self, key: _Key, committed: bool) -> None:
        self._decided[key] = committed
        self._decided.move_to_end(key)
        while len(self._decided) > self._max_remembered:
            self._decided.popitem(last=False)


def _key(utterance: Utterance) -> _Key:
    return (utterance.id, utterance.attempt)


def _user(frame: Frame) -> str:
    utterance = getattr(frame, "utterance", None)
    return utterance.user_id if utterance is not None else ""
