"""What a cloned voice is: XTTS conditioning latents, a speaker embedding and where they came from.

A :class:`VoiceProfile` is plain data (numpy arrays and metadata), so it can be built in
one place (automatic capture, enrollment), stored, and handed to a TTS engine in another
without any of them importing torch. Engines that clone voices implement
:class:`VoiceCloner`: they turn reference speech into :class:`VoiceLatents`.

A profile never changes in place. Refining it (more speech captured) gives a new profile
with the same ``id`` and ``version + 1``, which is what TTS engines key their caches by.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

__all__ = ["VoiceCloner", "VoiceLatents", "VoiceProfile", "VoiceSource"]

#: How a profile came to be: captured from a participant's first utterances (``auto``,
#: session only), enrolled on purpose (``enrolled``, persisted), or a TTS engine's own
#: neutral voice (``builtin``).
VoiceSource = Literal["auto", "enrolled", "builtin"]


@dataclass(frozen=True)
class VoiceLatents:
    """What a voice-cloning TTS model needs to speak in one voice.

    Attributes:
        gpt_cond_latent: XTTS GPT conditioning latents, float32, shape ``(1, N, D)``
            (``N`` = 32 and ``D`` = 1024 for XTTS v2).
        speaker_embedding: XTTS speaker embedding for the vocoder, float32, shape
            ``(1, E, 1)`` (``E`` = 512 for XTTS v2).
    """

    gpt_cond_latent: np.ndarray
    speaker_embedding: np.ndarray

    def __post_init__(self) -> None:
        for name in ("gpt_cond_latent", "speaker_embedding"):
            value = np.ascontiguousarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 3 or value.shape[0] != 1 or value.size == 0:
                raise ValueError(f"{name} must have shape (1, n, m), got {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            value.setflags(write=False)
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class VoiceProfile:
    """One participant's cloned voice.

    Attributes:
        user_id: The participant it belongs to.
        latents: The model conditioning (see :class:`VoiceLatents`).
        seconds: Seconds of speech the latents were computed from.
        source: ``auto``, ``enrolled`` or ``builtin`` (see :data:`VoiceSource`).
        id: Stable identifier of this voice across refinements (hex string).
        version: Increases by one with every refinement or re-enrollment.
        created: When this version was made (Unix time, seconds).
    """

    user_id: str
    latents: VoiceLatents
    seconds: float
    source: VoiceSource
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    version: int = 1
    created: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, int]:
        """``(id, version)``: what caches of derived data (device tensors) are keyed by."""
        return (self.id, self.version)

    @property
    def gpt_cond_latent(self) -> np.ndarray:
        """Shortcut for ``latents.gpt_cond_latent``."""
        return self.latents.gpt_cond_latent

    @property
    def speaker_embedding(self) -> np.ndarray:
        """Shortcut for ``latents.speaker_embedding``."""
        return self.latents.speaker_embedding

    def refined(self, latents: VoiceLatents, seconds: float) -> VoiceProfile:
        """The next version of this voice: same id and owner, new latents."""
        return dataclasses.replace(
            self, latents=latents, seconds=seconds, version=self.version + 1, created=time.time()
        )


@runtime_checkable
class VoiceCloner(Protocol):
    """A TTS engine that can clone a voice from reference speech (``XTTSEngine``)."""

    def condition(self, pcm: np.ndarray, sample_rate: int) -> VoiceLatents:
        """Compute the conditioning for the voice speaking in ``pcm`` (mono int16).

        Blocking: call it off the event loop.
        """
        ...
