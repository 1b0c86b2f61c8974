"""TTS stage: translation → interpretation audio, streamed chunk by chunk."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame

from pipeline.engines.base import TTSEngine
from pipeline.engines.calls import EngineCaller, EngineTimeoutError
from pipeline.errors import EngineError
from pipeline.frames import (
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    UtteranceTranslationFrame,
)
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room

__all__ = ["TTSProcessor"]

_DONE = object()


class TTSProcessor(UserLaneProcessor):
    """Speaks each ``UtteranceTranslationFrame`` in the speaker's voice profile.

    The engine's lazy chunk generator is consumed inside a worker thread (so neither
    synthesis nor the generator's own work blocks the event loop) and every chunk is
    pushed as ``InterpretationAudioFrame`` the moment it exists, followed by one
    ``InterpretationDoneFrame`` (with ``error`` set when synthesis failed: only that
    language of that utterance is lost). The translation frame itself is passed on first.

    Args:
        engine: The shared TTS engine.
        room: Gives each speaker's voice profile.
    """

    handles = (UtteranceTranslationFrame,)

    def __init__(self, engine: TTSEngine, room: Room, **kwargs: Any) -> None:
        super().__init__(stage="tts", **kwargs)
        self._engine = engine
        self._room = room

    async def handle(self, frame: Frame) -> None:
        assert isinstance(frame, UtteranceTranslationFrame) and frame.utterance is not None
        await self.push_frame(frame)
        utterance = frame.utterance
        target = frame.target_language
        voice = self._room.voice_for(utterance.user_id)
        rate = self._engine.sample_rate
        spoke = False
        try:
            chunks = self._engine.synthesize(frame.text, target, voice)
            deadline = self.timeouts.for_text(frame.text)
            async for chunk in _iterate_in_thread(chunks, utterance, self.stage, self.engine_call, deadline):
                if not len(chunk):
                    continue
                spoke = True
                utterance.mark("first_tts_audio")
                await self.push_frame(
                    InterpretationAudioFrame(
                        audio=np.ascontiguousarray(chunk, dtype=np.int16).tobytes(),
                        sample_rate=rate,
                        num_channels=1,
                        utterance=utterance,
                        target_language=target,
                    )
                )
            if not spoke and frame.text.strip():
                raise EngineError(f"the {self._engine.name or 'tts'} engine produced no audio", retryable=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - this language of this utterance only
            await self.drop_frame(frame, f"tts into {target} failed for utterance {utterance.id}: {exc}", exc)
            return
        utterance.mark("tts_done")
        await self.push_frame(InterpretationDoneFrame(utterance, target))

    async def drop_frame(self, frame: Frame, message: str, exc: Exception | None) -> None:
        """Give up on one language of an utterance: the other languages carry on."""
        utterance = getattr(frame, "utterance", None)
        await self._report(message, exc, None)
        if isinstance(frame, UtteranceTranslationFrame) and utterance is not None:
            await self.push_frame(InterpretationDoneFrame(utterance, frame.target_language, error=message))


async def _iterate_in_thread(
    chunks: Iterator[np.ndarray], utterance: Any, stage: str, caller: EngineCaller, chunk_timeout_s: float
):
    """Yield ``chunks`` as a worker thread produces them; engine time goes to ``compute``.

    Raises:
        EngineTimeoutError: the next chunk took longer than ``chunk_timeout_s``.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        busy = 0.0
        first = True
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                busy += time.monotonic() - started
                if first:
                    # Engine time before the first chunk: what a listener waits for.
                    utterance.add_compute(f"{stage}_first", busy)
                    first = False
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            utterance.add_compute(stage, busy)
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    worker = asyncio.create_task(caller(produce, timeout_s=None))
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), chunk_timeout_s)
            except TimeoutError:
                worker.cancel()  # the engine is stuck: give its slot back
                raise EngineTimeoutError(f"{stage}: no audio for {chunk_timeout_s:.1f} s") from None
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        try:
            await worker
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            logger.debug(f"tts worker ended with {exc!r}")
