"""Per-participant lanes: the concurrency model every stage processor shares.

A stage must keep each participant's utterances in order, yet one participant's
slow utterance must not hold up another's. So a processor does not run its engine
inside ``process_frame``: it queues the frame on the lane of its ``user_id`` and
returns at once. Each lane is one task working through its queue; lanes of
different participants run concurrently (the engine calls themselves run in
threads, off the event loop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory

from pipeline.engines.calls import EngineCaller, StageTimeouts
from pipeline.errors import PolyvoxError
from pipeline.frames import SpeculationAbortedFrame, Utterance, UtteranceDroppedFrame

__all__ = ["UserLaneProcessor"]


class _Lane:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        #: Frames queued or being worked on.
        self.busy = 0


class UserLaneProcessor(FrameProcessor):
    """Base class: frames of type ``handles`` go through a per-``user_id`` lane.

    Subclasses set ``handles`` and implement :meth:`handle` (or :meth:`handle_many`
    to take everything queued at once). Frames of other types pass straight through.
    ``EndFrame`` waits until every lane is idle, so nothing queued is lost at the end
    of a file or a call; ``CancelFrame`` drops the queues.

    Args:
        stage: Short stage name for logs, errors and latency marks (``asr``, ``mt``...).
        max_pending: Per-lane queue limit. When a participant's backlog exceeds it, the
            oldest queued frame is dropped with an error (live rooms must not fall
            ever further behind); ``None`` for no limit (file mode).
        timeouts: Deadlines of the stage's engine calls (``pipeline.engines.calls``): a
            call past its deadline costs that frame only.
        concurrency: Engine calls of this stage running at once (all participants).
    """

    handles: tuple[type[Frame], ...] = ()

    def __init__(
        self,
        *,
        stage: str,
        max_pending: int | None = None,
        timeouts: StageTimeouts | None = None,
        concurrency: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self._max_pending = max_pending
        #: Deadlines of this stage's engine calls.
        self.timeouts = timeouts or StageTimeouts()
        #: Runs this stage's blocking engine calls (own threads, bounded, with deadlines).
        self.engine_call = EngineCaller(stage, concurrency)
        self._lanes: dict[str, _Lane] = {}
        #: Speculative attempts the speaker made void: their queued frames are skipped.
        self._aborted: set[tuple[int, int]] = set()
        self._aborted_order: deque[tuple[int, int]] = deque()

    # -- subclass API -------------------------------------------------------------

    async def handle(self, frame: Frame) -> None:
        """Work on one frame of one participant (runs in that participant's lane)."""
        raise NotImplementedError

    async def handle_many(self, frames: list[Frame]) -> None:
        """Work on every frame that was waiting in one lane; default: one at a time."""
        for frame in frames:
            await self._guarded(self.handle, frame)

    async def on_end(self) -> None:  # noqa: B027 - optional hook
        """Called at ``EndFrame`` after the lanes are idle, before it is forwarded."""

    def lane_key(self, frame: Frame) -> str:
        """Lane of a frame: its ``user_id``."""
        return str(getattr(frame, "user_id", "") or "")

    # -- ParticipantState (pipeline.participants) -----------------------------------
    # Subclasses holding more per participant extend these (and call super()).

    def holds_participant(self, user_id: str) -> bool:
        """Whether ``user_id`` has a lane here."""
        return user_id in self._lanes

    def participant_busy(self, user_id: str) -> bool:
        """Whether frames of ``user_id`` are queued or being worked on."""
        lane = self._lanes.get(user_id)
        return lane is not None and lane.busy > 0

    async def flush_participant(self, user_id: str) -> None:  # noqa: B027 - optional hook
        """Nothing is buffered outside the lane by default."""

    async def release_participant(self, user_id: str) -> None:
        """Stop and drop one participant's lane; what it still held is lost."""
        lane = self._lanes.pop(user_id, None)
        if lane is not None and lane.task is not None:
            await self.cancel_task(lane.task)

    # -- pipecat ------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, self.handles):
            await self._enqueue(frame)
        elif isinstance(frame, SpeculationAbortedFrame):
            self._abort(frame.utterance)
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self.drain()
            await self.on_end()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop_lanes()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._stop_lanes()
        await super().cleanup()

    # -- lanes --------------------------------------------------------------------

    async def _enqueue(self, frame: Frame) -> None:
        key = self.lane_key(frame)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.task = self.create_task(self._run_lane(key, lane), f"{self.stage}-lane-{key}")
        if self._max_pending is not None and lane.queue.qsize() >= self._max_pending:
            dropped = lane.queue.get_nowait()
            lane.queue.task_done()
            lane.busy -= 1
            await self.drop_frame(
                dropped,
                f"{self.stage}: participant {key} is {self._max_pending} utterances behind; "
                "dropping the oldest",
                None,
            )
        lane.busy += 1
        lane.queue.put_nowait(frame)

    def _abort(self, utterance: Utterance) -> None:
        key = (utterance.id, utterance.attempt)
        if key not in self._aborted:
            self._aborted.add(key)
            self._aborted_order.append(key)
            if len(self._aborted_order) > 4096:
                self._aborted.discard(self._aborted_order.popleft())

    def _is_void(self, frame: Frame) -> bool:
        utterance = getattr(frame, "utterance", None)
        return (
            utterance is not None
            and getattr(utterance, "speculative", False)
            and (utterance.id, utterance.attempt) in self._aborted
        )

    async def _run_lane(self, key: str, lane: _Lane) -> None:
        while True:
            first = await lane.queue.get()
            batch = [first]
            while not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
            try:
                work = [f for f in batch if not self._is_void(f)] if self._aborted else batch
                if work:
                    await self.handle_many(work)
            finally:
                for _ in batch:
                    lane.queue.task_done()
                lane.busy -= len(batch)

    async def drain(self) -> None:
        """Wait until every lane has worked through its queue."""
        for lane in list(self._lanes.values()):
            await lane.queue.join()

    async def _stop_lanes(self) -> None:
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            if lane.task is not None:
                await self.cancel_task(lane.task)

    async def _guarded(self, fn, frame: Frame) -> None:
        """Run ``fn(frame)``; an exception is reported and costs only this frame."""
        try:
            await fn(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad utterance must not stop the room
            await self.drop_frame(frame, f"{self.stage} failed: {exc}", exc)

    async def drop_frame(self, frame: Frame, message: str, exc: Exception | None) -> None:
        """Give up on ``frame``: report it and tell later stages its utterance is dropped.

        Stages whose frames carry only part of an utterance (one language of it) override
        this to give up on that part alone.
        """
        await self._report(message, exc, getattr(frame, "utterance", None))

    async def _report(self, message: str, exc: Exception | None, utterance: Utterance | None) -> None:
        if isinstance(exc, PolyvoxError) or exc is None:
            logger.warning(message)
        else:
            logger.opt(exception=exc).error(message)
        retryable = exc.retryable if isinstance(exc, PolyvoxError) else True
        category = ErrorCategory.SERVER if retryable else ErrorCategory.APPLICATION
        await self.push_error(message, exception=exc, category=category)
        if utterance is not None:
            await self.push_frame(UtteranceDroppedFrame(utterance, self.stage, message))
