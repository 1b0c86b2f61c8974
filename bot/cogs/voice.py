"""Voice commands, each about the caller's own voice: ``/voice enroll``, ``/voice forget``,
``/voice off``, ``/voice on``, ``/voice status``.

Enrollment takes the caller's next ~10 s of speech in the interpreted channel, or an
audio attachment. Profiles and opt-outs live in the one voice store every transport and
the CLI share (``voices.consent.VoiceConsent``, keyed by the caller's Discord id); a
change applies at once in every running session the caller is in.
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
from pipeline.errors import AudioInputError, ConfigError
from voices.enrollment import EnrollmentLimits

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

    @app_commands.command(name="enroll", description="Record your voice: your next ~10 s in the channel, or an audio file")
    @app_commands.describe(
        recording="An audio file of you speaking (wav, mp3, ogg, m4a...), 10-30 s",
        changer_target="Also let others speak in your voice with the voice changer (/changer on voice:<your id>)",
    )
    async def enroll(
        self, interaction: discord.Interaction, recording: discord.Attachment | None = None, changer_target: bool = False
    ) -> None:
        user = interaction.user
        if changer_target and self.bot.consent.converter is None:
            raise CommandUserError("This server has no voice changer, so your voice cannot be a voice-changer target.")
        if not self.bot.consent.clones and not changer_target:
            raise CommandUserError(
                "This server speaks interpretations in a neutral voice: it does not clone voices, "
                "so there is nothing to enroll."
            )
        if not await self.bot.consent.allowed(str(user.id)):
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
        least = EnrollmentLimits().min_speech_s
        if len(pcm) < least * 16000:
            raise CommandUserError(
                f"I heard only {len(pcm) / 16000:.1f} s of your speech; at least {least:.0f} s is needed. Try again."
            )
        lines = []
        try:
            if changer_target:
                seconds = await self.bot.consent.enroll_changer_target(str(user.id), pcm, name="your recording")
                lines.append(
                    f"Others may now speak in your voice with the voice changer ({seconds:.1f} s of speech); "
                    "`/voice untarget` withdraws it."
                )
            if self.bot.consent.clones:
                profile = await self.bot.consent.enroll(str(user.id), pcm, name="your recording")
                lines.append(f"Your voice is enrolled: {profile.seconds:.1f} s of speech, profile version {profile.version}.")
        except (AudioInputError, ConfigError) as exc:
            raise CommandUserError(f"I could not build your voice from that: {str(exc).removeprefix('your recording: ')}.") from exc
        await reply(interaction, "\n".join(lines), ephemeral=True)

    @app_commands.command(name="untarget", description="No longer let others speak in your voice (voice changer)")
    async def untarget(self, interaction: discord.Interaction) -> None:
        removed = await self.bot.consent.revoke_changer_target(str(interaction.user.id))
        text = "Nobody can speak in your voice any more." if removed else "Your voice was not a voice-changer target."
        await reply(interaction, text, ephemeral=True)

    @app_commands.command(name="forget", description="Delete everything stored about your voice")
    async def forget(self, interaction: discord.Interaction) -> None:
        deleted = await self.bot.consent.forget(str(interaction.user.id))
        learnt = "What this session learnt of your voice is discarded too."
        if deleted:
            await reply(interaction, f"Deleted your stored voice profile and its files. {learnt}", ephemeral=True)
        else:
            await reply(interaction, f"There was no stored voice profile of yours. {learnt}", ephemeral=True)

    @app_commands.command(name="off", description="Use a neutral voice for your interpretation (no cloning)")
    async def off(self, interaction: discord.Interaction) -> None:
        await self.bot.consent.set_allowed(str(interaction.user.id), False)
        await reply(
            interaction,
            "Your voice is off: your interpretation uses a neutral voice, your voice is not cloned, "
            "and what was learnt of it this session is discarded.",
            ephemeral=True,
        )

    @app_commands.command(name="on", description="Let the interpretation imitate your voice again")
    async def on(self, interaction: discord.Interaction) -> None:
        await self.bot.consent.set_allowed(str(interaction.user.id), True)
        await reply(interaction, "Your voice is on: your interpretation imitates your voice.", ephemeral=True)

    @app_commands.command(name="status", description="What is stored about your voice and whether it is cloned")
    async def status(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        profile = await self.bot.consent.status(str(user_id))
        if not self.bot.consent.clones:
            cloning = "not used here (this server speaks in a neutral voice)"
        else:
            cloning = "on" if await self.bot.consent.allowed(str(user_id)) else "off (neutral voice)"
        language = self.bot.guild_store.member_language(interaction.guild_id or 0, user_id) if interaction.guild_id else None
        lines = [
            f"Voice cloning: **{cloning}**",
            f"Stored profile: {profile or 'none'}",
            f"Language you speak here: {language or f'not set (assumed {self.bot.settings.languages.speaker})'}",
        ]
        await reply(interaction, "\n".join(lines), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(VoiceCog(bot))  # type: ignore[arg-type]
