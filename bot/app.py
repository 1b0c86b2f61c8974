"""Composition root: settings → engines (loaded once, warmed up) → cascades per room."""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from bot.config import ENGINE_KINDS, Settings
from pipeline.cascade import Engines
from pipeline.engines.base import Engine
from pipeline.engines.registry import create_engine, engine_class
from pipeline.segmenter import SegmenterParams

__all__ = ["cascade_options", "check_engines", "load_engines", "segmenter_params"]


def check_engines(settings: Settings) -> None:
    """Resolve every configured engine name without loading anything.

    Raises:
        ConfigError: an unknown engine name.
        ImportError: an engine whose extra is not installed.
    """
    for kind in ENGINE_KINDS:
        engine_class(kind, settings.engine(kind).engine)


def load_engines(settings: Settings, *, warmup: bool = True) -> Engines:
    """Build, load and warm up the configured engines (blocking; call once per process).

    Raises:
        ConfigError, ImportError: see :func:`check_engines`.
        EngineUnavailableError: a model is missing (not downloaded, bad path).
        UnsupportedLanguageError: the configured languages cannot be served.
    """
    check_engines(settings)
    built: dict[str, Engine] = {}
    try:
        for kind in ENGINE_KINDS:
            cfg = settings.engine(kind)
            engine = create_engine(
                kind, cfg.engine, model=cfg.model, device=cfg.device, options=cfg.options
            )
            started = time.monotonic()
            logger.info(f"loading {kind} engine '{cfg.engine}'" + (f" ({cfg.model})" if cfg.model else ""))
            engine.load()
            if warmup:
                engine.warmup()
            built[kind] = engine
            logger.info(f"{kind} engine '{cfg.engine}' ready in {time.monotonic() - started:.2f} s")
    except BaseException:
        for engine in built.values():
            engine.close()
        raise
    engines = Engines(
        denoise=built["denoise"],  # type: ignore[arg-type]
        vad=built["vad_engine"],  # type: ignore[arg-type]
        asr=built["asr"],  # type: ignore[arg-type]
        mt=built["mt"],  # type: ignore[arg-type]
        tts=built["tts"],  # type: ignore[arg-type]
    )
    return engines


def segmenter_params(settings: Settings) -> SegmenterParams:
    """The segmenter's parameters from the ``vad`` section."""
    v = settings.vad
    return SegmenterParams(
        threshold=v.threshold,
        min_speech_ms=v.min_speech_ms,
        min_silence_ms=v.min_silence_ms,
        preroll_ms=v.preroll_ms,
        postroll_ms=v.postroll_ms,
        max_utterance_s=v.max_utterance_s,
    )


def cascade_options(settings: Settings, *, voice_store: Any | None = None) -> dict[str, Any]:
    """Keyword arguments for ``pipeline.cascade.build_cascade`` from the settings."""
    options: dict[str, Any] = {
        "segmenter": segmenter_params(settings),
        "warn_slow": settings.pipeline.warn_slower_than_realtime,
        "voice_capture": settings.voices.capture,
        "voice_store": voice_store,
    }
    if settings.voices.capture:
        from voices.capture import VoiceCaptureParams

        options["voice_params"] = VoiceCaptureParams(
            first_profile_s=settings.voices.first_profile_s,
            max_speech_s=max(settings.voices.max_capture_s, settings.voices.first_profile_s),
        )
    return options
