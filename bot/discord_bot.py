"""The Discord bot: slash commands (cogs loaded as extensions) and one voice session per guild.

``polyvox serve`` starts it when ``DISCORD_TOKEN`` is set (:func:`serve_bot`, which
keeps retrying while Discord is unreachable; :func:`run_bot` runs it alone). The
commands live in ``bot/cogs/``, one concern per cog: ``rooms`` (``/join``, ``/leave``,
``/language``, ``/room languages``, ``/captions``) and ``voice`` (``/voice enroll``,
``forget``, ``off``, ``on``, ``status``). This module holds what they share: settings,
stores, loaded engines, the sessions, the permission check and the error replies.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from loguru import logger

try:
    import discord
    from discord import app_commands
    from discord.ext import commands
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the Discord bot needs discord.py: pip install 'polyvox[discord]'") from exc

from bot.discord_settings import DiscordSettings
from bot.guild_settings import GuildSettingsStore
from pipeline.errors import ConfigError
from pipeline.room import Room
from transports.discord.session import SessionParams, VoiceIO, VoiceSession

if TYPE_CHECKING:
    from bot.config import Settings
    from pipeline.session import SessionFactory
    from voices.consent import VoiceConsent

__all__ = [
    "EXTENSIONS",
    "TOKEN_ENV",
    "CommandUserError",
    "DiscordSettings",
    "PolyvoxBot",
    "PolyvoxCommandTree",
    "bot_intents",
    "discord_token",
    "reply",
    "room_manager_only",
    "run_bot",
    "serve_bot",
]

#: The environment variable the bot token is read from (never from a file).
TOKEN_ENV = "DISCORD_TOKEN"

#: The cogs, loaded as extensions in this order.
EXTENSIONS = ("bot.cogs.rooms", "bot.cogs.voice", "bot.cogs.changer", "bot.cogs.imagine")


class CommandUserError(app_commands.AppCommandError):
    """A command cannot do what was asked; the message tells the user why and what to do."""


def bot_intents() -> discord.Intents:
    """The gateway intents the bot needs: guilds and voice states, nothing privileged."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.voice_states = True
    return intents


async def reply(interaction: discord.Interaction, message: str, *, ephemeral: bool = False) -> None:
    """Answer an interaction, or follow up when it was answered or deferred already."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(message, ephemeral=ephemeral)


def room_manager_only():
    """App command check: the caller has Manage Channels or one of the manager roles."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage()
        permissions = interaction.permissions
        if permissions.manage_channels or permissions.administrator:
            return True
        allowed = set(getattr(interaction.client, "discord_settings", DiscordSettings()).manager_roles)
        for role in getattr(interaction.user, "roles", ()):
            if role.name in allowed or str(role.id) in allowed:
                return True
        raise app_commands.MissingPermissions(["manage_channels"])

    return app_commands.check(predicate)


def error_message(error: app_commands.AppCommandError, manager_roles: list[str]) -> str:
    """What to tell a user whose command failed."""
    if isinstance(error, CommandUserError):
        return str(error)
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server, not in direct messages."
    if isinstance(error, app_commands.MissingPermissions):
        roles = f" or one of the roles {', '.join(manager_roles)}" if manager_roles else ""
        return f"You need the **Manage Channels** permission{roles} to change this room."
    if isinstance(error, app_commands.BotMissingPermissions):
        missing = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"I am missing the {missing} permission here; ask a server admin to grant it."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.TransformerError):
        return f"'{error.value}' is not a valid {error.type.name.replace('_', ' ')}."
    original = getattr(error, "original", error)
    return f"Something went wrong: {original}. The room keeps running; try again."


class PolyvoxCommandTree(app_commands.CommandTree):
    """Every command error becomes a clear, ephemeral reply to the person who ran it."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.CommandInvokeError):
            logger.opt(exception=error.original).error(
                f"/{interaction.command.qualified_name if interaction.command else '?'} failed"
            )
        roles = getattr(self.client, "discord_settings", DiscordSettings()).manager_roles
        try:
            await reply(interaction, error_message(error, roles), ephemeral=True)
        except discord.HTTPException as exc:
            logger.warning(f"could not report a command error to the user: {exc}")


class PolyvoxBot(commands.AutoShardedBot):
    """The bot: shared services for the cogs and the voice sessions of every guild.

    Sharded (discord.py's ``AutoShardedBot``): ``discord.shard_count``/``shard_ids`` let
    several bot processes split the guilds; by default one process runs every shard
    Discord recommends (one for a small bot).

    Args:
        settings: polyvox's resolved settings (languages, segmentation, pipeline).
        discord_settings: The ``discord:`` section.
        factory: Makes every channel's interpretation session (the engines, shared by
            every session, and the voice consent policy: the one voice store that the
            CLI and the WebRTC rooms use too).
        guild_store: Guild settings; default: the SQLite file ``discord_settings.database``.
        voice_io: The voice connection layer (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        discord_settings: DiscordSettings | None = None,
        factory: SessionFactory,
        guild_store: GuildSettingsStore | None = None,
        voice_io: VoiceIO | None = None,
    ) -> None:
        discord_settings = discord_settings or DiscordSettings()
        shards: dict[str, Any] = {}
        if discord_settings.shard_count is not None:
            shards["shard_count"] = discord_settings.shard_count
        if discord_settings.shard_ids is not None:
            shards["shard_ids"] = list(discord_settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            tree_cls=PolyvoxCommandTree,
            help_command=None,
            **shards,
        )
        self.settings = settings
        self.discord_settings = discord_settings
        self.factory = factory
        self.engines = factory.engines
        if factory.consent is None:
            from voices.consent import VoiceConsent

            factory.consent = VoiceConsent(None, engine=factory.engines.tts)
        self.consent: VoiceConsent = factory.consent
        default_languages = self.discord_settings.room_languages or list(
            dict.fromkeys([settings.languages.speaker, *settings.languages.listeners])
        )
        db = self.discord_settings.database_path()
        self.guild_store = guild_store or GuildSettingsStore(db, default_languages=default_languages)
        self.voice_io = voice_io
        self.sessions: dict[int, VoiceSession] = {}
        #: Where each member's picture requests are answered: (guild, user) → text channel.
        self.picture_channels: dict[tuple[int, int], Any] = {}
        self._empty_timers: dict[int, asyncio.TimerHandle] = {}

    async def setup_hook(self) -> None:
        await self.migrate_opt_outs()
        await self.load_extensions()
        if self.discord_settings.registers_commands:
            guild_id = self.discord_settings.command_guild_id
            guild = discord.Object(guild_id) if guild_id else None
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            logger.info(f"registered {len(synced)} slash commands" + (f" in guild {guild_id}" if guild_id else ""))

    async def migrate_opt_outs(self) -> None:
        """Move voice opt-outs an older version kept in the guild database into the one
        voice store, so no refusal is lost (once; the old table is emptied)."""
        for user_id in self.guild_store.take_legacy_opt_outs():
            await self.consent.set_allowed(str(user_id), False)

    async def load_extensions(self) -> None:
        """Load every cog in :data:`EXTENSIONS`."""
        for name in EXTENSIONS:
            if name not in self.extensions:
                await self.load_extension(name)

    async def on_ready(self) -> None:
        shards = f" (shards {sorted(self.shards)} of {self.shard_count})" if self.shard_count and self.shard_count > 1 else ""
        logger.info(f"Discord bot ready as {self.user} in {len(self.guilds)} servers{shards}")

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await session.stop()
        await super().close()

    # -- rooms --------------------------------------------------------------------

    def session_params(self) -> SessionParams:
        """Voice connection parameters from the ``discord:`` settings."""
        return SessionParams(reconnect_after_s=self.discord_settings.reconnect_after_s)

    def new_room(self, guild_id: int) -> Room:
        """A room with the guild's languages."""
        return Room(self.guild_store.guild(guild_id).languages, default_language=self.settings.languages.speaker)

    async def register_member(self, session: VoiceSession, member: discord.abc.User) -> None:
        """Tell a session about a member in its channel: language, name (their voice and
        consent follow from their id)."""
        if getattr(member, "bot", False):
            return
        await session.member_joined(
            member.id,
            language=self.guild_store.member_language(session.guild_id, member.id),
            name=getattr(member, "display_name", "") or str(member),
        )

    def captions_sender(self, guild: discord.Guild):
        """The caption poster a session looks up per caption: the channel's ``send`` or ``None``."""

        def current():
            channel_id = self.guild_store.guild(guild.id).captions_channel_id
            channel = guild.get_channel(channel_id) if channel_id else None
            return channel.send if channel is not None else None

        return current

    async def start_session(self, channel: discord.VoiceChannel | discord.StageChannel) -> VoiceSession:
        """Interpret ``channel`` (leaving any other channel of that guild first)."""
        guild = channel.guild
        current = self.sessions.get(guild.id)
        if current is not None:
            await current.stop()
        session = VoiceSession(
            channel,
            self.factory,
            self.new_room(guild.id),
            voice_io=self.voice_io,
            params=self.session_params(),
            send_caption=self.captions_sender(guild),
            speaker_name=lambda uid: _display_name(guild, uid),
            on_closed=self._session_closed,
            post_image=lambda image, speaker: self.post_image(guild, image, speaker),
            notify=lambda notice: self.notify(guild, notice),
        )
        for member in channel.members:
            await self.register_member(session, member)
        self.sessions[guild.id] = session
        try:
            await session.start()
        except BaseException:
            self.sessions.pop(guild.id, None)
            raise
        return session

    def _picture_channel(self, guild: discord.Guild, user_id: str) -> Any:
        """Where a member's pictures go: where they ran ``/imagine``, else the captions channel."""
        channel = self.picture_channels.get((guild.id, int(user_id))) if user_id.isdigit() else None
        if channel is None:
            channel_id = self.guild_store.guild(guild.id).captions_channel_id
            channel = guild.get_channel(channel_id) if channel_id else None
        return channel

    async def post_image(self, guild: discord.Guild, image: Any, speaker: str) -> None:
        """Post a picture to the text channel, the request as its caption."""
        import io

        channel = self._picture_channel(guild, image.user_id)
        if channel is None:
            logger.info(f"a picture for {image.user_id} has no text channel to go to (/imagine or /captions on)")
            return
        caption = f"**{speaker}** asked for: {image.caption}"
        if image.prompt != image.caption:
            caption += f"\n> {image.prompt}"
        await channel.send(caption[:2000], file=discord.File(io.BytesIO(image.png), filename="picture.png"))

    async def notify(self, guild: discord.Guild, notice: Any) -> None:
        """Tell a member about their picture request, where they made it."""
        channel = self._picture_channel(guild, notice.user_id)
        if channel is not None and notice.user_id.isdigit():
            await channel.send(f"<@{notice.user_id}> {notice.text}"[:2000])

    async def stop_session(self, guild_id: int) -> bool:
        """Leave the guild's voice channel; ``False`` when there was none."""
        session = self.sessions.get(guild_id)
        if session is None:
            return False
        await session.stop()
        return True

    async def _session_closed(self, session: VoiceSession) -> None:
        if self.sessions.get(session.guild_id) is session:
            del self.sessions[session.guild_id]
        timer = self._empty_timers.pop(session.guild_id, None)
        if timer is not None:
            timer.cancel()

    def schedule_leave_if_empty(self, session: VoiceSession) -> None:
        """Leave the session's channel once no human is left in it (after a grace period)."""
        guild_id = session.guild_id
        timer = self._empty_timers.pop(guild_id, None)
        if timer is not None:
            timer.cancel()
        if _humans(session.channel):
            return

        def leave() -> None:
            self._empty_timers.pop(guild_id, None)
            if self.sessions.get(guild_id) is session and not _humans(session.channel):
                logger.info(f"voice channel {session.channel.id} is empty; leaving")
                asyncio.ensure_future(session.stop())

        self._empty_timers[guild_id] = asyncio.get_running_loop().call_later(
            self.discord_settings.leave_when_empty_s, leave
        )


def _humans(channel: Any) -> list[Any]:
    return [m for m in getattr(channel, "members", []) if not getattr(m, "bot", False)]


def _display_name(guild: discord.Guild, user_id: str) -> str:
    member = guild.get_member(int(user_id)) if user_id.isdigit() else None
    return member.display_name if member is not None else user_id


async def serve_bot(
    settings: Settings,
    discord_settings: DiscordSettings | None,
    factory: SessionFactory,
    *,
    token: str,
    retry_after_s: float = 5.0,
    retry_max_s: float = 300.0,
) -> None:
    """Run the bot on the current event loop until it is closed or cancelled (for
    ``polyvox serve``, next to the WebRTC server, sharing the loaded engines and the
    voice consent).

    It never takes the process down: a token Discord refuses, an unreachable Discord
    (no network, DNS, a 5xx, a gateway that drops us for good) is logged in one line and
    tried again after ``retry_after_s``, doubling up to ``retry_max_s``, while the rest of
    the server (the WebRTC rooms) keeps running.
    """
    discord_settings = discord_settings or DiscordSettings()
    default_languages = discord_settings.room_languages or list(
        dict.fromkeys([settings.languages.speaker, *settings.languages.listeners])
    )
    # One settings database for every attempt (a bot object cannot be started twice).
    store = GuildSettingsStore(discord_settings.database_path(), default_languages=default_languages)
    loop = asyncio.get_running_loop()
    delay = retry_after_s
    attempt = 0
    try:
        while True:
            attempt += 1
            started = loop.time()
            bot = PolyvoxBot(settings=settings, discord_settings=discord_settings, factory=factory, guild_store=store)
            try:
                async with bot:
                    await bot.start(token)
                return  # closed on purpose
            except discord.LoginFailure:
                problem = (
                    f"Discord refused the token in {TOKEN_ENV}: copy it again from the Bot page of your "
                    "application in the Developer Portal and restart"
                )
                level = "ERROR"
            except (TimeoutError, OSError, discord.GatewayNotFound, discord.ConnectionClosed, discord.HTTPException) as exc:
                problem = f"cannot reach Discord ({_one_line(exc)})"
                level = "WARNING"
            if loop.time() - started > 10 * retry_max_s:
                delay = retry_after_s  # it ran for a long while: a new outage starts over
            logger.log(
                level,
                f"Discord bot: {problem}; the WebRTC rooms keep running; trying again in {delay:.0f} s (attempt {attempt})",
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_s)
    finally:
        store.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def discord_token() -> str | None:
    """The bot token from ``DISCORD_TOKEN``, or ``None`` when it is not set."""
    return os.environ.get(TOKEN_ENV, "").strip() or None


def run_bot(settings: Settings, discord_settings: DiscordSettings | None = None, *, token: str | None = None) -> None:
    """Load the engines and run the bot until interrupted (blocking); Discord refusing
    the token or being unreachable is logged and retried (see :func:`serve_bot`).

    Raises:
        ConfigError: no token in ``DISCORD_TOKEN``.
    """
    from bot.app import load_engines, session_factory

    token = token or discord_token()
    if not token:
        raise ConfigError(f"the Discord bot needs a token: set {TOKEN_ENV} in the environment")
    engines = load_engines(settings)
    try:
        asyncio.run(serve_bot(settings, discord_settings, session_factory(settings, engines), token=token))
    finally:
        engines.close()
