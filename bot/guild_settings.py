"""What each Discord guild chose, kept in an embedded SQLite file so it survives restarts.

Per guild: the languages its voice rooms are interpreted into and the text channel
captions go to. Per member of a guild: the language they speak. Voice consent is not
kept here: it lives with the voices (``voices.consent``), shared with every transport.

Every call is one short SQLite statement on a local file (well under a millisecond
with WAL), so the bot calls these methods directly from the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GuildSettings", "GuildSettingsStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guilds (
    guild_id INTEGER PRIMARY KEY,
    languages TEXT,
    captions_channel_id INTEGER
);
CREATE TABLE IF NOT EXISTS members (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    language TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
CREATE TABLE IF NOT EXISTS voice_opt_outs (
    user_id INTEGER PRIMARY KEY
);
"""


@dataclass
class GuildSettings:
    """One guild's choices.

    Attributes:
        guild_id: The Discord guild (server) id.
        languages: Languages its rooms are interpreted into (each utterance into every
            one of them except the speaker's own).
        captions_channel_id: Text channel for captions, or ``None`` for no captions.
    """

    guild_id: int
    languages: list[str] = field(default_factory=list)
    captions_channel_id: int | None = None


class GuildSettingsStore:
    """Guild and member settings in one SQLite file.

    Args:
        path: The database file (created with its folder if missing), or ``":memory:"``.
        default_languages: Room languages of a guild that has not chosen any.
    """

    def __init__(self, path: str | Path, *, default_languages: list[str] | tuple[str, ...] = ("en", "es")):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.default_languages = list(default_languages)
        # One connection shared under a lock: discord.py calls us from the event loop,
        # but enrollment and session threads may too.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- guilds -------------------------------------------------------------------

    def guild(self, guild_id: int) -> GuildSettings:
        """A guild's settings; defaults when it never changed any."""
        with self._lock:
            row = self._db.execute(
                "SELECT languages, captions_channel_id FROM guilds WHERE guild_id = ?", (guild_id,)
            ).fetchone()
        if row is None:
            return GuildSettings(guild_id, list(self.default_languages), None)
        languages = json.loads(row[0]) if row[0] else list(self.default_languages)
        return GuildSettings(guild_id, languages, row[1])

    def set_languages(self, guild_id: int, languages: list[str]) -> list[str]:
        """Set the languages a guild's rooms are interpreted into; returns them de-duplicated."""
        unique = list(dict.fromkeys(languages))
        with self._lock:
            self._db.execute(
                "INSERT INTO guilds (guild_id, languages) VALUES (?, ?) "
                "ON CONFLICT(guild_id) DO UPDATE SET languages = excluded.languages",
                (guild_id, json.dumps(unique)),
            )
        return unique

    def set_captions_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Send captions to ``channel_id``; ``None`` turns captions off."""
        with self._lock:
            self._db.execute(
                "INSERT INTO guilds (guild_id, captions_channel_id) VALUES (?, ?) "
                "ON CONFLICT(guild_id) DO UPDATE SET captions_channel_id = excluded.captions_channel_id",
                (guild_id, channel_id),
            )

    # -- members ------------------------------------------------------------------

    def member_language(self, guild_id: int, user_id: int) -> str | None:
        """The language a member said they speak in this guild, if they said."""
        with self._lock:
            row = self._db.execute(
                "SELECT language FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            ).fetchone()
        return row[0] if row else None

    def set_member_language(self, guild_id: int, user_id: int, language: str) -> None:
        """Record the language a member speaks in this guild."""
        with self._lock:
            self._db.execute(
                "INSERT INTO members (guild_id, user_id, language) VALUES (?, ?, ?) "
                "ON CONFLICT(guild_id, user_id) DO UPDATE SET language = excluded.language",
                (guild_id, user_id, language),
            )

    # -- migration -----------------------------------------------------------------

    def take_legacy_opt_outs(self) -> list[int]:
        """Voice opt-outs kept here by older versions, removed as they are returned.

        Consent now lives in one place, the voice store (``voices.consent``); the bot
        moves these there at start-up.
        """
        with self._lock:
            rows = self._db.execute("SELECT user_id FROM voice_opt_outs").fetchall()
            self._db.execute("DELETE FROM voice_opt_outs")
        return [int(r[0]) for r in rows]

    def forget_user(self, user_id: int) -> int:
        """Delete every setting stored for a user in every guild; returns rows deleted."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM members WHERE user_id = ?", (user_id,)).rowcount
        return deleted
