"""Voice-changer mode: which voices may be targets, and how a stream is cut into stretches.

In voice mode (``interpretation.mode: voice`` for a room, or one participant's choice)
speech is heard in another voice with no text in between: the voice-conversion engine
(``pipeline.engines.vc``) converts it chunk by chunk, keeping its timing, intonation,
laughter and crying. A target voice is one of the engine's neutral voices, or the voice
of someone who enrolled it *and* allowed it to be used as a voice-changer target
(``voices.consent.VoiceConsent.changer_target``); nobody else's voice can be chosen.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.engines.base import VoiceConversionEngine
from pipeline.errors import PolyvoxError

__all__ = ["ChangerVoice", "VoiceChangerParams", "VoiceTargetError", "resolve_changer_voice"]


class VoiceTargetError(PolyvoxError):
    """A voice that cannot be a voice-changer target (unknown, or not allowed by its owner)."""


@dataclass
class VoiceChangerParams:
    """How voice mode behaves (``interpretation.voice_changer``).

    Attributes:
        default_voice: The neutral voice used when a participant chose none (``None``:
            the engine's first).
        gate_dbfs: Converted audio at least this loud starts a stretch of voice.
        gap_ms: This much quieter audio ends the stretch (so ordered outputs, Discord's
            queue, can play the next one).
        idle_flush_ms: No audio from someone for this long (Discord sends none while
            people are silent) converts what is still buffered.
        max_stretch_s: Longer stretches are cut.
    """

    default_voice: str | None = None
    gate_dbfs: float = -50.0
    gap_ms: int = 400
    idle_flush_ms: int = 250
    max_stretch_s: float = 10.0


@dataclass(frozen=True)
class ChangerVoice:
    """A voice-changer target, consent already checked.

    Attributes:
        name: What it was chosen by (a neutral voice's name, or the enrolled identity).
        embedding: The target for the conversion engine.
        neutral: Whether it is one of the engine's own voices.
    """

    name: str
    embedding: np.ndarray
    neutral: bool

    @property
    def key(self) -> str:
        return f"{'neutral' if self.neutral else 'enrolled'}:{self.name}"


async def resolve_changer_voice(engine: VoiceConversionEngine, consent: Any | None, name: str | None) -> ChangerVoice:
    """The target voice ``name``: a neutral voice of ``engine``, else a voice its owner
    enrolled as a voice-changer target (checked through ``consent``).

    Raises:
        VoiceTargetError: no such neutral voice, and no enrolled target by that name
            (or its owner did not allow it, or refused cloning).
    """
    neutral = await asyncio.to_thread(engine.neutral_voices)
    if name is None or name == "":
        name = neutral[0]
    if name in neutral:
        return ChangerVoice(name, await asyncio.to_thread(engine.neutral_voice, name), True)
    embedding = await consent.changer_target(name) if consent is not None else None
    if embedding is None:
        raise VoiceTargetError(
            f"'{name}' is not a voice-changer voice: choose a neutral voice ({', '.join(neutral)}) or someone "
            "who enrolled their voice as a voice-changer target (polyvox voices enroll NAME FILE --changer-target)"
        )
    return ChangerVoice(name, embedding, False)
