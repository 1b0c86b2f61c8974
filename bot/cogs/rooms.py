"""Room commands: ``/join``, ``/leave``, ``/language``, ``/room languages``, ``/captions``.

Changing the room (joining, leaving, its languages, captions) needs Manage Channels or
a configured manager role; ``/language`` is each member's own. Settings are stored per
guild and applied to a running session at once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands
from loguru import logger

from bot.discord_bot import CommandUserError, reply, room_manager_only
from pipeline.errors import UnsupportedLanguageError
from pipeline.languages import AUTO, display_name, is_auto, normalize

if TYPE_CHECKING:
    from bot.discord_bot import PolyvoxBot

__all__ = ["RoomsCog", "cloning_notice", "parse_languages", "setup"]

def parse_languages(text: str) -> list[str]:
    """``"en es, fr"`` → ``["en", "es", "fr"]``; raises :class:`CommandUserError` on a bad code."""
    codes = [c for c in re.split(r"[\s,;]+", text.strip().lower()) if c]
    if not codes:
        raise CommandUserError("Give at least one language code, e.g. `/room languages en es`.")
    normalized = []
    for code in codes:
        try:
            normalized.append(normalize(code))
        except UnsupportedLanguageError:
            raise CommandUserError(f"`{code}` is not a language code: use ISO 639-1 codes like `en` or `es`.") from None
    return list(dict.fromkeys(normalized))


def cloning_notice(languages: list[str], *, clones: bool = True) -> str:
    """What the bot tells a channel when it joins: what it does with voices, how to opt out.

    Args:
        languages: The room's languages.
        clones: Whether the voice engine clones voices (the offline profile's does not).
    """
    if clones:
        voices = (
            "**Your voice is cloned for the translation**: the interpretation imitates the voice of "
            "whoever spoke, learnt from their first sentences and kept for this session only "
            "(unless they enrolled with `/voice enroll`). Don't want that? `/voice off` uses a "
            "neutral voice for you at once and discards what was learnt; `/voice forget` deletes "
            "everything stored about your voice.\n"
        )
    else:
        voices = "Interpretations are spoken in a neutral synthetic voice: no voice is cloned or stored.\n"
    return (
        f"Interpreting this channel between **{' · '.join(display_name(code) for code in languages)}**: each sentence is spoken "
        "again in the other language(s).\n" + voices + "Tell me the language you speak with `/language`."
    )


class RoomsCog(commands.Cog, name="Rooms"):
    """Which voice channel is interpreted, into which languages, and where captions go."""

    room = app_commands.Group(name="room", description="Settings of this server's interpreted room", guild_only=True)

    def __init__(self, bot: PolyvoxBot) -> None:
        self.bot = bot

    # -- /join, /leave ------------------------------------------------------------

    @app_commands.command(name="join", description="Interpret the voice channel you are in")
    @app_commands.guild_only()
    @room_manager_only()
    async def join(self, interaction: discord.Interaction) -> None:
        voice = getattr(interaction.user, "voice", None)
        channel = voice.channel if voice is not None else None
        if channel is None:
            raise CommandUserError("Join a voice channel first, then run `/join` again.")
        me = interaction.guild.me if interaction.guild else None
        if me is not None:
            allowed = channel.permissions_for(me)
            missing = [n for n in ("view_channel", "connect", "speak") if not getattr(allowed, n)]
            if missing:
                raise app_commands.BotMissingPermissions(missing)
        current = self.bot.sessions.get(channel.guild.id)
        if current is not None and current.running and current.channel.id == channel.id:
            raise CommandUserError(f"I am already interpreting {channel.mention}.")
        # Connecting takes a few seconds, longer than Discord waits for a first answer.
        # Deferred ephemerally so that a failure is told to the caller only; the notice
        # everyone must read goes to the channel as a message of its own.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            session = await self.bot.start_session(channel)
        except Exception as exc:
            logger.warning(f"joining voice channel {channel.id} failed: {exc!r}")
            raise CommandUserError(f"I could not connect to {channel.mention}: {exc or type(exc).__name__}. Try again.") from exc
        notice = f"Joined {channel.mention}.\n" + cloning_notice(
            session.room.listener_languages, clones=self.bot.consent.clones
        )
        posted = await self._post_notice(interaction, notice)
        await reply(interaction, f"Joined {channel.mention}." if posted else notice, ephemeral=True)

    async def _post_notice(self, interaction: discord.Interaction, notice: str) -> bool:
        """Post the join notice where ``/join`` was run; ``False`` when that is not possible."""
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            return False
        try:
            await channel.send(notice)
        except discord.HTTPException as exc:
            logger.warning(f"could not post the join notice in {getattr(channel, 'id', '?')}: {exc}")
            return False
        return True

    @app_commands.command(name="leave", description="Stop interpreting and leave the voice channel")
    @app_commands.guild_only()
    @room_manager_only()
    async def leave(self, interaction: discord.Interaction) -> None:
        session = self.bot.sessions.get(interaction.guild_id or 0)
        if session is None:
            raise CommandUserError("I am not in a voice channel in this server.")
        channel = session.channel
        await interaction.response.defer(thinking=True)
        await self.bot.stop_session(session.guild_id)
        await reply(interaction, f"Left {channel.mention}.")

    # -- /language ----------------------------------------------------------------

    @app_commands.command(name="language", description="Set the language you speak")
    @app_commands.describe(code="ISO 639-1 code of the language you speak, e.g. en or es")
    @app_commands.guild_only()
    async def language(self, interaction: discord.Interaction, code: str) -> None:
        if is_auto(code.strip().lower()) and self.bot.engines.asr.detects_language:
            self.bot.guild_store.set_member_language(interaction.guild_id or 0, interaction.user.id, AUTO)
            session = self.bot.sessions.get(interaction.guild_id or 0)
            if session is not None:
                session.room.join(str(interaction.user.id), language=AUTO)
            await reply(interaction, "Got it: I will recognise the language you speak from your speech.", ephemeral=True)
            return
        (code,) = parse_languages(code)[:1]
        known = self.bot.engines.languages.recognise
        if code not in known:
            raise CommandUserError(
                f"I cannot recognise {display_name(code)} speech. Languages I understand: "
                f"{', '.join(display_name(c) for c in sorted(known))}."
            )
        guild_id = interaction.guild_id or 0
        self.bot.guild_store.set_member_language(guild_id, interaction.user.id, code)
        session = self.bot.sessions.get(guild_id)
        if session is not None:
            session.room.join(str(interaction.user.id), language=code)
        await reply(interaction, f"Got it: you speak **{display_name(code)}**.", ephemeral=True)

    # -- /room languages ----------------------------------------------------------

    @room.command(name="languages", description="Set the languages this room is interpreted into")
    @app_commands.describe(codes="Language codes separated by spaces, e.g. en es")
    @room_manager_only()
    async def room_languages(self, interaction: discord.Interaction, codes: str) -> None:
        languages = parse_languages(codes)
        engines = self.bot.engines
        try:
            speakers = [lang for lang in languages if engines.languages.can_recognise(lang)]
            engines.check_languages(speakers, languages)
        except UnsupportedLanguageError as exc:
            raise CommandUserError(f"This server cannot interpret {' · '.join(languages)}: {exc}.") from exc
        guild_id = interaction.guild_id or 0
        languages = self.bot.guild_store.set_languages(guild_id, languages)
        session = self.bot.sessions.get(guild_id)
        if session is not None:
            session.room.listener_languages = list(languages)
        await reply(interaction, f"This room is now interpreted between **{' · '.join(languages)}**.")

    @room.command(name="sounds", description="Carry laughter, crying and sighs into the interpretation")
    @app_commands.describe(state="on or off")
    @room_manager_only()
    async def room_sounds(self, interaction: discord.Interaction, state: Literal["on", "off"]) -> None:
        if self.bot.engines.events is None:
            raise CommandUserError("This server has no audio-event classifier (events engine), so sounds are not carried.")
        session = self.bot.sessions.get(interaction.guild_id or 0)
        if session is None:
            raise CommandUserError("I am not in a voice channel here: `/join` first.")
        session.room.nonverbal = state == "on" and session.interpretation.params.nonverbal is not None
        await reply(interaction, f"Laughter, crying and sighs are {'carried into' if session.room.nonverbal else 'left out of'} the interpretation.")

    # -- /captions ----------------------------------------------------------------

    @app_commands.command(name="captions", description="Post transcripts and translations to a text channel")
    @app_commands.describe(state="on or off", channel="Where captions go (default: this channel)")
    @app_commands.guild_only()
    @room_manager_only()
    async def captions(
        self,
        interaction: discord.Interaction,
        state: Literal["on", "off"],
        channel: discord.TextChannel | None = None,
    ) -> None:
        guild_id = interaction.guild_id or 0
        if state == "off":
            self.bot.guild_store.set_captions_channel(guild_id, None)
            await reply(interaction, "Captions are off.")
            return
        target = channel or interaction.channel
        if not isinstance(target, discord.TextChannel):
            raise CommandUserError("Captions need a text channel: pass one, e.g. `/captions on #captions`.")
        me = interaction.guild.me if interaction.guild else None
        if me is not None:
            allowed = target.permissions_for(me)
            if not (allowed.view_channel and allowed.send_messages):
                raise CommandUserError(f"I cannot post in {target.mention}: give me View Channel and Send Messages there.")
        self.bot.guild_store.set_captions_channel(guild_id, target.id)
        await reply(interaction, f"Captions go to {target.mention}.")

    # -- members coming and going -------------------------------------------------

    @commands.Cog.listener()
    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        session = self.bot.sessions.get(member.guild.id)
        if session is None:
            return
        if self.bot.user is not None and member.id == self.bot.user.id:
            if after.channel is None:
                # Our own reconnects pass through "no channel" too; anything else is a
                # moderator disconnecting the bot, which must not be fought.
                if session.running and not session.reconnecting:
                    logger.info(f"disconnected from voice channel {session.channel.id} by a moderator; leaving")
                    await session.stop()
            elif after.channel.id != session.channel.id:
                session.channel = after.channel  # moved by a moderator: follow
            return
        here = session.channel.id
        self.bot.schedule_leave_if_empty(session)
        if after.channel is not None and after.channel.id == here and (before.channel is None or before.channel.id != here):
            await self.bot.register_member(session, member)
        elif before.channel is not None and before.channel.id == here and (after.channel is None or after.channel.id != here):
            # Their last words are still interpreted before they are released.
            await session.member_left(member.id)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(RoomsCog(bot))  # type: ignore[arg-type]
