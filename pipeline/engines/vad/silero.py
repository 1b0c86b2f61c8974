"""Silero VAD on onnxruntime: one shared session, one recurrent state per participant.

The model (``silero_vad.onnx``, shipped inside pipecat's ``pipecat.audio.vad.data``
package) scores windows of 512 samples at 16 kHz. Each call takes the window prefixed by
the last 64 samples of the previous one (the "context") and a recurrent state of shape
``(2, 1, 128)``, and returns the speech probability and the next state. The session is
stateless, so one ``InferenceSession`` serves every participant from any thread
(``InferenceSession.run`` is thread-safe); each :class:`SileroVADStream` carries its own
state and context.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from loguru import logger

from pipeline.engines.base import VADEngine, VADStream
from pipeline.errors import EngineUnavailableError

__all__ = ["SileroVADEngine", "SileroVADStream"]

_SAMPLE_RATE = 16000
_WINDOW = 512
_CONTEXT = 64
_STATE_SHAPE = (2, 1, 128)

# The recurrent state drifts during long non-speech (noise, music, long silence) so that
# the model under-reports the speech that follows; pipecat's analyzer resets it about
# every two seconds, but only inside clear non-speech, because a reset makes the model
# briefly unsure and could end an utterance early. We do the same: once the interval has
# passed, reset after this many consecutive windows (~160 ms) below this probability.
_RESET_MAX_PROBABILITY = 0.1
_RESET_LOW_WINDOWS = 5


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ModuleNotFoundError as e:
        raise ImportError(
            f"Silero VAD needs onnxruntime ({e}); install it with: pip install 'polyvox[offline]'"
        ) from e
    return onnxruntime


def _bundled_model_path() -> Path:
    # The model ships in pipecat's package data; as_file() also covers zipped installs,
    # where the resource has to be copied out to a real file for onnxruntime to open.
    resource = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
    if isinstance(resource, Path):
        return resource
    with resources.as_file(resource) as path:  # pragma: no cover - zipped installs only
        return Path(path)


class SileroVADStream(VADStream):
    """One participant's Silero state: the recurrent state and the 64-sample context.

    Not thread-safe on its own: one participant's audio is scored in order, by one caller at
    a time. Different streams may be used from different threads at once.

    Args:
        session: The shared ``onnxruntime.InferenceSession``.
        reset_interval_s: Seconds of audio after which the state is reset at the next clear
            non-speech (see the module notes); ``None`` never resets on its own.
    """

    window: int = _WINDOW

    def __init__(self, session: Any, *, reset_interval_s: float | None = 2.0) -> None:
        self._session = session
        self._sr = np.array(_SAMPLE_RATE, dtype=np.int64)
        self._reset_windows = (
            None
            if reset_interval_s is None
            else max(1, round(reset_interval_s * _SAMPLE_RATE / _WINDOW))
        )
        # The model input: [context | window], reused for every call.
        self._input = np.zeros((1, _CONTEXT + _WINDOW), dtype=np.float32)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._windows_since_reset = 0
        self._low_windows = 0

    def speech_probability(self, window: np.ndarray) -> float:
        """Probability in [0, 1] that this window of 512 int16 samples at 16 kHz is speech.

        Raises:
            ValueError: ``window`` is not 512 samples long.
        """
        samples = np.asarray(window).reshape(-1)
        if samples.shape[0] != _WINDOW:
            raise ValueError(
                f"Silero VAD scores windows of {_WINDOW} samples, got {samples.shape[0]}"
            )
        # The context is the tail of the previous input; shift it in place, then the window.
        self._input[0, :_CONTEXT] = self._input[0, -_CONTEXT:]
        np.multiply(samples, 1.0 / 32768.0, out=self._input[0, _CONTEXT:], casting="unsafe")
        out, state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        self._state = state
        probability = float(out.reshape(-1)[0])
        self._maybe_reset(probability)
        return probability

    def reset(self) -> None:
        """Forget the recurrent state and the context (a participant rejoining, a new stream)."""
        self._input.fill(0.0)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._windows_since_reset = 0
        self._low_windows = 0

    def _maybe_reset(self, probability: float) -> None:
        if self._reset_windows is None:
            return
        self._windows_since_reset += 1
        self._low_windows = self._low_windows + 1 if probability < _RESET_MAX_PROBABILITY else 0
        if (
            self._windows_since_reset >= self._reset_windows
            and self._low_windows >= _RESET_LOW_WINDOWS
        ):
            self.reset()


class SileroVADEngine(VADEngine):
    """Silero VAD: one ONNX session for the process, one :class:`SileroVADStream` per participant.

    The session runs on the CPU with one intra-op and one inter-op thread: a window costs a
    fraction of a millisecond, and many participants scale better across threads than one
    window across cores.

    Args:
        model: Path to a different Silero VAD ONNX file (same inputs: ``input``, ``state``,
            ``sr``); ``None`` uses the model shipped inside pipecat.
        reset_interval_s: See :class:`SileroVADStream`; ``None`` disables the periodic reset.

    Raises:
        ImportError: onnxruntime is not installed (``pip install 'polyvox[offline]'``), when
            the model is loaded.
    """

    name: ClassVar[str] = "silero"
    sample_rate: ClassVar[int] = _SAMPLE_RATE

    def __init__(self, *, model: str | None = None, reset_interval_s: float | None = 2.0) -> None:
        if reset_interval_s is not None and not reset_interval_s > 0:
            raise ValueError(f"reset_interval_s must be positive or None, got {reset_interval_s}")
        self._model = model
        self._reset_interval_s = reset_interval_s
        self._session: Any | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Create the shared ONNX session (once; later calls return at once).

        Raises:
            ImportError: onnxruntime is not installed.
            EngineUnavailableError: the model file is missing or not a loadable ONNX model.
        """
        with self._lock:
            if self._session is not None:
                return
            ort = _import_onnxruntime()
            path = Path(self._model) if self._model is not None else _bundled_model_path()
            if not path.is_file():
                raise EngineUnavailableError(f"Silero VAD model not found: {path}")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            try:
                self._session = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own exception types
                raise EngineUnavailableError(f"Could not load Silero VAD model {path}: {e}") from e
            logger.debug(f"Loaded Silero VAD from {path}")

    def warmup(self) -> None:
        """Score a few windows so that onnxruntime's first-run allocations happen now."""
        stream = self.stream()
        silence = np.zeros(_WINDOW, dtype=np.int16)
        for _ in range(3):
            stream.speech_probability(silence)

    def close(self) -> None:
        """Drop the session; streams created before keep theirs alive until they go."""
        with self._lock:
            self._session = None

    def stream(self) -> SileroVADStream:
        """A new, independent per-participant stream (loads the model on first use)."""
        if self._session is None:
            self.load()
        return SileroVADStream(self._session, reset_interval_s=self._reset_interval_s)
