"""MT stage: transcript → one translation per listener language."""

from __future__ import annotations

import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.utils.time import time_now_iso8601

from pipeline.engines.base import MTEngine
from pipeline.frames import (
    CaptionFrame,
    TranslationsDoneFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.languages import finish_translation
from pipeline.processors.asr import as_language
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.room import Room

__all__ = ["TranslationProcessor"]


class TranslationProcessor(UserLaneProcessor):
    """Translates each final transcript into every language the room's listeners need.

    The transcription frame is passed on first, then one ``UtteranceTranslationFrame``
    per target language as each is ready (TTS starts on the first while the next is
    translated), then ``TranslationsDoneFrame`` and the final ``CaptionFrame`` with every
    translation. A language that fails is reported and left out; the others go on.

    Args:
        engine: The shared MT engine.
        room: Decides the target languages for each speaker.
    """

    handles = (UtteranceTranscriptionFrame,)

    def __init__(self, engine: MTEngine, room: Room, **kwargs: Any) -> None:
        super().__init__(stage="mt", **kwargs)
        self._engine = engine
        self._room = room

    async def handle(self, frame: Frame) -> None:
        assert isinstance(frame, UtteranceTranscriptionFrame) and frame.utterance is not None
        await self.push_frame(frame)
        utterance = frame.utterance
        translations: dict[str, str] = {}
        for target in self._room.targets_for(utterance.user_id):
            started = time.monotonic()
            try:
                (translation,) = await self.engine_call(
                    self._engine.translate, [frame.text], utterance.language, target,
                    timeout_s=self.timeouts.for_text(frame.text),
                )
            except Exception as exc:  # noqa: BLE001 - one language failing must not cost the others
                await self._report(
                    f"mt {utterance.language}→{target} failed for utterance {utterance.id}: {exc}",
                    exc,
                    None,
                )
                continue
            finally:
                utterance.add_compute("mt", time.monotonic() - started)
            # The target language's own conventions (Spanish ¿…?), whatever the engine.
            translation = finish_translation(translation, target)
            translations[target] = translation
            logger.info(f"[{utterance.user_id} {utterance.language}→{target}] {translation}")
            await self.push_frame(
                UtteranceTranslationFrame(
                    text=translation,
                    user_id=utterance.user_id,
                    timestamp=time_now_iso8601(),
                    language=as_language(target),
                    utterance=utterance,
                    source_text=frame.text,
                    target_language=target,
                )
            )
        utterance.mark("mt_done")
        await self.push_frame(TranslationsDoneFrame(utterance, dict(translations)))
        await self.push_frame(CaptionFrame(utterance, frame.text, dict(translations), final=True))
