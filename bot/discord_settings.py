"""The ``discord:`` section of ``config.yaml``.

Kept apart from the bot so that ``bot/config.py`` can mount it without importing
discord.py.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
        shard_count: Gateway shards of the whole bot (Discord's sharding); ``None``: the
            count Discord recommends, all in this process.
        shard_ids: The shards this process runs (each of ``0 .. shard_count-1`` in
            exactly one process), so several bot processes split the guilds; ``None``:
            every shard. Needs ``shard_count``. Only the process holding shard 0
            registers the slash commands.
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
    shard_count: int | None = Field(None, ge=1, le=100000)
    shard_ids: list[int] | None = None

    @field_validator("room_languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        try:
            return [normalize(code) for code in value]
        except UnsupportedLanguageError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("shard_ids needs shard_count (the bot's total number of shards)")
        if not self.shard_ids:
            raise ValueError("shard_ids: list at least one shard, or leave it unset for all")
        bad = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if bad:
            raise ValueError(f"shard_ids: {bad[0]} is not a shard of 0..{self.shard_count - 1}")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("shard_ids: a shard is listed twice")
        return self

    @property
    def registers_commands(self) -> bool:
        """Whether this process registers the slash commands: one process is enough (the
        one holding shard 0, or the only one)."""
        return self.sync_commands and (self.shard_ids is None or 0 in self.shard_ids)

    def database_path(self) -> Path:
        """``database`` with ``~`` expanded."""
        return Path(self.database).expanduser()
