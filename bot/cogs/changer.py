"""The voice changer on Discord: ``/changer on [voice]``, ``/changer off``, ``/changer voices``.

In voice mode the bot speaks a member's speech again in another voice (a neutral voice,
or the voice of someone who enrolled it as a voice-changer target), live, chunk by
chunk, with no text in between. Discord itself still carries the member's own voice to
the others: listeners who want only the changed voice mute that member locally
(right-click → Mute), which does not stop the bot from hearing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import CommandUserError, reply
from pipeline.errors import PolyvoxError

if TYPE_CHECKING:
    from bot.discord_bot import PolyvoxBot

__all__ = ["ChangerCog", "setup"]


class ChangerCog(commands.GroupCog, group_name="changer", group_description="Speak in another voice (voice changer)"):
    """A member's own voice-changer mode."""

    def __init__(self, bot: PolyvoxBot) -> None:
        self.bot = bot
        super().__init__()

    def _session(self, interaction: discord.Interaction):  # type: ignore[no-untyped-def]
        if self.bot.engines.vc is None:
            raise CommandUserError("This server has no voice changer (it needs a voice-conversion engine: the gpu and cpu profiles have one).")
        session = self.bot.sessions.get(interaction.guild_id or 0)
        if session is None:
            raise CommandUserError("I am not in a voice channel here: someone with Manage Channels runs `/join` first.")
        return session

    @app_commands.command(name="on", description="Others hear you in another voice, live (no translation)")
    @app_commands.describe(voice="A neutral voice (see /changer voices) or someone who allowed their voice as a target")
    @app_commands.guild_only()
    async def on(self, interaction: discord.Interaction, voice: str | None = None) -> None:
        session = self._session(interaction)
        try:
            participant = await session.interpretation.set_mode(str(interaction.user.id), "voice", voice=voice)
        except PolyvoxError as exc:
            raise CommandUserError(str(exc)) from exc
        name = participant.changer_voice.name if participant.changer_voice is not None else "the default voice"
        await reply(
            interaction,
            f"Voice changer on: I speak what you say in the voice **{name}**, live. Discord still carries your own "
            "voice: listeners who want only the changed one mute you locally (right-click → Mute).",
            ephemeral=True,
        )

    @app_commands.command(name="off", description="Back to interpretation")
    @app_commands.guild_only()
    async def off(self, interaction: discord.Interaction) -> None:
        session = self._session(interaction)
        await session.interpretation.set_mode(str(interaction.user.id), "interpret")
        await reply(interaction, "Voice changer off: your speech is interpreted again.", ephemeral=True)

    @app_commands.command(name="voices", description="The neutral voices you can speak in")
    async def voices(self, interaction: discord.Interaction) -> None:
        if self.bot.engines.vc is None:
            raise CommandUserError("This server has no voice changer.")
        names = ", ".join(f"`{n}`" for n in self.bot.engines.vc.neutral_voices())
        await reply(
            interaction,
            f"Neutral voices: {names}. You can also use the voice of someone who enrolled it as a voice-changer "
            "target (`/voice enroll changer_target:True`), by their user id.",
            ephemeral=True,
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ChangerCog(bot))  # type: ignore[arg-type]
