"""The ``none`` denoiser: audio goes through unchanged."""

from __future__ import annotations

from typing import ClassVar

from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import FilterControlFrame

from pipeline.engines.base import DenoiseEngine

__all__ = ["PassthroughDenoiseEngine", "PassthroughFilter"]


class PassthroughFilter(BaseAudioFilter):
    """A filter that returns its input unchanged, for profiles without noise suppression."""

    #: Added delay, milliseconds.
    latency_ms: float = 0.0

    async def start(self, sample_rate: int) -> None:
        """Nothing to set up."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def process_frame(self, frame: FilterControlFrame) -> None:
        """Control frames change nothing here."""

    async def filter(self, audio: bytes) -> bytes:
        """Return ``audio`` as it is."""
        return audio


class PassthroughDenoiseEngine(DenoiseEngine):
    """No noise suppression (``denoise.engine: none``)."""

    name: ClassVar[str] = "none"
    latency_ms: ClassVar[float] = 0.0

    def create_filter(self) -> PassthroughFilter:
        """A new pass-through filter."""
        return PassthroughFilter()
