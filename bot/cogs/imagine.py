"""Speech-to-image on Discord: ``/imagine``, then say what you want to see.

The member's next sentence in the interpreted voice channel (any language the room
recognises) becomes the request: it is translated into the image model's language,
drawn, and posted here for everyone with what they said as the caption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import CommandUserError, reply

if TYPE_CHECKING:
    from bot.discord_bot import PolyvoxBot

__all__ = ["ImagineCog", "setup"]


class ImagineCog(commands.Cog, name="Imagine"):
    """Pictures from what people say."""

    def __init__(self, bot: PolyvoxBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Say what you want to see: your next sentence becomes a picture")
    @app_commands.guild_only()
    async def imagine(self, interaction: discord.Interaction) -> None:
        from pipeline.imagine import NO_IMAGE_MODEL

        if self.bot.engines.image is None:
            raise CommandUserError(NO_IMAGE_MODEL)
        guild_id = interaction.guild_id or 0
        session = self.bot.sessions.get(guild_id)
        voice = getattr(interaction.user, "voice", None)
        if session is None or voice is None or voice.channel is None or voice.channel.id != session.channel.id:
            raise CommandUserError("Join the voice channel I am interpreting, then run `/imagine` and say what to draw.")
        if not session.interpretation.request_image(str(interaction.user.id)):
            raise CommandUserError("Pictures are off on this server.")
        if isinstance(interaction.channel, discord.abc.Messageable):
            self.bot.picture_channels[(guild_id, interaction.user.id)] = interaction.channel
        await reply(interaction, "Say what I should draw: your next sentence becomes a picture, posted here.", ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ImagineCog(bot))  # type: ignore[arg-type]
