"""Voice commands, each about the caller's own voice: ``/voice enroll``, ``/voice forget``,
``/voice off``, ``/voice on``, ``/voice status``.

Enrollment takes the caller's next ~10 s of speech in the interpreted channel, or an
audio attachment. Profiles live in the bot's ``VoiceStore``; the opt-out is kept in the
guild settings database and applied to a running session at once.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import discord
import numpy as np
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import CommandUserError, reply
from bot.voice_store import MIN_ENROLL_SECONDS
from pipeline.errors import AudioInputError

if TYPE_CHECKING:
    from bot.discord_bot import PolyvoxBot

__all__ = ["MAX_ATTACHMENT_BYTES", "VoiceCog", "decode_attachment", "setup"]

#: Larger attachments are refused before downloading.
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
#: Enrollment audio beyond this is not used.
MAX_ENROLL_SECONDS = 60.0


def decode_attachment(data: bytes, filename: str) -> np.ndarray:
    """Decode an uploaded recording to 16 kHz mono int16 (blocking: ffmpeg may run).

    Raises:
        AudioInputError: not audio, corrupt or empty.
    """
    from pipeline.audio import load_audio

    suffix = Path(filename).suffix[:10] or ".bin"
    with tempfile.TemporaryDirectory(prefix="polyvox-enroll-") as folder:
        path = Path(folder) / f"enrollment{suffix}"
        path.write_bytes(data)
        return load_audio(path, max_bytes=MAX_ATTACHMENT_BYTES, max_seconds=600)


class VoiceCog(commands.GroupCog, group_name="voice", group_description="Your voice in interpreted rooms"):
    """The caller's voice profile and cloning consent."""

    def __init__(self, bot: PolyvoxBot) -> None:
        self.bot = bot
        super().__init__()

    def _apply(self, guild_id: int | None, user_id: int) -> None:
        session = self.bot.sessions.get(guild_id or 0)
        if session is not None and str(user_id) in session.room.participants:
            session.room.participants[str(user_id)].voice = self.bot.voice_for(user_id)

    @app_commands.command(name="enroll", description="Record your voice: your next ~10 s in the channel, or an audio file")
    @app_commands.describe(recording="An audio file of you speaking (wav, mp3, ogg, m4a...), 10-30 s")
    async def enroll(self, interaction: discord.Interaction, recording: discord.Attachment | None = None) -> None:
        user = interaction.user
        if self.bot.guild_store.voice_opted_out(user.id):
            raise CommandUserError("Your voice is off, so it is not cloned. Run `/voice on` first if you want to enroll.")
        if recording is not None:
            if recording.size > MAX_ATTACHMENT_BYTES:
                raise CommandUserError(f"`{recording.filename}` is too large ({recording.size // 1048576} MiB); send at most 25 MiB.")
            await interaction.response.defer(ephemeral=True, thinking=True)
            data = await recording.read()
            try:
                pcm = await asyncio.to_thread(decode_attachment, data, recording.filename)
            except AudioInputError as exc:
                raise CommandUserError(f"I could not read `{recording.filename}` as audio: {exc}") from exc
        else:
            session = self.bot.sessions.get(interaction.guild_id or 0)
            voice = getattr(user, "voice", None)
            if session is None or voice is None or voice.channel is None or voice.channel.id != session.channel.id:
                raise CommandUserError(
                    "Join the voice channel I am interpreting and run `/voice enroll` there, "
                    "or attach a recording: `/voice enroll recording:<file>`."
                )
            seconds = self.bot.discord_settings.enroll_seconds
            await interaction.response.send_message(
                f"Recording your next {seconds:.0f} s of speech: talk normally now (read something aloud).",
                ephemeral=True,
            )
            pcm = await session.capture(user.id, seconds, give_up_after_s=self.bot.discord_settings.enroll_timeout_s)
        pcm = pcm[: int(MAX_ENROLL_SECONDS * 16000)]
        if len(pcm) < MIN_ENROLL_SECONDS * 16000:
            raise CommandUserError(
                f"I heard only {len(pcm) / 16000:.1f} s of your speech; at least {MIN_ENROLL_SECONDS:.0f} s is needed. Try again."
            )
        try:
            summary = await asyncio.to_thread(self.bot.voice_store.enroll, user.id, pcm)
        except ValueError as exc:
            raise CommandUserError(f"I could not build your voice from that: {exc}.") from exc
        self._apply(interaction.guild_id, user.id)
        await reply(interaction, f"Your voice is enrolled: {summary}.", ephemeral=True)

    @app_commands.command(name="forget", description="Delete everything stored about your voice")
    async def forget(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        deleted = await asyncio.to_thread(self.bot.voice_store.forget, user_id)
        self._apply(interaction.guild_id, user_id)
        if deleted:
            await reply(interaction, f"Deleted your voice profile ({deleted} item(s)). Nothing about your voice is stored now.", ephemeral=True)
        else:
            await reply(interaction, "There was no stored voice profile of yours; nothing to delete.", ephemeral=True)

    @app_commands.command(name="off", description="Use a neutral voice for your interpretation (no cloning)")
    async def off(self, interaction: discord.Interaction) -> None:
        self.bot.guild_store.set_voice_opt_out(interaction.user.id, True)
        self._apply(interaction.guild_id, interaction.user.id)
        await reply(interaction, "Your voice is off: your interpretation uses a neutral voice and your voice is not cloned.", ephemeral=True)

    @app_commands.command(name="on", description="Let the interpretation imitate your voice again")
    async def on(self, interaction: discord.Interaction) -> None:
        self.bot.guild_store.set_voice_opt_out(interaction.user.id, False)
        self._apply(interaction.guild_id, interaction.user.id)
        await reply(interaction, "Your voice is on: your interpretation imitates your voice.", ephemeral=True)

    @app_commands.command(name="status", description="What is stored about your voice and whether it is cloned")
    async def status(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        profile = await asyncio.to_thread(self.bot.voice_store.status, user_id)
        cloning = "off (neutral voice)" if self.bot.guild_store.voice_opted_out(user_id) else "on"
        language = self.bot.guild_store.member_language(interaction.guild_id or 0, user_id) if interaction.guild_id else None
        lines = [
            f"Voice cloning: **{cloning}**",
            f"Stored profile: {profile or 'none'}",
            f"Language you speak here: {language or f'not set (assumed {self.bot.settings.languages.speaker})'}",
        ]
        await reply(interaction, "\n".join(lines), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(VoiceCog(bot))  # type: ignore[arg-type]
