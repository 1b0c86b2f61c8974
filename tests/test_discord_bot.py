"""The Discord bot's slash commands, driven the way Discord drives them.

Each test builds a real ``discord.Interaction`` from an interaction payload against a
guild held in the bot's real ``ConnectionState`` and dispatches it through the bot's
``CommandTree`` (option parsing, the real permission checks, the command callbacks,
the error handler). Only the two ends that would reach Discord are replaced: the
interaction's response/followup (recorded) and the voice connection (a fake
``VoiceIO``); sessions run the real cascade with the fake engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
import wave
from collections.abc import AsyncIterator
from typing import Any

import discord
import numpy as np
import pytest

from bot.config import load_settings
from bot.discord_bot import DiscordSettings, PolyvoxBot
from bot.guild_settings import GuildSettingsStore
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from tests.fakes import CloningBeepTTSEngine, fake_engines, silence, tone
from tests.test_discord_transport import RecordingSink, wait_for
from transports.discord.session import SessionParams
from voices.consent import VoiceConsent
from voices.store import VoiceStore

GUILD, VOICE, TEXT, HIDDEN_TEXT = 900, 901, 902, 903
FAST = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)
BOT_ID, ADMIN, ALICE, BOB = 800, 801, 802, 803
INTERPRETER_ROLE = 700
MEMBERS = {BOT_ID: ("polyvox", []), ADMIN: ("Ada", []), ALICE: ("Alice", [INTERPRETER_ROLE]), BOB: ("Bob", [])}
EVERYONE = discord.Permissions(
    view_channel=True, connect=True, speak=True, use_voice_activation=True, send_messages=True
)


# -- discord.py objects ---------------------------------------------------------------


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict:
    return {"id": str(user_id), "username": name, "global_name": name, "discriminator": "0", "avatar": None, "bot": bot}


def member_payload(user_id: int, name: str, *, roles=(), bot: bool = False) -> dict:
    return {
        "user": user_payload(user_id, name, bot=bot),
        "roles": [str(r) for r in roles],
        "joined_at": "2026-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def voice_state(user_id: int, channel_id: int | None) -> dict:
    """A VOICE_STATE_UPDATE payload, as the gateway sends it (with the member)."""
    name, roles = MEMBERS[user_id]
    return {"member": member_payload(user_id, name, roles=roles, bot=user_id == BOT_ID),
        "guild_id": str(GUILD), "user_id": str(user_id), "channel_id": str(channel_id) if channel_id else None,
        "session_id": f"s{user_id}", "deaf": False, "mute": False, "self_deaf": False, "self_mute": False,
        "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
    }


def role(role_id: int, name: str, permissions: discord.Permissions) -> dict:
    return {"id": str(role_id), "name": name, "permissions": str(permissions.value), "position": 0 if role_id == GUILD else 1,
            "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}


def guild_payload() -> dict:
    deny_send = {"id": str(GUILD), "type": 0, "allow": "0", "deny": str(discord.Permissions(send_messages=True).value)}
    return {
        "id": str(GUILD), "name": "Test server", "owner_id": "1", "member_count": 5, "features": [], "emojis": [],
        "stickers": [], "large": False, "unavailable": False,
        "roles": [role(GUILD, "@everyone", EVERYONE), role(INTERPRETER_ROLE, "Interpreters", discord.Permissions.none())],
        "channels": [
            {"id": str(VOICE), "type": 2, "name": "General", "position": 0, "permission_overwrites": [], "bitrate": 64000, "user_limit": 0},
            {"id": str(TEXT), "type": 0, "name": "chat", "position": 1, "permission_overwrites": []},
            {"id": str(HIDDEN_TEXT), "type": 0, "name": "announcements", "position": 2, "permission_overwrites": [deny_send]},
        ],
        "members": [member_payload(uid, name, roles=roles, bot=uid == BOT_ID) for uid, (name, roles) in MEMBERS.items()],
        "voice_states": [voice_state(ADMIN, VOICE), voice_state(ALICE, VOICE), voice_state(BOB, VOICE)],
    }


class Replies:
    """Stands in for ``InteractionResponse`` and ``Webhook`` followups: records what was said."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bool]] = []
        self.deferred = False
        self._done = False

    def is_done(self) -> bool:
        return self._done

    async def send_message(self, content: str | None = None, *, ephemeral: bool = False, **_: Any) -> None:
        assert not self._done, "an interaction can be answered once"
        self._done = True
        self.messages.append((content or "", ephemeral))

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        assert not self._done
        self._done = self.deferred = True

    async def send(self, content: str | None = None, *, ephemeral: bool = False, **_: Any) -> None:
        assert self._done, "followups come after the response"
        self.messages.append((content or "", ephemeral))

    @property
    def last(self) -> tuple[str, bool]:
        return self.messages[-1]


def command_data(path: list[str], options: list[dict], resolved: dict | None = None) -> dict:
    """The ``data`` of a chat-input interaction: ``["room", "languages"]`` is a subcommand."""
    top, *sub = path
    if sub:
        options = [{"type": discord.AppCommandOptionType.subcommand.value, "name": sub[0], "options": options}]
    data: dict = {"id": "1", "type": 1, "name": top, "options": options}
    if resolved:
        data["resolved"] = resolved
    return data


async def run_command(bot: PolyvoxBot, user_id: int, path: str, *, permissions: discord.Permissions | None = None,
                      options: list[dict] | None = None, resolved: dict | None = None, channel_id: int = TEXT) -> Replies:
    """Dispatch ``/path`` from ``user_id`` through the bot's command tree; return the replies."""
    name, roles = MEMBERS[user_id]
    member_data = member_payload(user_id, name, roles=roles)
    member_data["permissions"] = str((permissions or EVERYONE).value)
    payload = {
        "id": "5555", "application_id": "1", "type": 2, "token": "t", "version": 1, "guild_id": str(GUILD),
        "channel": {"id": str(channel_id), "type": 0}, "member": member_data, "locale": "en-US",
        "attachment_size_limit": 25 * 1024 * 1024, "app_permissions": "0",
        "data": command_data(path.split(), options or [], resolved),
    }
    interaction = discord.Interaction(data=payload, state=bot._connection)
    replies = Replies()
    interaction._cs_response = replies
    interaction._cs_followup = replies
    await bot.tree._call(interaction)
    return replies


def option(name: str, value: Any, kind: discord.AppCommandOptionType = discord.AppCommandOptionType.string) -> dict:
    return {"type": kind.value, "name": name, "value": value}


# -- the voice connection, faked at the VoiceIO seam ---------------------------------


class FakeVoiceClient:
    def __init__(self, channel: Any, generation: int) -> None:
        self.channel = channel
        self.connected = True
        self.mode = "aead_xchacha20_poly1305_rtpsize"
        self.secret_key = [generation] * 32
        self.playing: Any = None
        self.disconnects = 0

    def is_connected(self) -> bool:
        return self.connected

    def is_playing(self) -> bool:
        return self.playing is not None and self.connected

    def play(self, source: Any) -> None:
        self.playing = source

    def stop(self) -> None:
        self.playing = None

    async def disconnect(self, *, force: bool = False) -> None:
        self.connected = False
        self.disconnects += 1


class FakeReceiver:
    def __init__(self, on_audio) -> None:
        self.on_audio = on_audio
        self.removed: list[int] = []

    def remove_user(self, user_id: int) -> None:
        self.removed.append(user_id)


class FakeVoiceIO:
    def __init__(self) -> None:
        self.clients: list[FakeVoiceClient] = []
        self.attached: list[tuple[FakeVoiceClient, FakeReceiver]] = []
        self.detached = 0
        self.fail_connects = 0

    async def connect(self, channel: Any, *, time_limit_s: float) -> FakeVoiceClient:
        if self.fail_connects:
            self.fail_connects -= 1
            raise TimeoutError()
        client = FakeVoiceClient(channel, len(self.clients) + 1)
        self.clients.append(client)
        return client

    def make_source(self) -> Any:
        return RecordingSink()

    def make_receiver(self, voice_client: Any, on_audio) -> FakeReceiver:
        return FakeReceiver(on_audio)

    def attach(self, voice_client: Any, receiver: Any):
        self.attached.append((voice_client, receiver))

        def detach() -> None:
            self.detached += 1

        return detach


class LoopbackDiscordAPI:
    """A stand-in for Discord's REST API and CDN on 127.0.0.1: the bot's real HTTP client
    talks to it, so messages it posts and attachments it downloads go the real way."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []
        self.edits = 0
        self.files: dict[str, bytes] = {}
        #: Files attached to posted messages: (channel id, file name, bytes).
        self.uploads: list[tuple[int, str, bytes]] = []
        self.base = ""

    async def start(self):
        import json

        from aiohttp import web

        def json_response(data: dict, status: int = 200) -> web.Response:
            # Exactly "application/json", as Discord sends it (discord.py compares it).
            return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})

        async def me(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != "Bot test-token":
                return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
            return json_response(user_payload(BOT_ID, "polyvox", bot=True))

        async def post_message(request: web.Request) -> web.Response:
            channel_id = int(request.match_info["channel_id"])
            if request.content_type.startswith("multipart/"):  # a message with files
                body: dict = {}
                async for part in await request.multipart():
                    if part.name == "payload_json":
                        body = json.loads(await part.text())
                    else:
                        self.uploads.append((channel_id, part.filename or "", bytes(await part.read())))
            else:
                body = await request.json()
            self.messages.append((channel_id, body["content"]))
            return json_response({
                "id": str(len(self.messages)), "channel_id": str(channel_id), "guild_id": str(GUILD), "type": 0,
                "content": body["content"], "author": user_payload(BOT_ID, "polyvox", bot=True), "attachments": [],
                "embeds": [], "mentions": [], "mention_roles": [], "pinned": False, "mention_everyone": False,
                "tts": False, "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 0,
            })

        async def cdn(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            if name not in self.files:
                return web.Response(status=404)
            return web.Response(body=self.files[name])

        async def edit_message(request: web.Request) -> web.Response:
            channel_id = int(request.match_info["channel_id"])
            index = int(request.match_info["message_id"]) - 1
            body = await request.json()
            self.messages[index] = (channel_id, body["content"])
            self.edits += 1
            return json_response({
                "id": str(index + 1), "channel_id": str(channel_id), "guild_id": str(GUILD), "type": 0,
                "content": body["content"], "author": user_payload(BOT_ID, "polyvox", bot=True), "attachments": [],
                "embeds": [], "mentions": [], "mention_roles": [], "pinned": False, "mention_everyone": False,
                "tts": False, "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 0,
            })

        app = web.Application()
        app.router.add_get("/api/v10/users/@me", me)
        app.router.add_post("/api/v10/channels/{channel_id}/messages", post_message)
        app.router.add_patch("/api/v10/channels/{channel_id}/messages/{message_id}", edit_message)
        app.router.add_get("/attachments/{name}", cdn)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def discord_api(monkeypatch):
    api = await LoopbackDiscordAPI().start()
    monkeypatch.setattr(discord.http.Route, "BASE", f"{api.base}/api/v10")
    yield api
    await api.stop()


@pytest.fixture
async def bot(tmp_path, discord_api):
    settings = load_settings(profile="offline")
    discord_settings = DiscordSettings(
        database=str(tmp_path / "discord.sqlite3"), manager_roles=["Interpreters"], sync_commands=False,
        enroll_seconds=4, enroll_timeout_s=10, leave_when_empty_s=0.2, reconnect_after_s=1,
    )
    io_ = FakeVoiceIO()
    engines = fake_engines(tts=CloningBeepTTSEngine())
    # The one voice store every transport shares, in the test's folder.
    consent = VoiceConsent(VoiceStore(tmp_path / "voices", vad=engines.vad), engine=engines.tts)
    factory = SessionFactory(engines, InterpretationParams(segmenter=FAST, listener_languages=["es"]), consent=consent)
    client = PolyvoxBot(settings=settings, discord_settings=discord_settings, factory=factory, voice_io=io_)
    client.session_params = lambda: SessionParams(  # a fast watchdog for tests
        watch_interval_s=0.05, reconnect_after_s=0.2, reconnect_backoff_s=0.2,
    )
    client.fake_io = io_
    async with running_bot(client, discord_api):
        yield client


@contextlib.asynccontextmanager
async def running_bot(client: PolyvoxBot, discord_api: LoopbackDiscordAPI) -> AsyncIterator[PolyvoxBot]:
    """``client`` logged in to the loopback Discord API, in the test guild, extensions
    loaded; its sessions stopped and its HTTP client closed afterwards."""
    await client._async_setup_hook()  # what login() does first: bind the client to this loop
    state = client._connection
    state.user = discord.ClientUser(state=state, data=await client.http.static_login("test-token"))
    state._add_guild_from_data(guild_payload())
    await client.load_extensions()
    client.api = discord_api
    try:
        yield client
    finally:
        for session in list(client.sessions.values()):
            await session.stop()
        await client.http.close()


MANAGE = discord.Permissions(manage_channels=True, **{k: v for k, v in EVERYONE if v})


# -- room commands -------------------------------------------------------------------


async def test_join_without_manage_channels_is_refused_ephemerally(bot):
    replies = await run_command(bot, BOB, "join")
    (text, ephemeral), = replies.messages
    assert ephemeral and "Manage Channels" in text and "Interpreters" in text
    assert bot.sessions == {} and bot.fake_io.clients == []


async def test_join_with_a_manager_role_connects_registers_members_and_posts_the_cloning_notice(bot):
    bot.guild_store.set_member_language(GUILD, BOB, "es")
    replies = await run_command(bot, ALICE, "join")  # Alice has the Interpreters role
    assert replies.deferred and replies.messages == [("Joined <#901>.", True)]
    # Everyone must read what happens to their voice: a message of its own in the channel.
    ((channel_id, notice),) = bot.api.messages
    assert channel_id == TEXT
    assert "<#901>" in notice and "cloned" in notice and "/voice off" in notice and "/voice forget" in notice
    session = bot.sessions[GUILD]
    (client,) = bot.fake_io.clients
    assert client.playing is session.source and bot.fake_io.attached[0][0] is client
    assert session.room.listener_languages == ["en", "es"]
    assert {uid: (p.language, p.name) for uid, p in session.room.participants.items()} == {
        str(ADMIN): ("en", "Ada"), str(ALICE): ("en", "Alice"), str(BOB): ("es", "Bob"),
    }


async def test_join_needs_the_caller_in_a_voice_channel(bot):
    bot._connection.parse_voice_state_update(voice_state(ADMIN, None))
    replies = await run_command(bot, ADMIN, "join", permissions=MANAGE)
    assert replies.messages == [("Join a voice channel first, then run `/join` again.", True)]
    assert bot.sessions == {}


async def test_a_failed_connection_is_reported_and_leaves_no_session(bot):
    bot.fake_io.fail_connects = 1
    replies = await run_command(bot, ADMIN, "join", permissions=MANAGE)
    text, ephemeral = replies.last
    assert ephemeral and "could not connect" in text
    assert bot.sessions == {} and bot.api.messages == []


async def test_leave_disconnects_and_a_second_leave_says_there_is_nothing_to_leave(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]
    replies = await run_command(bot, ADMIN, "leave", permissions=MANAGE)
    assert replies.last == ("Left <#901>.", False)
    assert bot.sessions == {} and not session.running
    assert bot.fake_io.clients[0].disconnects == 1 and bot.fake_io.detached == 1
    replies = await run_command(bot, ADMIN, "leave", permissions=MANAGE)
    assert replies.messages == [("I am not in a voice channel in this server.", True)]


async def test_language_is_checked_against_the_recogniser_stored_and_applied_live(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    replies = await run_command(bot, BOB, "language", options=[option("code", "de")])
    text, ephemeral = replies.last
    assert ephemeral and "German (Deutsch)" in text and "English, Spanish (español)" in text
    replies = await run_command(bot, BOB, "language", options=[option("code", "ES")])
    assert replies.last == ("Got it: you speak **Spanish (español)**.", True)
    assert bot.guild_store.member_language(GUILD, BOB) == "es"
    assert bot.sessions[GUILD].room.language_of(str(BOB)) == "es"
    replies = await run_command(bot, BOB, "language", options=[option("code", "english")])
    assert replies.last[1] and "not a language code" in replies.last[0]


async def test_room_languages_need_a_manager_are_validated_and_change_the_live_room(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    room = bot.sessions[GUILD].room
    replies = await run_command(bot, BOB, "room languages", options=[option("codes", "en fr")])
    assert replies.last[1] and "Manage Channels" in replies.last[0]
    replies = await run_command(bot, ADMIN, "room languages", permissions=MANAGE, options=[option("codes", "en de")])
    text, ephemeral = replies.last
    assert ephemeral and "cannot interpret" in text and "en→de" in text
    assert room.listener_languages == ["en", "es"]
    replies = await run_command(bot, ADMIN, "room languages", permissions=MANAGE, options=[option("codes", "en, fr en")])
    assert replies.last == ("This room is now interpreted between **en · fr**.", False)
    assert room.listener_languages == ["en", "fr"] and room.targets_for(str(ALICE)) == ["fr"]
    assert bot.guild_store.guild(GUILD).languages == ["en", "fr"]


async def test_captions_on_a_channel_off_and_a_channel_the_bot_cannot_post_in(bot):
    channel_option = lambda cid: option("channel", str(cid), discord.AppCommandOptionType.channel)  # noqa: E731
    resolved = lambda cid, name: {"channels": {str(cid): {"id": str(cid), "type": 0, "name": name, "permissions": "0", "guild_id": str(GUILD)}}}  # noqa: E731
    replies = await run_command(
        bot, ADMIN, "captions", permissions=MANAGE,
        options=[option("state", "on"), channel_option(HIDDEN_TEXT)], resolved=resolved(HIDDEN_TEXT, "announcements"),
    )
    text, ephemeral = replies.last
    assert ephemeral and "cannot post in <#903>" in text
    assert bot.guild_store.guild(GUILD).captions_channel_id is None
    replies = await run_command(bot, ADMIN, "captions", permissions=MANAGE, options=[option("state", "on")])
    assert replies.last == ("Captions go to <#902>.", False)
    assert bot.guild_store.guild(GUILD).captions_channel_id == TEXT
    replies = await run_command(bot, ADMIN, "captions", permissions=MANAGE, options=[option("state", "off")])
    assert replies.last == ("Captions are off.", False)
    assert bot.guild_store.guild(GUILD).captions_channel_id is None
    replies = await run_command(bot, BOB, "captions", options=[option("state", "off")])
    assert replies.last[1] and "Manage Channels" in replies.last[0]


async def test_members_joining_and_leaving_the_channel_and_leaving_once_empty(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]
    state = bot._connection
    state.parse_voice_state_update(voice_state(BOB, None))
    await wait_for(lambda: str(BOB) not in session.room.participants, 5)
    assert session.receiver.removed == [BOB] and session.interpretation.holding(str(BOB)) == []
    bot.guild_store.set_member_language(GUILD, BOB, "es")
    state.parse_voice_state_update(voice_state(BOB, VOICE))
    await wait_for(lambda: str(BOB) in session.room.participants, 5)
    assert session.room.language_of(str(BOB)) == "es"
    for user in (ADMIN, ALICE, BOB):
        state.parse_voice_state_update(voice_state(user, None))
    await asyncio.wait_for(session.wait_closed(), 5)
    assert bot.sessions == {} and bot.fake_io.clients[0].disconnects == 1


async def test_a_dropped_voice_connection_is_replaced_and_the_room_kept(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    await run_command(bot, ADMIN, "room languages", permissions=MANAGE, options=[option("codes", "en fr")])
    await run_command(bot, BOB, "language", options=[option("code", "es")])
    session = bot.sessions[GUILD]
    room = session.room
    first = bot.fake_io.clients[0]
    first.connected = False  # network loss that discord.py gave up on
    await wait_for(lambda: len(bot.fake_io.clients) == 2, 5)
    second = bot.fake_io.clients[1]
    assert second.playing is session.source and session.reconnects == 1
    assert bot.fake_io.attached[-1][0] is second
    assert session.room is room and room.listener_languages == ["en", "fr"] and room.language_of(str(BOB)) == "es"


async def test_keys_renewed_by_discord_py_reattach_the_receiver(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]
    client = bot.fake_io.clients[0]
    client.secret_key = [99] * 32  # a 4015 resume: same client, new session description
    await wait_for(lambda: len(bot.fake_io.attached) == 2, 5)
    assert [c for c, _ in bot.fake_io.attached] == [client, client]
    assert bot.fake_io.detached == 1 and session.receiver is bot.fake_io.attached[-1][1]


# -- voice commands ------------------------------------------------------------------


def wav_bytes(pcm: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def attachment(bot: PolyvoxBot, filename: str, content: bytes) -> tuple[list[dict], dict]:
    """An attachment option whose file the loopback CDN serves."""
    bot.api.files[filename] = content
    url = f"{bot.api.base}/attachments/{filename}"
    data = {"id": "4444", "filename": filename, "size": len(content), "url": url, "proxy_url": url,
            "content_type": "application/octet-stream"}
    return [option("recording", "4444", discord.AppCommandOptionType.attachment)], {"attachments": {"4444": data}}


async def test_enroll_from_an_attachment_then_status_then_forget(bot):
    speech = wav_bytes(np.concatenate([tone(200, 5.0, 22050), tone(300, 3.0, 22050)]), rate=22050)
    options, resolved = attachment(bot, "me.wav", speech)
    replies = await run_command(bot, ALICE, "voice enroll", options=options, resolved=resolved)
    text, ephemeral = replies.last
    assert ephemeral and "enrolled" in text and "8.0 s of speech" in text  # resampled, not misread
    replies = await run_command(bot, ALICE, "voice status")
    text, _ = replies.last
    assert "Voice cloning: **on**" in text and "enrolled with 8.0 s" in text
    replies = await run_command(bot, ALICE, "voice forget")
    assert replies.last[1] and "Deleted your stored voice profile and its files" in replies.last[0]
    assert await bot.consent.status(str(ALICE)) is None
    assert list((bot.consent.store.data_dir / "tensors").iterdir()) == []
    replies = await run_command(bot, ALICE, "voice forget")
    assert "no stored voice profile" in replies.last[0]


async def test_enroll_rejects_a_file_that_is_not_audio_and_one_too_short(bot):
    payloads = {"notes.txt": b"hello, this is not audio at all" * 20, "short.wav": wav_bytes(tone(200, 1.0))}
    for name, expected in (("notes.txt", "could not read `notes.txt` as audio"), ("short.wav", "only 1.0 s")):
        options, resolved = attachment(bot, name, payloads[name])
        replies = await run_command(bot, ALICE, "voice enroll", options=options, resolved=resolved)
        text, ephemeral = replies.last
        assert ephemeral and expected in text, text
    assert await bot.consent.status(str(ALICE)) is None


async def test_enroll_live_records_the_callers_next_seconds_in_the_channel(bot):
    replies = await run_command(bot, ALICE, "voice enroll")
    assert replies.last[1] and "Join the voice channel I am interpreting" in replies.last[0]
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]

    def speak() -> None:  # the receiver thread: Bob talks too, only Alice is recorded
        time.sleep(0.2)
        for _ in range(250):
            session.feed_audio(BOB, silence(0.02).tobytes())
            session.feed_audio(ALICE, tone(300, 0.02).tobytes())
            time.sleep(0.001)

    speaker = threading.Thread(target=speak)
    speaker.start()
    replies = await run_command(bot, ALICE, "voice enroll")
    await asyncio.to_thread(speaker.join)
    assert replies.messages[0][1] and "Recording your next 4 s" in replies.messages[0][0]
    text, ephemeral = replies.last
    assert ephemeral and "enrolled: 4.0 s of speech" in text


async def test_voice_off_and_on_are_remembered_and_applied_to_the_live_room(bot):
    speech = np.concatenate([tone(200, 5.0), tone(300, 3.0)])
    await bot.consent.enroll(str(BOB), speech)
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    room = bot.sessions[GUILD].room
    assert room.voice_for(str(BOB)).source == "enrolled"
    replies = await run_command(bot, BOB, "voice off")
    assert replies.last[1] and "neutral voice" in replies.last[0]
    assert room.voice_for(str(BOB)) is None and not await bot.consent.allowed(str(BOB))
    assert "Voice cloning: **off" in (await run_command(bot, BOB, "voice status")).last[0]
    replies = await run_command(bot, BOB, "voice enroll")
    assert replies.last[1] and "/voice on" in replies.last[0]
    await run_command(bot, BOB, "voice on")
    assert room.voice_for(str(BOB)).source == "enrolled" and await bot.consent.allowed(str(BOB))


async def test_settings_survive_a_restart_of_the_bot(bot, tmp_path):
    await run_command(bot, ADMIN, "room languages", permissions=MANAGE, options=[option("codes", "es en")])
    await run_command(bot, ADMIN, "captions", permissions=MANAGE, options=[option("state", "on")])
    await run_command(bot, BOB, "language", options=[option("code", "es")])
    await run_command(bot, BOB, "voice off")
    bot.guild_store.close()
    reopened = GuildSettingsStore(tmp_path / "discord.sqlite3")
    assert reopened.guild(GUILD).languages == ["es", "en"]
    assert reopened.guild(GUILD).captions_channel_id == TEXT
    assert reopened.member_language(GUILD, BOB) == "es"
    assert VoiceStore(tmp_path / "voices").is_opted_out(str(BOB))


async def test_commands_in_direct_messages_are_refused(bot):
    payload = {
        "id": "5556", "application_id": "1", "type": 2, "token": "t", "version": 1,
        "channel": {"id": "77", "type": 1}, "user": user_payload(BOB, "Bob"), "locale": "en-US",
        "attachment_size_limit": 1024, "data": command_data(["leave"], []),
    }
    interaction = discord.Interaction(data=payload, state=bot._connection)
    replies = Replies()
    interaction._cs_response = replies
    interaction._cs_followup = replies
    await bot.tree._call(interaction)
    assert replies.messages == [("This command only works in a server, not in direct messages.", True)]


# -- a session on its own: captions ---------------------------------------------------


async def test_a_session_posts_each_utterance_as_one_caption_while_captions_are_on():
    from pipeline.room import Room
    from transports.discord.session import VoiceSession

    class Channel:
        id = VOICE
        guild = type("Guild", (), {"id": GUILD})()
        members: list = []

    class Message:
        def __init__(self, content: str) -> None:
            self.content = content

        async def edit(self, *, content: str) -> None:
            self.content = content

    posted: list[Message] = []
    captions_on = True

    async def send(message: str) -> Message:
        posted.append(Message(message))
        return posted[-1]

    room = Room(["en", "es"], default_language="en")
    session = VoiceSession(
        Channel(), SessionFactory(fake_engines(), InterpretationParams(segmenter=FAST)), room, voice_io=FakeVoiceIO(),
        send_caption=lambda: send if captions_on else None,
    )
    await session.member_joined(ALICE, language="en", name="Alice")
    await session.member_joined(BOB, language="es", name="Bob")
    await session.start()
    try:
        def talk(user: int, freq: int) -> None:
            pcm = np.concatenate([tone(freq, 0.4), silence(0.5)])
            for i in range(0, len(pcm), 320):
                session.feed_audio(user, pcm[i : i + 320].tobytes())
                time.sleep(0.002)

        await asyncio.to_thread(talk, ALICE, 440)
        await wait_for(lambda: posted and posted[-1].content.startswith("**Alice** (en): Tone 440.\n"), 10)
        await asyncio.to_thread(talk, BOB, 550)
        await wait_for(lambda: len(posted) == 2 and "\n" in posted[1].content, 10)
        captions_on = False
        await asyncio.to_thread(talk, ALICE, 660)
        await wait_for(lambda: len(session.source.keys("finish")) == 3, 10)
        await asyncio.sleep(0.3)
    finally:
        await session.stop()
    assert [m.content for m in posted] == [
        "**Alice** (en): Tone 440.\n> es: [es] Tone 440.", "**Bob** (es): Tone 550.\n> en: [en] Tone 550."
    ]


async def test_partial_captions_grow_in_one_edited_message_while_someone_speaks():
    from pipeline.room import Room
    from pipeline.streaming import StreamingParams
    from tests.fakes import ToneWordsASREngine
    from transports.discord.session import VoiceSession

    class Channel:
        id = VOICE
        guild = type("Guild", (), {"id": GUILD})()
        members: list = []

    class Message:
        def __init__(self, content: str) -> None:
            self.versions = [content]

        async def edit(self, *, content: str) -> None:
            self.versions.append(content)

    posted: list[Message] = []

    async def send(message: str) -> Message:
        posted.append(Message(message))
        return posted[-1]

    params = InterpretationParams(segmenter=FAST, streaming=StreamingParams(mode="consecutive", partial_interval_ms=200))
    session = VoiceSession(
        Channel(), SessionFactory(fake_engines(asr=ToneWordsASREngine()), params), Room(["en", "es"]),
        voice_io=FakeVoiceIO(), params=SessionParams(caption_edit_interval_s=0.3), send_caption=lambda: send,
    )
    await session.member_joined(ALICE, language="en", name="Alice")
    await session.start()
    try:
        pcm = np.concatenate([x for f in (300, 400, 500, 600) for x in (tone(f, 0.45), silence(0.03))] + [silence(0.8)])

        def talk() -> None:
            for i in range(0, len(pcm), 320):
                session.feed_audio(ALICE, pcm[i : i + 320].tobytes())
                time.sleep(0.02)  # real time: captions while she speaks

        await asyncio.to_thread(talk)
        await wait_for(lambda: posted and "> es:" in posted[-1].versions[-1], 10)
    finally:
        await session.stop()
    (message,) = posted
    assert message.versions[0].endswith(" …") and len(message.versions) >= 3
    assert message.versions[-1] == "**Alice** (en): W300 w400 w500 w600.\n> es: [es] W300 w400 w500 w600."


def test_the_bot_does_not_start_without_a_token(monkeypatch):
    from bot.discord_bot import run_bot
    from pipeline.errors import ConfigError

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        run_bot(load_settings(profile="offline"))


def test_the_bot_asks_for_no_privileged_intents():
    from bot.discord_bot import bot_intents

    intents = bot_intents()
    assert intents.guilds and intents.voice_states
    assert not (intents.message_content or intents.members or intents.presences)


async def test_a_moderator_disconnecting_the_bot_ends_the_session_and_join_twice_is_refused(bot):
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    replies = await run_command(bot, ADMIN, "join", permissions=MANAGE)
    assert replies.messages == [("I am already interpreting <#901>.", True)]
    session = bot.sessions[GUILD]
    bot._connection.parse_voice_state_update(voice_state(BOT_ID, VOICE))
    bot._connection.parse_voice_state_update(voice_state(BOT_ID, None))
    await asyncio.wait_for(session.wait_closed(), 5)
    assert bot.sessions == {} and len(bot.fake_io.clients) == 1  # no reconnect fight


async def test_a_token_discord_refuses_is_one_clear_line_retried_with_back_off(tmp_path, discord_api):
    from loguru import logger

    from bot.discord_bot import serve_bot

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    task = asyncio.ensure_future(serve_bot(
        load_settings(profile="offline"),
        DiscordSettings(database=str(tmp_path / "d.sqlite3"), sync_commands=False),
        SessionFactory(fake_engines()),
        token="not-a-token",
        retry_after_s=0.05,
        retry_max_s=0.1,
    ))
    try:
        await wait_for(lambda: len(lines) >= 3, 15)
        assert not task.done()  # it never gives up, and never raises into the server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.remove(sink)
    assert "refused the token in DISCORD_TOKEN" in lines[0] and "the WebRTC rooms keep running" in lines[0]
    assert [line.rsplit("(attempt ", 1)[1] for line in lines[:3]] == ["1)", "2)", "3)"]
    assert "trying again in 0 s" in lines[0]  # 0.05 s, rounded


async def test_captions_reach_the_configured_text_channel_through_discord(bot):
    await run_command(bot, ADMIN, "captions", permissions=MANAGE, options=[option("state", "on")])
    await run_command(bot, BOB, "language", options=[option("code", "es")])
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]

    def bob_talks() -> None:
        pcm = np.concatenate([tone(550, 0.4), silence(0.5)])
        for i in range(0, len(pcm), 320):
            session.feed_audio(BOB, pcm[i : i + 320].tobytes())
            time.sleep(0.002)

    await asyncio.to_thread(bob_talks)
    final = (TEXT, "**Bob** (es): Tone 550.\n> en: [en] Tone 550.")
    # The join notice, then the caption: posted as soon as there were words, edited into
    # its final form once translated (or posted final at once).
    await wait_for(lambda: len(bot.api.messages) == 2 and bot.api.messages[1] == final, 10)
