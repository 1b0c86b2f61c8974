"""Audio events (laughter, crying, sighs...) with an Audio Spectrogram Transformer.

``ASTForAudioClassification`` (transformers) fine-tuned on AudioSet's 527 labels; the
default checkpoint ``MIT/ast-finetuned-audioset-10-10-0.4593`` is released under the
BSD-3-Clause licence. Clips are scored in one batch per call (multi-label: a sigmoid
per label), so several candidates waiting at once cost one forward pass.

The checkpoint is trained on 10.24 s windows (1212 patches: about a second of CPU per
clip). Candidates are short, so by default the model looks at ``seconds`` (4 s) only:
the time positions past that are cut from its position embeddings (as AST does for
shorter inputs), which takes the patches to 468 and the compute down about threefold.

Weights: a folder in Hugging Face layout (``config.json``, the weights and
``preprocessor_config.json``) given as a local path, or a hub name resolved by
:func:`pipeline.models.resolve_model` (cache first; ``polyvox models pull``).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from loguru import logger

from pipeline.engines.base import AudioEvent, AudioEventEngine
from pipeline.engines.device import pick_device
from pipeline.errors import ConfigError, EngineError, EngineUnavailableError
from pipeline.models import resolve_model

__all__ = ["ASTAudioEventEngine"]

_INSTALL_HINT = "pip install 'polyvox[gpu]'"


class ASTAudioEventEngine(AudioEventEngine):
    """AudioSet audio-event classification with an AST checkpoint.

    Args:
        model: Checkpoint folder or hub name.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        top: Events returned per clip (best first).
        max_batch: Clips per forward pass (more are split into several passes).
        seconds: Audio looked at per clip (its start); ``None``: the checkpoint's window.
    """

    name = "ast"

    def __init__(
        self,
        *,
        model: str = "MIT/ast-finetuned-audioset-10-10-0.4593",
        device: str = "auto",
        top: int = 10,
        max_batch: int = 8,
        seconds: float | None = 4.0,
    ) -> None:
        if top < 1:
            raise ConfigError(f"ast top must be at least 1, not {top}")
        if max_batch < 1:
            raise ConfigError(f"ast max_batch must be at least 1, not {max_batch}")
        self._model_name = model
        self._requested_device = device
        self._top = top
        self._max_batch = max_batch
        self._seconds = seconds
        self._lock = threading.Lock()
        self._torch: Any = None
        self._model: Any = None
        self._features: Any = None
        self._labels: list[str] = []
        self.device = "cpu"

    @property
    def labels(self) -> list[str]:
        """Every label of the checkpoint, by class index (once loaded)."""
        return list(self._labels)

    def load(self) -> None:
        """Load the checkpoint (once).

        Raises:
            ImportError: transformers or torch is missing.
            EngineUnavailableError: the checkpoint is missing or unreadable.
        """
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import ASTFeatureExtractor, ASTForAudioClassification
            except ImportError as exc:
                raise ImportError(f"the ast events engine needs transformers and torch ({exc}): {_INSTALL_HINT}") from exc
            path = resolve_model(self._model_name, kind="events")
            try:
                features = ASTFeatureExtractor.from_pretrained(str(path))
                model = ASTForAudioClassification.from_pretrained(str(path))
            except (OSError, ValueError) as exc:
                raise EngineUnavailableError(f"events.model '{self._model_name}' cannot be loaded: {exc}") from exc
            if self._seconds is not None:
                _shorten(model, features, int(self._seconds * 100), torch)  # 100 fbank frames a second
            self.device = pick_device(self._requested_device, torch)
            model = model.to(self.device).eval()  # type: ignore[arg-type]
            self._torch, self._features, self._model = torch, features, model
            id2label: dict[Any, str] = dict(model.config.id2label or {})
            self._labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))]
            logger.info(f"ast events engine: {len(self._labels)} labels on {self.device}")

    def warmup(self) -> None:
        self.classify([np.zeros(16000, dtype=np.int16)], 16000)

    def classify(self, clips: list[np.ndarray], sample_rate: int) -> list[list[AudioEvent]]:
        """Score every clip; per clip its ``top`` events, best first.

        Raises:
            EngineError: a clip is not 16 kHz, or the model failed.
        """
        self.load()
        if sample_rate != self.sample_rate:
            raise EngineError(f"ast wants {self.sample_rate} Hz audio, got {sample_rate}", retryable=False)
        out: list[list[AudioEvent]] = []
        for first in range(0, len(clips), self._max_batch):
            out += self._batch(clips[first : first + self._max_batch])
        return out

    def _batch(self, clips: list[np.ndarray]) -> list[list[AudioEvent]]:
        torch = self._torch
        waves = [np.asarray(c, dtype=np.int16).astype(np.float32) / 32768.0 for c in clips]
        # The model needs at least one window of audio: pad very short clips.
        waves = [w if len(w) >= 400 else np.pad(w, (0, 400 - len(w))) for w in waves]
        try:
            inputs = self._features(waves, sampling_rate=self.sample_rate, return_tensors="pt")
            with self._lock, torch.inference_mode():
                logits = self._model(inputs["input_values"].to(self.device)).logits
            scores = torch.sigmoid(logits.float()).cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - one batch failing is one request failing
            raise EngineError(f"ast classification failed: {exc}") from exc
        results = []
        for row in scores:
            best = np.argsort(row)[::-1][: self._top]
            results.append([AudioEvent(self._labels[i], float(row[i])) for i in best])
        return results


def _shorten(model: Any, features: Any, frames: int, torch: Any) -> None:
    """Make ``model`` take ``frames`` spectrogram frames instead of its trained window,
    keeping the first time positions of its position embeddings (never lengthens)."""
    config = model.config
    if frames >= config.max_length:
        return
    embeddings = model.audio_spectrogram_transformer.embeddings
    freq, time_old = embeddings.get_shape(config)
    time_new = (frames - config.patch_size) // config.time_stride + 1
    if time_new < 1:
        return
    position = embeddings.position_embeddings.data
    grid = position[:, 2:].reshape(1, freq, time_old, -1)[:, :, :time_new]
    trimmed = torch.cat([position[:, :2], grid.reshape(1, freq * time_new, -1)], dim=1)
    embeddings.position_embeddings = torch.nn.Parameter(trimmed.contiguous())
    config.max_length = frames
    features.max_length = frames
