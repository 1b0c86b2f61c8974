"""Engines by name: what ``config.yaml`` may choose for each stage.

Entries are import paths, so a heavy backend is imported only when chosen (its
extra may not be installed; the engine's import error then names the extra).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pipeline.engines.base import Engine
from pipeline.errors import ConfigError

__all__ = ["ENGINES", "create_engine", "engine_class", "engine_names"]

#: kind → engine name → "module:Class".
ENGINES: dict[str, dict[str, str]] = {
    "vad_engine": {
        "silero": "pipeline.engines.vad.silero:SileroVADEngine",
    },
    "denoise": {
        "rnnoise": "pipeline.engines.denoise.rnnoise:RNNoiseDenoiseEngine",
        "deepfilternet": "pipeline.engines.denoise.deepfilternet:DeepFilterNetDenoiseEngine",
        "none": "pipeline.engines.denoise.passthrough:PassthroughDenoiseEngine",
    },
    "asr": {
        "pocketsphinx": "pipeline.engines.asr.pocketsphinx:PocketSphinxASREngine",
        "nemo": "pipeline.engines.asr.nemo:NeMoASREngine",
        "whisper": "pipeline.engines.asr.whisper:WhisperASREngine",
    },
    "mt": {
        "apertium": "pipeline.engines.mt.apertium:ApertiumMTEngine",
        "nllb": "pipeline.engines.mt.nllb:NLLBMTEngine",
    },
    "tts": {
        "espeak": "pipeline.engines.tts.espeak:EspeakTTSEngine",
        "xtts": "pipeline.engines.tts.xtts:XTTSEngine",
    },
    "events": {
        "ast": "pipeline.engines.events.ast:ASTAudioEventEngine",
    },
    "vc": {
        "openvoice": "pipeline.engines.vc.openvoice:OpenVoiceEngine",
    },
    "image": {
        "diffusers": "pipeline.engines.image.diffusers:DiffusersImageEngine",
    },
}


def engine_names(kind: str) -> list[str]:
    """Names that may be chosen for engine section ``kind``."""
    return sorted(ENGINES[kind])


def engine_class(kind: str, name: str) -> type[Engine]:
    """Import and return the class registered as ``name`` for ``kind``.

    Raises:
        ConfigError: no such engine.
        ImportError: its optional dependencies are missing (the message names the extra).
    """
    table = ENGINES.get(kind)
    if table is None:
        raise ConfigError(f"unknown engine section '{kind}' (known: {', '.join(sorted(ENGINES))})")
    if name not in table:
        raise ConfigError(
            f"{kind}.engine: unknown engine '{name}' (choose from: {', '.join(engine_names(kind))})"
        )
    target = table[name]
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def create_engine(
    kind: str,
    name: str,
    *,
    model: str | None = None,
    device: str = "auto",
    options: dict[str, Any] | None = None,
) -> Engine:
    """Build (but do not load) the engine ``name`` for ``kind``.

    ``model`` and ``device`` are passed only to engines whose constructor takes them;
    setting one for an engine that has no such parameter is a configuration error.
    """
    cls = engine_class(kind, name)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = dict(options or {})
    if model is not None:
        kwargs["model"] = model
    if device != "auto" and ("device" in params or takes_any):
        kwargs["device"] = device
    for key in kwargs:
        if key not in params and not takes_any:
            accepted = sorted(p for p in params if p not in ("self", "args", "kwargs"))
            raise ConfigError(
                f"{kind}: engine '{name}' has no option '{key}' "
                f"(it takes: {', '.join(accepted) or 'no options'})"
            )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind}: engine '{name}': {exc}") from None
