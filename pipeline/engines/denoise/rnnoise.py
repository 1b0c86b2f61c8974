"""RNNoise through pipecat's ``RNNoiseFilter`` (pyrnnoise), one filter per participant."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipeline.engines.base import DenoiseEngine

if TYPE_CHECKING:
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

__all__ = ["RNNoiseDenoiseEngine"]


class RNNoiseDenoiseEngine(DenoiseEngine):
    """RNNoise noise suppression (``denoise.engine: rnnoise``).

    Each filter is pipecat's ``RNNoiseFilter``: audio is resampled to 48 kHz (soxr "QQ",
    the lowest-latency preset), denoised in 10 ms frames and resampled back. Measured on
    speech at 8, 16, 24 and 48 kHz and any chunking, the output is the input delayed by
    20 ms (``latency_ms``, also set on each filter); the output runs up to one 10 ms frame
    behind the input in sample count (it holds a partial frame), so a call may return a
    little less than it was given, never more than was given in total. Costs about 0.07 s
    of one core per second of audio.

    Note that pipecat's filter passes audio through unfiltered if RNNoise fails to start;
    :meth:`load` checks the library up front so that this does not happen silently.
    """

    name: ClassVar[str] = "rnnoise"
    #: Delay of the filtered audio relative to its input, milliseconds.
    latency_ms: ClassVar[float] = 20.0

    def __init__(self) -> None:
        self._loaded = False

    def load(self) -> None:
        """Check that pyrnnoise and its native library load.

        Raises:
            ImportError: pyrnnoise is not installed (``pip install 'polyvox[offline]'``).
        """
        if self._loaded:
            return
        try:
            import pyrnnoise  # noqa: F401 - imported to check it loads (native library included)
        except (ModuleNotFoundError, OSError) as e:
            raise ImportError(
                f"RNNoise needs pyrnnoise ({e}); install it with: pip install 'polyvox[offline]'"
            ) from e
        self._loaded = True

    def create_filter(self) -> RNNoiseFilter:
        """A new pipecat ``RNNoiseFilter`` with ``latency_ms`` set on it."""
        self.load()
        # Imported here: the module logs errors at import time when pyrnnoise is missing.
        from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

        audio_filter = RNNoiseFilter(resampler_quality="QQ")
        audio_filter.latency_ms = self.latency_ms  # type: ignore[attr-defined]
        return audio_filter
