"""Enrolled voices on disk: an embedded SQLite database plus one tensor file per profile.

Layout under the data directory (created with owner-only permissions: voices are
biometric data)::

    voices.sqlite3                 profiles (one per user), opt-outs, voice-changer targets
    tensors/<profile id>.v<N>.npz  the latents of version N of a profile
    tensors/changer-<id>.npy       a voice-changer target (its owner allowed others to speak in it)

Only enrolled profiles are stored; automatically captured ones live in memory for the
session. :meth:`VoiceStore.forget` removes a user's rows and tensor files together. An
opt-out is kept through ``forget`` (it is what stops the bot capturing that user again)
and removed with ``opt_out(user, False)``.

Every method is blocking (SQLite and file I/O, and ``enroll`` runs the model): call them
off the event loop. One store may be used from several threads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger

from pipeline.engines.base import VADEngine
from pipeline.errors import ConfigError, PolyvoxError
from voices.enrollment import (
    ENROLLMENT_SAMPLE_RATE,
    CheckedRecording,
    EnrollmentLimits,
    check_enrollment_file,
    check_enrollment_speech,
)
from voices.profile import VoiceCloner, VoiceLatents, VoiceProfile

__all__ = ["StoredVoice", "VoiceStore", "VoiceStoreError"]

_DB_NAME = "voices.sqlite3"
_TENSOR_DIR = "tensors"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS voice_profiles (
    user_id    TEXT PRIMARY KEY,
    profile_id TEXT NOT NULL UNIQUE,
    version    INTEGER NOT NULL,
    source     TEXT NOT NULL,
    seconds    REAL NOT NULL,
    created    REAL NOT NULL,
    file       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS voice_opt_outs (
    user_id TEXT PRIMARY KEY,
    since   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changer_targets (
    user_id TEXT PRIMARY KEY,
    file    TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL
);
"""


class VoiceStoreError(PolyvoxError):
    """The voice store cannot be opened, read or written."""


@dataclass(frozen=True)
class StoredVoice:
    """One row of :meth:`VoiceStore.list`: what is stored for a user, without the tensors.

    Attributes:
        user_id: The user.
        profile_id: Their profile's id (``None`` when only an opt-out is stored).
        version: The profile's version.
        seconds: Seconds of speech it was made from.
        created: When this version was enrolled (Unix time).
        opted_out: Whether the user opted out of voice cloning.
        changer_target: Whether others may speak in this user's voice (voice changer).
    """

    user_id: str
    profile_id: str | None
    version: int | None
    seconds: float | None
    created: float | None
    opted_out: bool
    changer_target: bool = False


class VoiceStore:
    """Persisted voice profiles and opt-outs under ``data_dir``.

    Args:
        data_dir: Folder for the database and tensor files; created if missing.
        vad: VAD engine that measures the speech in enrollment audio; ``None`` loads
            silero (the ``offline`` extra) on first enrollment.
        limits: Enrollment limits (default 3-60 s of speech, 25 MiB, 5 min of audio).

    Raises:
        VoiceStoreError: the folder or database cannot be created or opened.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        vad: VADEngine | None = None,
        limits: EnrollmentLimits | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.limits = limits or EnrollmentLimits()
        self._vad = vad
        self._lock = threading.RLock()
        self._tensors = self.data_dir / _TENSOR_DIR
        try:
            self._tensors.mkdir(parents=True, exist_ok=True)
            for folder in (self.data_dir, self._tensors):
                folder.chmod(0o700)
            with self._connect() as db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise VoiceStoreError(f"cannot open the voice store in {self.data_dir}: {exc}") from exc

    # -- enrollment ----------------------------------------------------------------

    def enroll(
        self,
        user_id: str,
        pcm: np.ndarray,
        engine: VoiceCloner,
        *,
        name: str = "recording",
    ) -> VoiceProfile:
        """Check ``pcm`` (16 kHz mono int16), compute the voice and store it for ``user_id``.

        A user has one enrolled profile: enrolling again replaces it, keeping its id and
        increasing its version. Enrolling is explicit consent, so it clears an opt-out.
        Nothing is written when a check or the model fails.

        Args:
            user_id: Whose voice this is.
            pcm: Their speech, mono int16 at 16 kHz.
            engine: A TTS engine that clones voices (``XTTSEngine``).
            name: What to call the audio in error messages.

        Raises:
            VoiceEnrollmentError: silence, no speech, under 3 s or over 60 s of speech.
            ConfigError: ``engine`` cannot clone voices.
            EngineError: the model failed.
            VoiceStoreError: the profile could not be written.
        """
        _require_cloner(engine)
        measure = check_enrollment_speech(pcm, self._vad_engine(), self.limits, name=name)
        return self.enroll_checked(user_id, CheckedRecording(name, measure), engine)

    def check_file(self, path: str | os.PathLike[str]) -> CheckedRecording:
        """Check an enrollment file without any voice model: exists, size, decodes, speech.

        Raises:
            AudioInputError: the file is missing, too large, not audio or corrupt.
            VoiceEnrollmentError: silence, no speech, under 3 s or over 60 s of speech.
        """
        return check_enrollment_file(path, self._vad_engine(), self.limits)

    def enroll_checked(
        self, user_id: str, recording: CheckedRecording, engine: VoiceCloner
    ) -> VoiceProfile:
        """Compute the voice of a checked recording (:meth:`check_file`) and store it.

        Raises:
            ConfigError: ``engine`` cannot clone voices.
            EngineError: the model failed.
            VoiceStoreError: the profile could not be written.
        """
        _require_cloner(engine)
        measure = recording.measure
        latents = engine.condition(measure.speech, ENROLLMENT_SAMPLE_RATE)
        with self._lock:
            previous = self._row(user_id)
            if previous is None:
                profile = VoiceProfile(user_id, latents, measure.seconds, "enrolled")
            else:
                profile = VoiceProfile(
                    user_id,
                    latents,
                    measure.seconds,
                    "enrolled",
                    id=previous["profile_id"],
                    version=previous["version"] + 1,
                )
            file = self._write_tensors(profile)
            try:
                with self._connect() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO voice_profiles "
                        "(user_id, profile_id, version, source, seconds, created, file) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            user_id,
                            profile.id,
                            profile.version,
                            profile.source,
                            profile.seconds,
                            profile.created,
                            file.name,
                        ),
                    )
                    db.execute("DELETE FROM voice_opt_outs WHERE user_id = ?", (user_id,))
            except sqlite3.Error as exc:
                file.unlink(missing_ok=True)
                raise VoiceStoreError(f"cannot save the voice of {user_id}: {exc}") from exc
            if previous is not None and previous["file"] != file.name:
                (self._tensors / previous["file"]).unlink(missing_ok=True)
        logger.info(
            f"enrolled voice of {user_id}: {profile.seconds:.1f} s of speech, "
            f"profile {profile.id[:8]} v{profile.version}"
        )
        return profile

    def enroll_file(
        self,
        user_id: str,
        path: str | os.PathLike[str],
        engine: VoiceCloner | Callable[[], VoiceCloner],
    ) -> VoiceProfile:
        """Enroll from an audio file (wav, mp3, ogg, m4a, ... anything ffmpeg reads).

        The file is checked completely (:meth:`check_file`) before the voice model is
        used; pass a loader as ``engine`` and the model is not even loaded for a file
        that fails.

        Args:
            user_id: Whose voice this is.
            path: The recording.
            engine: A cloning TTS engine, or a zero-argument callable that loads and
                returns one (called only once the file passed every check).

        Raises:
            AudioInputError: the file is missing, too large, not audio or corrupt.
            VoiceEnrollmentError, ConfigError, EngineError, VoiceStoreError: see :meth:`enroll`.
        """
        if isinstance(engine, VoiceCloner):
            _require_cloner(engine)  # a wrong engine is reported before the file's checks
        recording = self.check_file(path)
        if not isinstance(engine, VoiceCloner) and callable(engine):
            engine = engine()
        return self.enroll_checked(user_id, recording, engine)

    # -- reading -------------------------------------------------------------------

    def get(self, user_id: str) -> VoiceProfile | None:
        """The enrolled profile of ``user_id``, or ``None``.

        A row whose tensor file is missing or unreadable counts as no profile (and is
        logged): the user is spoken in the neutral voice until they enroll again.
        """
        row = self._row(user_id)
        if row is None:
            return None
        path = self._tensors / row["file"]
        try:
            with np.load(path, allow_pickle=False) as data:
                latents = VoiceLatents(data["gpt_cond_latent"], data["speaker_embedding"])
        except (OSError, KeyError, ValueError) as exc:
            logger.warning(f"voice profile of {user_id} is unreadable ({path}: {exc}); ignoring it")
            return None
        return VoiceProfile(
            user_id=user_id,
            latents=latents,
            seconds=row["seconds"],
            source=row["source"],
            id=row["profile_id"],
            version=row["version"],
            created=row["created"],
        )

    def list(self) -> list[StoredVoice]:
        """Everything stored, one entry per user (profile and/or opt-out), by user id."""
        with self._connect() as db:
            profiles = {r["user_id"]: r for r in db.execute("SELECT * FROM voice_profiles")}
            opted_out = {r["user_id"] for r in db.execute("SELECT user_id FROM voice_opt_outs")}
            targets = {r["user_id"] for r in db.execute("SELECT user_id FROM changer_targets")}
        voices = []
        for user_id in sorted(set(profiles) | opted_out | targets):
            row = profiles.get(user_id)
            voices.append(
                StoredVoice(
                    user_id=user_id,
                    profile_id=row["profile_id"] if row else None,
                    version=row["version"] if row else None,
                    seconds=row["seconds"] if row else None,
                    created=row["created"] if row else None,
                    opted_out=user_id in opted_out,
                    changer_target=user_id in targets,
                )
            )
        return voices

    # -- consent -------------------------------------------------------------------

    def forget(self, user_id: str) -> bool:
        """Delete the enrolled profile of ``user_id``: its row and its tensor files, and
        their voice-changer target.

        Returns:
            Whether there was a profile (or a target) to delete.
        """
        with self._lock:
            target = self.remove_changer_target(user_id)
            row = self._row(user_id)
            if row is None:
                return target
            with self._connect() as db:
                db.execute("DELETE FROM voice_profiles WHERE user_id = ?", (user_id,))
            # Every version's file, including any a crash left behind.
            for path in self._tensors.glob(f"{row['profile_id']}.*"):
                path.unlink(missing_ok=True)
        logger.info(f"forgot the voice of {user_id}")
        return True

    def opt_out(self, user_id: str, opted_out: bool = True) -> None:
        """Record that ``user_id`` does (or no longer does) refuse voice cloning.

        Opting out does not delete an enrolled profile (``forget`` does); while opted out,
        neither it nor automatic capture is used.
        """
        with self._connect() as db:
            if opted_out:
                db.execute(
                    "INSERT OR REPLACE INTO voice_opt_outs (user_id, since) VALUES (?, ?)",
                    (user_id, time.time()),
                )
            else:
                db.execute("DELETE FROM voice_opt_outs WHERE user_id = ?", (user_id,))

    def is_opted_out(self, user_id: str) -> bool:
        """Whether ``user_id`` has opted out of voice cloning."""
        with self._connect() as db:
            found = db.execute(
                "SELECT 1 FROM voice_opt_outs WHERE user_id = ?", (user_id,)
            ).fetchone()
        return found is not None

    # -- voice-changer targets -------------------------------------------------------

    def set_changer_target(self, user_id: str, embedding: np.ndarray, seconds: float) -> None:
        """Store ``user_id``'s voice as a voice-changer target: they allow others to speak
        in it. Storing it is their explicit consent, so it clears an opt-out."""
        name = f"changer-{uuid.uuid4().hex}.npy"
        path = self._tensors / name
        handle, temporary = tempfile.mkstemp(dir=self._tensors, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, np.asarray(embedding, dtype=np.float32).reshape(-1), allow_pickle=False)
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise VoiceStoreError(f"cannot write {path}: {exc}") from exc
        with self._lock:
            old = self._target_row(user_id)
            try:
                with self._connect() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO changer_targets (user_id, file, seconds, created) VALUES (?, ?, ?, ?)",
                        (user_id, name, seconds, time.time()),
                    )
                    db.execute("DELETE FROM voice_opt_outs WHERE user_id = ?", (user_id,))
            except sqlite3.Error as exc:
                path.unlink(missing_ok=True)
                raise VoiceStoreError(f"cannot save the voice-changer target of {user_id}: {exc}") from exc
            if old is not None:
                (self._tensors / old["file"]).unlink(missing_ok=True)
        logger.info(f"{user_id} allowed their voice as a voice-changer target ({seconds:.1f} s of speech)")

    def changer_target(self, user_id: str) -> np.ndarray | None:
        """The voice-changer target of ``user_id``, when they allowed one (an opt-out
        does not delete it, but the caller must not use it then: ``VoiceConsent``)."""
        row = self._target_row(user_id)
        if row is None:
            return None
        try:
            return np.load(self._tensors / row["file"], allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning(f"voice-changer target of {user_id} is unreadable: {exc}; ignoring it")
            return None

    def remove_changer_target(self, user_id: str) -> bool:
        """Withdraw ``user_id``'s voice as a target: row and file deleted. Returns whether
        there was one."""
        with self._lock:
            row = self._target_row(user_id)
            if row is None:
                return False
            with self._connect() as db:
                db.execute("DELETE FROM changer_targets WHERE user_id = ?", (user_id,))
            (self._tensors / row["file"]).unlink(missing_ok=True)
        logger.info(f"withdrew the voice-changer target of {user_id}")
        return True

    def _target_row(self, user_id: str) -> sqlite3.Row | None:
        with self._connect() as db:
            return db.execute("SELECT * FROM changer_targets WHERE user_id = ?", (user_id,)).fetchone()

    # -- internals -----------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation, committed on success (one per call: thread-safe)."""
        try:
            db = sqlite3.connect(self.data_dir / _DB_NAME, timeout=30)
        except sqlite3.Error as exc:
            raise VoiceStoreError(f"cannot open {self.data_dir / _DB_NAME}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def _row(self, user_id: str) -> sqlite3.Row | None:
        with self._connect() as db:
            return db.execute(
                "SELECT * FROM voice_profiles WHERE user_id = ?", (user_id,)
            ).fetchone()

    def _write_tensors(self, profile: VoiceProfile) -> Path:
        """Write the profile's latents atomically; returns the file."""
        path = self._tensors / f"{profile.id}.v{profile.version}.npz"
        handle, temporary = tempfile.mkstemp(dir=self._tensors, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(
                    file,
                    gpt_cond_latent=profile.gpt_cond_latent,
                    speaker_embedding=profile.speaker_embedding,
                )
            os.replace(temporary, path)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise VoiceStoreError(f"cannot write {path}: {exc}") from exc
        return path

    def _vad_engine(self) -> VADEngine:
        if self._vad is None:
            from pipeline.engines.vad.silero import SileroVADEngine

            vad = SileroVADEngine()
            vad.load()
            self._vad = vad
        return self._vad


def _require_cloner(engine: object) -> None:
    if not isinstance(engine, VoiceCloner) or not getattr(engine, "clones_voices", True):
        raise ConfigError(
            f"tts engine '{getattr(engine, 'name', type(engine).__name__)}' cannot clone "
            "voices; enroll with a cloning engine (tts.engine: xtts)"
        )
