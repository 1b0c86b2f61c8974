"""Text to image with 🤗 diffusers: any pipeline folder (``model_index.json``).

Defaults by profile (``config.yaml``): ``gpu`` runs FLUX.1-schnell
(``black-forest-labs/FLUX.1-schnell``, Apache-2.0: four steps, no guidance), ``cpu``
runs the Latent Consistency Model distilled from Dreamshaper v7
(``SimianLuo/LCM_Dreamshaper_v7``, MIT as its model card states; a Stable Diffusion 1.5
derivative: four steps) at a small size. Whatever the pipeline class, it is loaded with
``DiffusionPipeline.from_pretrained`` from a local folder or the Hugging Face cache
(``polyvox models pull``); nothing is downloaded at run time when the hub is off.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from loguru import logger

from pipeline.engines.base import ImageEngine
from pipeline.engines.device import pick_device
from pipeline.errors import ConfigError, EngineError, EngineUnavailableError
from pipeline.models import resolve_model

__all__ = ["DiffusersImageEngine"]

_INSTALL_HINT = "pip install 'polyvox[media]'"
_DTYPES = ("auto", "float32", "float16", "bfloat16")


class DiffusersImageEngine(ImageEngine):
    """One picture per prompt from a diffusers pipeline; one generation at a time.

    Args:
        model: Pipeline folder or hub name.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``float16``,
            ``bfloat16``.
        steps: Denoising steps (few-step models: 1-4).
        guidance: Classifier-free guidance scale (0 for FLUX.1-schnell).
        width: Picture width in pixels (a multiple of 8).
        height: Picture height in pixels.
        seed: Fixed seed for reproducible pictures (``None``: a new one each time).
        options: More keyword arguments for the pipeline call (``max_sequence_length``).
    """

    name = "diffusers"

    def __init__(
        self,
        *,
        model: str = "SimianLuo/LCM_Dreamshaper_v7",
        device: str = "auto",
        dtype: str = "auto",
        steps: int = 4,
        guidance: float = 1.0,
        width: int = 512,
        height: int = 512,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"diffusers dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        if steps < 1:
            raise ConfigError(f"diffusers steps must be at least 1, not {steps}")
        if width % 8 or height % 8 or not 64 <= width <= 2048 or not 64 <= height <= 2048:
            raise ConfigError(f"diffusers width and height must be multiples of 8 in 64-2048, not {width}x{height}")
        self._model_name = model
        self._requested_device = device
        self._requested_dtype = dtype
        self.steps, self.guidance, self.width, self.height = steps, guidance, width, height
        self._seed = seed
        self._options = dict(options or {})
        self._lock = threading.Lock()
        self._pipe: Any = None
        self._torch: Any = None
        self.device = "cpu"

    def load(self) -> None:
        """Load the pipeline (once).

        Raises:
            ImportError: diffusers or torch is missing (``polyvox[media]``).
            EngineUnavailableError: the pipeline folder is missing or unreadable.
        """
        with self._lock:
            if self._pipe is not None:
                return
            try:
                import torch
                from diffusers import DiffusionPipeline
            except ImportError as exc:
                raise ImportError(f"the diffusers image engine needs diffusers and torch ({exc}): {_INSTALL_HINT}") from exc
            path = resolve_model(self._model_name, kind="image")
            self.device = pick_device(self._requested_device, torch)
            dtype = self._requested_dtype
            if dtype == "auto":
                dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
            try:
                pipe = DiffusionPipeline.from_pretrained(str(path), dtype=getattr(torch, dtype))
            except (OSError, ValueError, KeyError) as exc:
                raise EngineUnavailableError(f"image.model '{self._model_name}' cannot be loaded: {exc}") from exc
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self._torch, self._pipe = torch, pipe
            logger.info(
                f"diffusers image engine: {type(pipe).__name__} on {self.device} ({dtype}), "
                f"{self.steps} steps, {self.width}x{self.height}"
            )

    def warmup(self) -> None:
        self.generate("a small red house")

    def generate(self, prompt: str) -> bytes:
        """One PNG picture of ``prompt``."""
        self.load()
        torch = self._torch
        generator = None
        if self._seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(self._seed)
        try:
            with self._lock, torch.inference_mode():
                result = self._pipe(
                    prompt,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    width=self.width,
                    height=self.height,
                    generator=generator,
                    **self._options,
                )
            image = result.images[0]
            out = io.BytesIO()
            image.save(out, format="PNG")
        except Exception as exc:  # noqa: BLE001 - reported as this request's failure
            raise EngineError(f"image generation failed: {exc}") from exc
        return out.getvalue()
