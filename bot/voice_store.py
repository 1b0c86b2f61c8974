"""The voice profile store as the chat commands see it, and a stand-in until voices/ lands.

``/voice enroll``, ``/voice forget`` and ``/voice status`` talk to a :class:`VoiceStore`.
The real store (XTTS conditioning latents and speaker embeddings, built in ``voices/``)
implements this protocol; :class:`SQLiteVoiceStore` is the default until then: it keeps
the enrollment audio itself, so a profile can be built from it later, and never clones.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.audio import rms_dbfs

__all__ = ["MIN_ENROLL_SECONDS", "SQLiteVoiceStore", "VoiceStore"]

#: Less enrollment speech than this cannot condition a voice.
MIN_ENROLL_SECONDS = 3.0


@runtime_checkable
class VoiceStore(Protocol):
    """Persisted voice profiles, one per user.

    Methods may block (disk, model inference): callers run them off the event loop.
    """

    def enroll(self, user_id: int, pcm16k: np.ndarray) -> str:
        """Build and keep a profile from 16 kHz mono int16 speech; returns a one-line summary.

        Raises:
            ValueError: the audio is too short or silent to build a profile from.
        """
        ...

    def forget(self, user_id: int) -> int:
        """Delete everything stored for the user; returns how many items were deleted."""
        ...

    def status(self, user_id: int) -> str | None:
        """One line about the user's stored profile, or ``None`` when there is none."""
        ...

    def profile(self, user_id: int) -> Any | None:
        """The profile the TTS engine speaks with (``Participant.voice``), if any."""
        ...


class SQLiteVoiceStore:
    """Keeps each user's enrollment speech in SQLite; builds no cloned voice (``profile``
    is always ``None``), which suits the offline profile's non-cloning TTS.

    Args:
        path: The database file, or ``":memory:"``.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS enrollments ("
            " user_id INTEGER PRIMARY KEY, pcm BLOB NOT NULL, seconds REAL NOT NULL,"
            " level_dbfs REAL NOT NULL, created REAL NOT NULL)"
        )

    def enroll(self, user_id: int, pcm16k: np.ndarray) -> str:
        pcm = np.ascontiguousarray(pcm16k, dtype=np.int16)
        seconds = len(pcm) / 16000
        if seconds < MIN_ENROLL_SECONDS:
            raise ValueError(
                f"only {seconds:.1f} s of speech; at least {MIN_ENROLL_SECONDS:.0f} s is needed"
            )
        level = rms_dbfs(pcm)
        if level < -60:
            raise ValueError("the recording is silent")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO enrollments (user_id, pcm, seconds, level_dbfs, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, pcm.tobytes(), seconds, level, time.time()),
            )
        return f"{seconds:.1f} s of speech stored (level {level:.0f} dBFS)"

    def forget(self, user_id: int) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM enrollments WHERE user_id = ?", (user_id,)).rowcount

    def status(self, user_id: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seconds, created FROM enrollments WHERE user_id = ?", (user_id,)
            ).fetchone()
        if row is None:
            return None
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row[1]))
        return f"enrolled with {row[0]:.1f} s of speech on {when}"

    def profile(self, user_id: int) -> Any | None:
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
