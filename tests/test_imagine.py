"""Speech-to-image: a sentence that asks for a picture becomes one, translated into the
image model's language and drawn by a tiny random diffusers pipeline loaded by the
engine's real loader; shown in the page (aiortc client) and posted on Discord (fake)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image
from pipecat.processors.frame_processor import FrameProcessor

from pipeline.engines.image.diffusers import DiffusersImageEngine
from pipeline.file_mode import FileTransport
from pipeline.frames import ImageFrame, NoticeFrame
from pipeline.imagine import ImageParams, ImageRateLimiter, strip_trigger
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, InterpretationSession
from tests.fakes import fake_engines, silence, tone
from tests.test_discord_bot import (  # noqa: F401 - bot and discord_api are fixtures (used by name)
    ADMIN,
    ALICE,
    GUILD,
    MANAGE,
    TEXT,
    bot,
    discord_api,
    run_command,
)
from tests.tiny_media import write_diffusion
from tests.tiny_models import shared_checkpoint
from tests.waiting import wait_for

FAST = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)


@pytest.fixture(scope="module")
def drawer(tmp_path_factory) -> DiffusersImageEngine:
    path = shared_checkpoint(tmp_path_factory.getbasetemp(), "diffusion", write_diffusion)
    engine = DiffusersImageEngine(model=str(path), width=64, height=64, steps=1, seed=0)
    engine.load()
    return engine


def picture(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


# -- the pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "trigger", "wanted"),
    [
        ("Draw a red house.", "draw", "a red house"),
        ("draw, a red house", "Draw", "a red house"),
        ("Please draw a red house.", "draw", None),  # the trigger must come first
        ("Drawing is fun.", "draw", None),  # a whole word
        ("Imagine me a cat!", "imagine me", "a cat"),
        ("Draw.", "draw", None),  # nothing to draw
        ("Draw a cat", None, None),
    ],
)
def test_a_spoken_trigger_starts_a_request(text, trigger, wanted):
    assert strip_trigger(text, trigger) == wanted


def test_each_person_has_their_own_allowance_per_window():
    limiter = ImageRateLimiter(per_user=2, window_s=60)
    assert [limiter.allow("ann", now=t) for t in (0, 1)] == [0.0, 0.0]
    assert limiter.allow("ann", now=2) == pytest.approx(58)
    assert limiter.allow("bob", now=2) == 0.0
    assert limiter.allow("ann", now=61) == 0.0  # the first request left the window


def test_the_engine_draws_a_png_of_the_configured_size(drawer):
    image = picture(drawer.generate("a red house"))
    assert image.format == "PNG" and image.size == (64, 64)


# -- in a session ------------------------------------------------------------------------------


class Recorder(FrameProcessor):
    """The end of the cascade: keeps pictures and notices (what transports render)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, (ImageFrame, NoticeFrame)):
            self.seen.append(frame)
            return
        await self.push_frame(frame, direction)


class Collect:
    """Runs a session with fake engines and collects the pictures and notices it sends."""

    def __init__(self, engines, params: InterpretationParams) -> None:
        self.transport = FileTransport()
        self.recorder = Recorder()
        self.session = InterpretationSession(engines, self.transport, params, extra_processors=lambda _room: [self.recorder])

    async def __aenter__(self) -> Collect:
        await self.session.start()
        await self.transport.input().ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.stop()

    async def say(self, user: str, *parts: np.ndarray) -> None:
        pcm = np.concatenate(parts)
        for i in range(0, len(pcm), 320):
            await self.transport.input().feed(user, pcm[i : i + 320])

    def frames(self, kind: type) -> list:
        return [f for f in self.recorder.seen if isinstance(f, kind)]


async def test_a_spoken_request_in_spanish_is_translated_then_drawn_for_everyone(drawer):
    params = InterpretationParams(segmenter=FAST, streaming=None, images=ImageParams(trigger="tone"))
    async with Collect(fake_engines(image=drawer), params) as room:
        await room.session.join("ana", language="es")
        await room.say("ana", silence(0.2), tone(440, 0.5), silence(0.6))
        await wait_for(lambda: room.frames(ImageFrame), 30, what="a picture")
    (image,) = room.frames(ImageFrame)
    # "Tone 440." with trigger "tone": the request is "440", drawn as its English translation.
    assert (image.user_id, image.caption, image.prompt, image.language) == ("ana", "440", "[en] 440", "es")
    assert picture(image.png).size == (64, 64)
    assert [n.text for n in room.frames(NoticeFrame)] == ["Drawing “440”…"]


async def test_the_button_makes_the_next_sentence_a_request_and_only_that_one(drawer):
    params = InterpretationParams(segmenter=FAST, streaming=None, images=ImageParams())
    async with Collect(fake_engines(image=drawer), params) as room:
        await room.session.join("bob", language="en")
        assert room.session.request_image("bob")
        await room.say("bob", silence(0.2), tone(660, 0.5), silence(0.6), tone(550, 0.5), silence(0.6))
        await wait_for(lambda: room.frames(ImageFrame), 30, what="a picture")
        await asyncio.sleep(0.3)
    assert [(f.caption, f.prompt) for f in room.frames(ImageFrame)] == [("Tone 660.", "Tone 660.")]


async def test_too_many_requests_and_no_image_model_are_told_to_the_asker(drawer):
    params = InterpretationParams(segmenter=FAST, streaming=None, images=ImageParams(trigger="tone", per_user=1))
    async with Collect(fake_engines(image=drawer), params) as room:
        await room.session.join("bob")
        await room.say("bob", silence(0.2), tone(660, 0.5), silence(0.6), tone(550, 0.5), silence(0.6))
        await wait_for(lambda: len(room.frames(NoticeFrame)) == 2 and room.frames(ImageFrame), 30, what="notices")
    first, second = room.frames(NoticeFrame)
    assert first.text == "Drawing “660”…" and "try again in" in second.text and second.user_id == "bob"

    async with Collect(fake_engines(), params) as room:  # a profile without an image model
        await room.say("bob", silence(0.2), tone(660, 0.5), silence(0.6))
        await wait_for(lambda: room.frames(NoticeFrame), 10, what="a notice")
    (notice,) = room.frames(NoticeFrame)
    assert "no image model" in notice.text and room.frames(ImageFrame) == []


# -- in the page and on Discord ----------------------------------------------------------------


@pytest.mark.slow
async def test_draw_what_i_say_in_the_page_shows_the_picture_to_everyone(offline, drawer, flite_speech):
    from bot.app import interpretation_params
    from pipeline.session import SessionFactory
    from transports.webrtc import RoomServer, WebRTCSettings
    from transports.webrtc.client import RoomClient

    settings, engines = offline
    factory = SessionFactory(dataclasses.replace(engines, image=drawer), interpretation_params(settings))
    async with RoomServer(factory, WebRTCSettings(ice_addresses=["127.0.0.1"]), port=0) as server:
        alice = RoomClient(server.url, "r", name="Alice", speaks="en", hears="en")
        bob = RoomClient(server.url, "r", name="Bob", speaks="en", hears="es")
        for client in (alice, bob):
            await client.join()
        try:
            alice.send({"type": "imagine"})
            await wait_for(lambda: alice.of_type("notice")[-1:] and "draw" in alice.of_type("notice")[-1]["text"], 10)
            clip = flite_speech[0]  # "the weather is very good today"
            alice.mic.say(np.concatenate([silence(0.3), clip.pcm, silence(1.0)]))
            await wait_for(lambda: alice.of_type("image") and bob.of_type("image"), 90, what="the picture in both pages")
        finally:
            for client in (alice, bob):
                await client.close()
    for client in (alice, bob):
        (message,) = client.of_type("image")
        assert message["participant_id"] == alice.participant_id and message["name"] == "Alice"
        assert "weather" in message["caption"].lower()
        assert picture(base64.b64decode(message["png_base64"])).size == (64, 64)


@pytest.fixture
async def speaking_bot(tmp_path, discord_api, offline, drawer):  # noqa: F811
    """The Discord bot of ``tests/test_discord_bot.py`` with the offline engines (real
    recognition of recorded speech) and the tiny image pipeline."""

    from bot.app import interpretation_params
    from bot.discord_bot import DiscordSettings, PolyvoxBot
    from pipeline.session import SessionFactory
    from tests.test_discord_bot import FakeVoiceIO, running_bot
    from transports.discord.session import SessionParams

    settings, engines = offline
    params = dataclasses.replace(interpretation_params(settings), segmenter=FAST, listener_languages=["es"])
    factory = SessionFactory(dataclasses.replace(engines, image=drawer), params)
    client = PolyvoxBot(
        settings=settings, factory=factory, voice_io=FakeVoiceIO(),
        discord_settings=DiscordSettings(database=str(tmp_path / "discord.sqlite3"), sync_commands=False),
    )
    client.session_params = lambda: SessionParams(watch_interval_s=0.05)
    async with running_bot(client, discord_api):
        yield client


@pytest.mark.slow
async def test_imagine_on_discord_posts_the_picture_of_what_was_said(speaking_bot, flite_speech):
    replies = await run_command(speaking_bot, ALICE, "imagine")
    assert replies.last[1] and "Join the voice channel" in replies.last[0]
    await run_command(speaking_bot, ADMIN, "join", permissions=MANAGE)
    session = speaking_bot.sessions[GUILD]
    replies = await run_command(speaking_bot, ALICE, "imagine")
    assert replies.last == ("Say what I should draw: your next sentence becomes a picture, posted here.", True)

    clip = flite_speech[0]  # "the weather is very good today", recorded by flite

    def alice_talks() -> None:  # the voice receiver's thread, at the pace Discord sends
        pcm = np.concatenate([clip.pcm, silence(0.8)])
        for i in range(0, len(pcm), 320):
            session.feed_audio(ALICE, pcm[i : i + 320].tobytes())
            time.sleep(0.01)

    await asyncio.to_thread(alice_talks)
    await wait_for(lambda: speaking_bot.api.uploads, 60, what="the picture posted")
    ((channel, name, png),) = speaking_bot.api.uploads
    assert channel == TEXT and name == "picture.png" and picture(png).size == (64, 64)
    (text,) = [t for c, t in speaking_bot.api.messages if c == TEXT and "asked for" in t]
    assert text.startswith("**Alice** asked for: ") and "weather" in text.lower()


async def test_imagine_on_discord_without_an_image_model_says_so(bot):  # noqa: F811
    replies = await run_command(bot, ALICE, "imagine")
    assert replies.last[1] and "no image model" in replies.last[0]
