"""Voice consent on Discord, end to end, with a cloning engine (tiny XTTS through its real
loader) and the real voice store: the enrolled voice is used, ``/voice off`` means the
neutral voice and no capture, ``/voice forget`` deletes the files, and a member who
leaves mid-sentence is interpreted and then released from every stage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from bot.config import load_settings
from bot.discord_bot import DiscordSettings, PolyvoxBot
from pipeline.engines.tts.xtts import XTTSEngine
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from tests.fakes import fake_engines, silence, tone
from tests.test_discord_bot import (
    ADMIN,
    ALICE,
    BOB,
    GUILD,
    MANAGE,
    FakeVoiceIO,
    attachment,
    discord_api,  # noqa: F401 - the loopback Discord API fixture (used by name)
    run_command,
    running_bot,
    voice_state,
    wav_bytes,
)
from tests.test_discord_transport import wait_for
from tests.tiny_xtts import write_tiny_xtts
from transports.discord.session import SessionParams
from voices.capture_processor import VoiceCaptureProcessor
from voices.consent import VoiceConsent
from voices.store import VoiceStore

pytestmark = pytest.mark.slow


class SpokenVoices:
    """Wraps the engine's ``synthesize`` and ``condition`` to record what it was asked (a spy)."""

    def __init__(self, engine: XTTSEngine) -> None:
        self.voices: list[Any] = []
        self.conditioned = 0
        synthesize, condition = engine.synthesize, engine.condition

        def spoken(text: str, language: str, voice: Any | None = None):
            self.voices.append(voice)
            return synthesize(text, language, voice)

        def conditioned(pcm: np.ndarray, sample_rate: int):
            self.conditioned += 1
            return condition(pcm, sample_rate)

        engine.synthesize = spoken  # type: ignore[method-assign]
        engine.condition = conditioned  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def xtts(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = XTTSEngine(
        model=str(write_tiny_xtts(tmp_path_factory.mktemp("xtts") / "tiny")), stream_chunk_size=2, fixed_audio_tokens=4
    )
    engine.load()
    yield engine
    engine.close()
    torch.set_num_threads(threads)


@pytest.fixture
async def bot(tmp_path, discord_api, xtts):  # noqa: F811 - the imported fixture
    engines = fake_engines(tts=xtts)
    consent = VoiceConsent(VoiceStore(tmp_path / "voices", vad=engines.vad), engine=xtts)
    params = InterpretationParams(segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0))
    client = PolyvoxBot(
        settings=load_settings(profile="offline"),
        discord_settings=DiscordSettings(database=str(tmp_path / "discord.sqlite3"), sync_commands=False),
        factory=SessionFactory(engines, params, consent=consent),
        voice_io=FakeVoiceIO(),
    )
    client.session_params = lambda: SessionParams(watch_interval_s=0.05)
    async with running_bot(client, discord_api):
        yield client


async def talk(session: Any, user: int, freq: int, *, pause: bool = True) -> None:
    pcm = np.concatenate([tone(freq, 0.6), silence(0.5) if pause else silence(0.0)])

    def run() -> None:
        for i in range(0, len(pcm), 320):
            session.feed_audio(user, pcm[i : i + 320].tobytes())
            time.sleep(0.002)

    await asyncio.to_thread(run)


async def test_enrolled_voice_off_forget_and_a_member_leaving_mid_sentence(bot, xtts):
    spy = SpokenVoices(xtts)
    tensors = bot.consent.store.data_dir / "tensors"

    # Alice enrolls from a recording: her voice is computed by XTTS and stored.
    options, resolved = attachment(bot, "alice.wav", wav_bytes(np.concatenate([tone(200, 5.0), tone(300, 3.0)])))
    replies = await run_command(bot, ALICE, "voice enroll", options=options, resolved=resolved)
    assert "enrolled" in replies.last[0] and len(list(tensors.iterdir())) == 1

    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]
    sink = session.source
    capture = next(p for p in session.interpretation.processors if isinstance(p, VoiceCaptureProcessor))

    # 1. Her interpretation is spoken in her enrolled voice.
    await talk(session, ALICE, 440)
    await wait_for(lambda: len(sink.keys("finish")) == 1, 20)
    (voice,) = spy.voices
    assert voice.source == "enrolled" and voice.user_id == str(ALICE)

    # 2. /voice off: the neutral voice at once, and nothing is captured from her.
    conditioned = spy.conditioned
    await run_command(bot, ALICE, "voice off")
    await talk(session, ALICE, 550)
    await wait_for(lambda: len(sink.keys("finish")) == 2, 20)
    assert spy.voices[-1] is None
    assert capture.capture_of(str(ALICE)) is None and spy.conditioned == conditioned

    # 3. /voice forget: every stored row and file of hers is gone.
    replies = await run_command(bot, ALICE, "voice forget")
    assert "Deleted your stored voice profile" in replies.last[0]
    assert list(tensors.iterdir()) == [] and await bot.consent.status(str(ALICE)) is None

    # 4. Bob leaves in the middle of a sentence: it is still interpreted for the room, and
    # then nothing of him is left in any stage.
    await talk(session, BOB, 660, pause=False)
    bot._connection.parse_voice_state_update(voice_state(BOB, None))
    await wait_for(lambda: len(sink.keys("finish")) == 3, 20)
    await wait_for(lambda: str(BOB) not in session.room.participants, 20)
    assert session.interpretation.holding(str(BOB)) == []
    assert any(key[1] for key in sink.keys("finish"))
