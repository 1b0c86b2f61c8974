"""The ``discord:`` section of ``config.yaml``.

Kept apart from the bot so that ``bot/config.py`` can mount it without importing
discord.py.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import UnsupportedLanguageError
from pipeline.languages import normalize

__all__ = ["DiscordSettings"]


class DiscordSettings(BaseModel):
    """The ``discord:`` section of ``config.yaml``.

    Attributes:
        database: SQLite file for guild settings (languages, captions channel, spoken
            languages, voice opt-outs) and, until ``voices/`` lands, voice enrollments.
        room_languages: Languages a guild's rooms are interpreted into until it runs
            ``/room languages``; empty: ``languages.speaker`` + ``languages.listeners``.
        manager_roles: Role names or ids that may run room commands (``/join``,
            ``/leave``, ``/room languages``, ``/captions``) besides members with the
            Manage Channels permission.
        enroll_seconds: Speech ``/voice enroll`` records from the channel.
        enroll_timeout_s: How long ``/voice enroll`` waits for that speech.
        leave_when_empty_s: Leave a voice channel this long after its last member left.
        reconnect_after_s: Reconnect when the voice connection has been down this long.
        sync_commands: Register the slash commands with Discord at start-up.
        command_guild_id: Register them in this guild only (instant, for development)
            instead of globally (can take up to an hour to show up).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    database: str = "~/.local/share/polyvox/discord.sqlite3"
    room_languages: list[str] = Field(default_factory=list)
    manager_roles: list[str] = Field(default_factory=list)
    enroll_seconds: float = Field(10.0, ge=3.0, le=60.0)
    enroll_timeout_s: float = Field(45.0, ge=5.0, le=300.0)
    leave_when_empty_s: float = Field(30.0, ge=0.0)
    reconnect_after_s: float = Field(10.0, ge=1.0)
    sync_commands: bool = True
    command_guild_id: int | None = None

    @field_validator("room_languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        try:
            return [normalize(code) for code in value]
        except UnsupportedLanguageError as exc:
            raise ValueError(str(exc)) from None

    def database_path(self) -> Path:
        """``database`` with ``~`` expanded."""
        return Path(self.database).expanduser()
