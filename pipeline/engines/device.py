"""Device choice shared by the torch engines (NeMo, NLLB, XTTS)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import EngineUnavailableError

__all__ = ["pick_device"]


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
