"""Device choice shared by the engines: torch (NeMo, NLLB, XTTS) and CTranslate2 (Whisper)."""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import EngineUnavailableError

__all__ = ["pick_ct2_device", "pick_device"]


def pick_device(setting: str, torch: Any) -> str:
    """``auto`` → ``cuda`` where CUDA works, else ``cpu``; an explicit ``cuda[:N]`` must exist.

    Args:
        setting: The engine's ``device`` setting.
        torch: The imported torch module (engines import it lazily).

    Raises:
        EngineUnavailableError: CUDA was asked for and is not available.
    """
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailableError(f"device '{setting}' requested but CUDA is not available")
    return setting


def pick_ct2_device(setting: str, ctranslate2: Any) -> tuple[str, int]:
    """``(device, index)`` for a CTranslate2 model from an engine's ``device`` setting.

    ``auto`` → the first CUDA device CTranslate2 sees, else the CPU; ``cuda:N`` must exist.

    Args:
        setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        ctranslate2: The imported ctranslate2 module (engines import it lazily).

    Raises:
        EngineUnavailableError: CUDA was asked for and CTranslate2 sees no such device.
        ValueError: a setting that names no device.
    """
    cuda = ctranslate2.get_cuda_device_count()
    if setting == "auto":
        return ("cuda", 0) if cuda > 0 else ("cpu", 0)
    if setting == "cpu":
        return "cpu", 0
    match = re.fullmatch(r"cuda(?::(\d+))?", setting)
    if match is None:
        raise ValueError(f"device must be auto, cpu or cuda[:N], not {setting!r}")
    index = int(match.group(1) or 0)
    if index >= cuda:
        raise EngineUnavailableError(
            f"device '{setting}' requested but CTranslate2 sees {cuda} CUDA device(s)"
        )
    return "cuda", index
