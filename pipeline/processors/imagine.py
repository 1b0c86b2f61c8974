"""Speech-to-image stage: a sentence that asks for a picture becomes one, for everyone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.engines.base import ImageEngine, MTEngine
from pipeline.engines.calls import EngineCaller, StageTimeouts
from pipeline.frames import ImageFrame, NoticeFrame, UtteranceTranscriptionFrame
from pipeline.imagine import NO_IMAGE_MODEL, ImageParams, strip_trigger
from pipeline.room import Room

__all__ = ["ImageRequestProcessor"]

class ImageRequestProcessor(FrameProcessor):
    """Watches final transcripts for picture requests and draws them in the background.

    A transcript is a request when its speaker pressed "draw what I say" (or ran
    ``/imagine``) within ``params.request_s``, or when it starts with the room's trigger
    phrase. The request is translated into the image model's language (with the MT
    engine, when the speaker's language differs and the engine can), drawn in the image
    engine's own thread, and sent on as an ``ImageFrame`` carrying the transcript as
    caption. Every frame passes through at once: drawing never holds up interpretation.
    The requester is told with a ``NoticeFrame`` when there is no image model or they
    asked too often.

    Args:
        engine: The image engine (``None``: this profile has none).
        mt: Translates requests into the image model's language.
        room: Who asked, their language, the room's trigger phrase.
        params: Rate limit and waits.
        timeouts: Deadline of the translation.
    """

    def __init__(
        self,
        engine: ImageEngine | None,
        mt: MTEngine,
        room: Room,
        params: ImageParams | None = None,
        *,
        timeouts: StageTimeouts | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._mt = mt
        self._room = room
        self._params = params or ImageParams()
        self._timeouts = timeouts or StageTimeouts()
        self._draw = EngineCaller("image", 1)
        self._translate = EngineCaller("image-mt", 1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame) and self._tasks:
            # The input ended (a file): the pictures asked for are still worth drawing.
            await asyncio.wait(set(self._tasks), timeout=self._params.max_wait_s)
        await self.push_frame(frame, direction)
        if (
            direction is FrameDirection.DOWNSTREAM
            and isinstance(frame, UtteranceTranscriptionFrame)
            and frame.utterance is not None
            and frame.utterance.kind == "speech"
        ):
            await self._consider(frame)

    async def cleanup(self) -> None:
        for task in list(self._tasks):
            await self.cancel_task(task)
        await super().cleanup()

    def _request(self, user: str, text: str) -> str | None:
        participant = self._room.participants.get(user)
        if participant is not None and participant.imagine_until >= time.monotonic():
            participant.imagine_until = 0.0
            return strip_trigger(text, self._room.image_trigger) or text.strip()
        return strip_trigger(text, self._room.image_trigger)

    async def _consider(self, frame: UtteranceTranscriptionFrame) -> None:
        assert frame.utterance is not None
        user = frame.utterance.user_id
        request = self._request(user, frame.text)
        if not request:
            return
        if self._engine is None:
            await self.push_frame(NoticeFrame(user, "image", NO_IMAGE_MODEL))
            return
        participant = self._room.participants.get(user)
        who = (participant.identity if participant is not None else None) or user
        wait = self._params.limiter.allow(who)
        if wait > 0:
            await self.push_frame(
                NoticeFrame(
                    user, "image",
                    f"You asked for {self._params.per_user} pictures in the last {self._params.window_s:.0f} s: "
                    f"try again in {wait:.0f} s.",
                )
            )
            return
        await self.push_frame(NoticeFrame(user, "image", f"Drawing “{request}”…"))
        task = self.create_task(self._make(user, frame.utterance.language, request), f"imagine-{user}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _make(self, user: str, language: str, request: str) -> None:
        assert self._engine is not None
        prompt = await self._prompt(request, language)
        started = time.monotonic()
        try:
            png = await self._draw(self._engine.generate, prompt, timeout_s=self._params.max_wait_s)
        except Exception as exc:  # noqa: BLE001 - a failed picture is told, the room goes on
            logger.warning(f"drawing {prompt!r} for {user} failed: {exc}")
            await self.push_frame(NoticeFrame(user, "image", f"The picture could not be drawn: {exc}"))
            return
        logger.info(f"[{user}] drew {prompt!r} in {time.monotonic() - started:.1f} s ({len(png)} bytes)")
        await self.push_frame(ImageFrame(user, request, prompt, png, language))

    async def _prompt(self, request: str, language: str) -> str:
        """The request in the image model's language (as it was, when it cannot be translated)."""
        target = self._engine.prompt_language if self._engine is not None else "en"
        if language == target or not self._mt.supports(language, target):
            return request
        try:
            (prompt,) = await self._translate(
                self._mt.translate, [request], language, target, timeout_s=self._timeouts.for_text(request)
            )
        except Exception as exc:  # noqa: BLE001 - the untranslated request still draws something
            logger.warning(f"translating the picture request {request!r} failed: {exc}; drawing it as said")
            return request
        return prompt
