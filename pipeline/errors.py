"""The exceptions polyvox raises across module boundaries.

Every error carries ``retryable``: whether the same call may succeed if tried again
(a busy model, a dropped connection) or will fail the same way until something changes
(bad audio, an unsupported language, a missing model).
"""

from __future__ import annotations

__all__ = [
    "AudioInputError",
    "ConfigError",
    "EngineError",
    "EngineUnavailableError",
    "PolyvoxError",
    "UnsupportedLanguageError",
]


class PolyvoxError(Exception):
    """Base class of polyvox's own errors.

    Args:
        message: One line a user can act on.
        retryable: Whether the same request may succeed when tried again.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(PolyvoxError):
    """The configuration (file, profile or ``--set`` override) is invalid."""


class AudioInputError(PolyvoxError):
    """Audio could not be read: missing, empty, corrupt, unsupported or too large."""


class EngineError(PolyvoxError):
    """A model failed while working on one request; other requests are unaffected."""

    retryable = True


class EngineUnavailableError(PolyvoxError):
    """An engine cannot be used here: its extra is not installed or it is not built yet."""


class UnsupportedLanguageError(PolyvoxError):
    """An engine was asked for a language or language pair it does not support."""
