"""The voice changer: OpenVoice built from its real architecture with random weights and
loaded by the engine's real loader; streamed in chunks that keep the input's timing;
file mode (``polyvox convert``); consent: only voices enrolled as targets can be used."""

from __future__ import annotations

import asyncio
import time
import wave

import numpy as np
import pytest

from pipeline.engines.vc.openvoice import OpenVoiceEngine
from pipeline.session import InterpretationParams, InterpretationSession
from pipeline.voice_changer import VoiceTargetError, resolve_changer_voice
from pipeline.voice_file import run_voice_changer_on_file
from tests.fakes import CloningBeepTTSEngine, EnergyVADEngine, fake_engines, silence, tone
from tests.tiny_media import write_openvoice
from tests.tiny_models import shared_checkpoint
from voices.consent import VoiceConsent
from voices.store import VoiceStore


@pytest.fixture(scope="module")
def openvoice_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory.getbasetemp(), "openvoice", write_openvoice)


@pytest.fixture(scope="module")
def converter(openvoice_dir) -> OpenVoiceEngine:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = OpenVoiceEngine(model=str(openvoice_dir))
    engine.load()
    yield engine
    torch.set_num_threads(threads)


@pytest.fixture
def consent(tmp_path, converter) -> VoiceConsent:
    store = VoiceStore(tmp_path / "voices", vad=EnergyVADEngine())
    return VoiceConsent(store, engine=CloningBeepTTSEngine(), converter=converter)


def speech(seconds: float = 4.0) -> np.ndarray:
    """Loud "speech" for the energy VAD: tones of changing pitch."""
    parts = [tone(200 + 40 * (i % 7), 0.25) for i in range(int(seconds / 0.25))]
    return np.concatenate(parts)


def test_the_engine_loads_the_converter_and_its_neutral_voices(converter):
    assert converter.neutral_voices() == ["en-default", "es"]
    assert converter.neutral_voice("es").shape == (16,)  # the tiny model's tone colour size
    assert converter.latency_s <= 0.25  # one chunk plus the look-ahead


def test_streaming_keeps_the_timing_in_small_chunks_faster_than_real_time(converter, librivox):
    clip = librivox[0].pcm[: 16000 * 4]
    stream = converter.open_stream(converter.neutral_voice("es"))
    chunks, first_after = [], None
    fed = 0
    cpu = time.process_time()
    for start in range(0, len(clip), 320):  # 20 ms frames, as transports deliver
        piece = clip[start : start + 320]
        fed += len(piece)
        out = stream.feed(piece)
        if out and first_after is None:
            first_after = fed / 16000
        chunks += out
    chunks += stream.flush()
    cpu = time.process_time() - cpu
    rate = converter.sample_rate
    total = sum(len(c) for c in chunks) / rate
    assert total == pytest.approx(len(clip) / 16000, rel=0.05)
    # Small chunks, the first one as soon as a chunk and its look-ahead were heard.
    assert max(len(c) for c in chunks) / rate <= 0.17
    assert first_after == pytest.approx(converter.latency_s, abs=0.03)
    # Work, not wall time (the machine is shared): less CPU than the audio lasts.
    assert cpu < len(clip) / 16000
    audio = np.concatenate(chunks)
    assert np.abs(audio).max() > 0 and np.isfinite(audio.astype(np.float64)).all()


def test_a_voice_is_the_tone_colour_of_the_speech(converter):
    a, b = converter.embed(speech(2.0), 16000), converter.embed(tone(300, 2.0), 16000)
    assert a.shape == b.shape == (16,)
    assert np.allclose(a, converter.embed(speech(2.0), 16000))
    assert not np.allclose(a, b)


async def test_file_mode_converts_a_recording_with_its_pauses_in_place(converter):
    pcm = np.concatenate([silence(0.5), speech(1.5), silence(1.0), speech(1.0), silence(0.5)])
    voice = await resolve_changer_voice(converter, None, "es")
    result = await run_voice_changer_on_file(converter, pcm, voice)
    rate = result.sample_rate
    assert len(result.audio) / rate == pytest.approx(len(pcm) / 16000, abs=0.01)
    # Every chunk lands where its input was said: back to back, covering the recording
    # (random weights make sound even of silence, so all of it is one stretch here).
    ends = [round((c.offset + len(c.audio) / rate) * rate) for c in result.chunks]
    starts = [round(c.offset * rate) for c in result.chunks]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    assert ends[-1] / rate == pytest.approx(len(pcm) / 16000, abs=0.01)
    assert np.array_equal(result.audio, np.concatenate([c.audio for c in result.chunks])[: len(result.audio)])


def test_polyvox_convert_writes_the_converted_recording(openvoice_dir, tmp_path, capsys):
    from bot.cli import main
    from pipeline.audio import write_wav

    source = tmp_path / "in.wav"
    recording = np.concatenate([silence(0.3), speech(1.5), silence(0.3)])
    write_wav(source, recording, 16000)
    common = ["--profile", "offline", "--set", "vc.engine=openvoice", "--set", f"vc.model={openvoice_dir}",
              "--set", f"voices.data_dir={tmp_path / 'voices'}"]
    out = tmp_path / "out.wav"
    assert main(["convert", str(source), "--voice", "en-default", "-o", str(out), *common]) == 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnframes() / 22050 == pytest.approx(len(recording) / 16000, abs=0.01)
    assert main(["convert", str(source), "--voice", "somebody", "-o", str(out), *common]) == 2
    assert "not a voice-changer voice" in capsys.readouterr().err
    assert main(["convert", str(source), "-o", str(out), "--profile", "offline"]) == 2
    assert "no voice-conversion engine" in capsys.readouterr().err


# -- consent --------------------------------------------------------------------------------


async def test_a_voice_not_enrolled_as_a_target_cannot_be_used(consent, converter):
    # Ann enrolled her voice for her own interpretation only: nobody else may use it.
    await consent.enroll("ann", speech(4.0))
    assert consent.store.get("ann") is not None
    with pytest.raises(VoiceTargetError, match="not a voice-changer voice"):
        await resolve_changer_voice(converter, consent, "ann")
    with pytest.raises(VoiceTargetError):
        await resolve_changer_voice(converter, consent, "nobody-at-all")


async def test_a_voice_enrolled_as_a_target_can_be_used_until_its_owner_says_no(consent, converter):
    bob = speech(4.0)
    await consent.enroll_changer_target("bob", bob)
    voice = await resolve_changer_voice(converter, consent, "bob")
    assert not voice.neutral and np.allclose(voice.embedding, converter.embed(bob, 16000), atol=1e-5)
    assert [v.changer_target for v in consent.store.list() if v.user_id == "bob"] == [True]

    await consent.set_allowed("bob", False)  # opting out of cloning covers this too
    with pytest.raises(VoiceTargetError):
        await resolve_changer_voice(converter, consent, "bob")
    await consent.set_allowed("bob", True)
    assert (await resolve_changer_voice(converter, consent, "bob")).name == "bob"

    assert await consent.revoke_changer_target("bob")
    with pytest.raises(VoiceTargetError):
        await resolve_changer_voice(converter, consent, "bob")
    assert not list((consent.store.data_dir / "tensors").glob("changer-*"))


async def test_forgetting_a_voice_deletes_its_target_too(consent):
    await consent.enroll_changer_target("bob", speech(4.0))
    assert await consent.forget("bob")
    assert consent.store.changer_target("bob") is None
    assert not list((consent.store.data_dir / "tensors").glob("changer-*"))


async def test_someone_speaking_in_a_withdrawn_voice_falls_back_to_the_neutral_one(consent, converter):
    from pipeline.file_mode import FileTransport

    await consent.enroll_changer_target("bob", speech(4.0))
    session = InterpretationSession(
        fake_engines(vc=converter), FileTransport(), InterpretationParams(streaming=None), consent=consent
    )
    await session.start()
    try:
        carol = await session.set_mode("carol", "voice", voice="bob")
        assert carol.changer_voice.name == "bob"
        with pytest.raises(VoiceTargetError):
            await session.set_mode("dave", "voice", voice="ann")  # never allowed
        await consent.revoke_changer_target("bob")
        assert carol.changer_voice is None  # the default neutral voice from now on
    finally:
        await session.stop()


# -- in a WebRTC room and on Discord ----------------------------------------------------------


def share_near(pcm: np.ndarray, freq: float, rate: int = 48000, width: float = 30.0) -> float:
    """Share of the spectrum's energy within ``width`` Hz of ``freq``."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(spectrum[np.abs(freqs - freq) < width].sum() / max(spectrum.sum(), 1e-9))


@pytest.mark.slow
async def test_in_a_room_others_hear_the_changed_voice_instead_of_the_original(converter):
    from pipeline.segmenter import SegmenterParams
    from pipeline.session import SessionFactory
    from tests.waiting import wait_for
    from transports.webrtc import RoomServer, WebRTCSettings
    from transports.webrtc.client import RoomClient

    params = InterpretationParams(segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0))
    factory = SessionFactory(fake_engines(vc=converter), params)
    async with RoomServer(factory, WebRTCSettings(ice_addresses=["127.0.0.1"]), port=0) as server:
        with pytest.raises(RuntimeError, match="not a voice-changer voice"):
            await RoomClient(server.url, "r", name="Eve", extra={"mode": "voice", "voice": "somebody"}).join()
        alice = RoomClient(server.url, "r", name="Alice", speaks="en", extra={"mode": "voice", "voice": "es"})
        bob = RoomClient(server.url, "r", name="Bob", speaks="en")
        for client in (alice, bob):
            await client.join()
        try:
            listing = [m for m in bob.messages if m.get("type") == "participants"][-1]
            assert {p["name"]: (p["mode"], p["changer_voice"]) for p in listing["participants"]} == {
                "Alice": ("voice", "es"), "Bob": ("interpret", None),
            }
            said = time.monotonic()
            alice.mic.say(np.concatenate([tone(440, 1.5), silence(0.5)]))
            await wait_for(lambda: bob.first_sound_after(said, threshold=50) is not None, 15, what="Bob hearing Alice")
            await asyncio.sleep(2.0)
            heard = bob.audio(since=said)
        finally:
            for client in (alice, bob):
                await client.close()
    loud = heard[np.abs(heard) > 50]
    assert len(loud) > 0.5 * 48000  # about as long as she spoke
    # Bob hears her converted voice (random weights: not her 440 Hz tone), and no text.
    assert share_near(heard, 440) < 0.3
    assert [c for c in bob.captions if c["participant_id"] == alice.participant_id] == []


async def test_changer_on_discord_speaks_the_member_in_the_chosen_voice(bot, converter):  # noqa: F811
    from tests.test_discord_bot import ADMIN, BOB, GUILD, MANAGE, option, run_command
    from tests.waiting import wait_for

    bot.engines.vc = converter
    replies = await run_command(bot, BOB, "changer on", options=[option("voice", "es")])
    assert replies.last[1] and "/join" in replies.last[0]
    await run_command(bot, ADMIN, "join", permissions=MANAGE)
    session = bot.sessions[GUILD]
    replies = await run_command(bot, BOB, "changer on", options=[option("voice", "somebody")])
    assert replies.last[1] and "not a voice-changer voice" in replies.last[0]
    replies = await run_command(bot, BOB, "changer on", options=[option("voice", "es")])
    assert replies.last[1] and "**es**" in replies.last[0] and "mute" in replies.last[0]

    pcm = np.concatenate([tone(300, 1.0), silence(0.1)])
    for i in range(0, len(pcm), 320):
        session.feed_audio(BOB, pcm[i : i + 320].tobytes())
    # Discord sends nothing while he is silent: the rest is converted once his audio stops.
    sink = session.source
    await wait_for(lambda: any(k[-1] == "voice" for k in sink.keys("finish")), 15, what="the changed voice played")
    (key,) = {k for k in sink.keys("enqueue") if k[-1] == "voice"}
    assert len(sink.audio[key]) / 2 / 22050 == pytest.approx(1.1, abs=0.05)
    assert sink.keys("enqueue") == [key] * len(sink.keys("enqueue"))  # nothing was interpreted
    replies = await run_command(bot, BOB, "changer off")
    assert session.room.mode_of(str(BOB)) == "interpret"


from tests.test_discord_bot import bot, discord_api  # noqa: E402, F401 - Discord fixtures (used by name)


def test_settings_choose_voice_mode_and_the_optional_engines():
    from bot.app import interpretation_params
    from bot.config import load_settings
    from pipeline.errors import ConfigError

    settings = load_settings(
        profile="offline",
        overrides=["interpretation.mode=voice", "vc.engine=openvoice", "vc.model=/models/openvoice", "image.engine=none"],
    )
    params = interpretation_params(settings)
    assert params.mode == "voice" and params.streaming.mode == "simultaneous"  # for those who choose to interpret
    assert settings.optional_engine("vc").model == "/models/openvoice"
    assert settings.optional_engine("image") is None and settings.optional_engine("events") is None
    gpu = load_settings(profile="gpu")
    assert gpu.optional_engine("image").model == "black-forest-labs/FLUX.1-schnell"
    assert gpu.optional_engine("vc").model == "myshell-ai/OpenVoiceV2"
    with pytest.raises(ConfigError, match="kinds"):
        load_settings(profile="offline", overrides=["interpretation.nonverbal.kinds=[giggles]"])


async def test_switching_back_to_interpretation_finishes_the_voice_and_interprets_what_follows(converter):
    from pipecat.processors.frame_processor import FrameProcessor

    from pipeline.file_mode import FileTransport
    from pipeline.frames import UtteranceTranscriptionFrame, VoiceChangedAudioFrame
    from pipeline.segmenter import SegmenterParams
    from tests.waiting import wait_for

    seen: list = []

    class Spy(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, (VoiceChangedAudioFrame, UtteranceTranscriptionFrame)):
                seen.append(frame)
            await self.push_frame(frame, direction)

    transport = FileTransport()
    params = InterpretationParams(streaming=None, segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0))
    session = InterpretationSession(fake_engines(vc=converter), transport, params, extra_processors=lambda _r: [Spy()])
    await session.start()
    await transport.input().ready.wait()

    async def say(pcm: np.ndarray) -> None:
        for i in range(0, len(pcm), 320):
            await transport.input().feed("ann", pcm[i : i + 320])

    try:
        await session.set_mode("ann", "voice", voice="es")
        await say(speech(1.0))

        def converted_s() -> float:
            chunks = [f for f in seen if isinstance(f, VoiceChangedAudioFrame)]
            return sum(len(f.audio) // 2 for f in chunks) / converter.sample_rate

        # The rest (one chunk and the look-ahead) waits for more audio, or a flush.
        await wait_for(lambda: converted_s() >= 1.0 - converter.latency_s - 0.02, 20, what="her changed voice")
        await session.set_mode("ann", "interpret")
        await say(np.concatenate([silence(0.3), tone(440, 0.5), silence(0.6)]))
        await wait_for(lambda: any(isinstance(f, UtteranceTranscriptionFrame) for f in seen), 20, what="the transcript")
    finally:
        await session.stop()
    converted = [f for f in seen if isinstance(f, VoiceChangedAudioFrame)]
    assert sum(len(f.audio) // 2 for f in converted) / converter.sample_rate == pytest.approx(1.0, abs=0.05)
    assert [f.text for f in seen if isinstance(f, UtteranceTranscriptionFrame)] == ["Tone 440."]
    # Back to back from the start: no interpret-mode audio moved the clock in between.
    rate = converter.sample_rate
    assert [round(f.offset * rate) for f in converted[1:]] == [round(f.offset * rate) + len(f.audio) // 2 for f in converted[:-1]]
