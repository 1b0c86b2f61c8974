"""Rooms over real WebRTC on loopback (aiortc clients, fake engines): who hears what,
captions for everyone, and a participant who drops mid-utterance."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from pipecat.processors.frame_processor import FrameProcessor

from pipeline.frames import UtteranceAudioFrame
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from tests.fakes import BeepTTSEngine, dominant_frequency, fake_engines, silence, tone
from tests.waiting import wait_for
from transports.webrtc import RoomServer, WebRTCSettings
from transports.webrtc.client import RoomClient

PARAMS = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)


@pytest.fixture
async def server():
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.3, duck_gain=0.15)
    async with RoomServer(SessionFactory(fake_engines(), InterpretationParams(segmenter=PARAMS)), settings, port=0) as srv:
        yield srv


def final_captions(client: RoomClient) -> list[dict]:
    return [c for c in client.captions if c["final"]]


def between(client: RoomClient, start: float, end: float) -> np.ndarray:
    """What ``client`` received between two monotonic times."""
    parts = [pcm for t, pcm in client.heard if start <= t < end]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def loud_part(pcm: np.ndarray, threshold: float = 200.0) -> np.ndarray:
    """The 20 ms pieces of ``pcm`` louder than ``threshold`` (RMS), joined."""
    pieces = [pcm[i : i + 960] for i in range(0, len(pcm) - 959, 960)]
    loud = [p for p in pieces if rms(p) > threshold]
    return np.concatenate(loud) if loud else np.zeros(0, dtype=np.int16)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


async def test_each_listener_hears_their_language_and_everyone_gets_captions(server):
    alice = RoomClient(server.url, "r", name="Alice", speaks="en", hears="en")
    bob = RoomClient(server.url, "r", name="Bob", speaks="es", hears="es")
    carol = RoomClient(server.url, "r", name="Carol", speaks="en", hears="en")
    for c in (alice, bob, carol):
        await c.join()
    await asyncio.sleep(0.5)
    said = alice.mic.say(np.concatenate([tone(440, 0.8), silence(0.1)]))
    await wait_for(lambda: final_captions(bob), what="Bob's caption")

    caption = final_captions(bob)[0]
    assert caption["participant_id"] == alice.participant_id and caption["name"] == "Alice"
    assert caption["language"] == "en" and caption["text"] == "Tone 440."
    assert caption["translations"] == {"es": "[es] Tone 440."}
    # Captions go to everyone, the speaker included.
    await wait_for(lambda: final_captions(alice) and final_captions(carol), what="everyone's captions")
    assert final_captions(carol)[0]["translations"] == caption["translations"]

    # Bob (Spanish) hears the interpretation: the beep TTS speaks 880 Hz, 100 ms a word.
    spoken_end = alice.mic.spoken[said][1]
    first = await wait_for(lambda: bob.first_sound_after(caption["received_at"] - 0.05, threshold=2000), what="interpretation")
    await asyncio.sleep(0.6)
    interpretation = bob.audio(first)[: int(0.3 * 48000)]
    assert abs(dominant_frequency(interpretation, 48000) - 880) < 20
    assert first > spoken_end  # interpreted after the speech ended
    # ... and, before it, Alice's own voice at a reduced level.
    start, end = alice.mic.spoken[said]
    original = loud_part(between(bob, start, first))
    assert len(original) > 0.3 * 48000 and abs(dominant_frequency(original, 48000) - 440) < 20
    # Carol (English) hears Alice directly at full level, and no interpretation.
    direct = loud_part(between(carol, start, end + 2.0))
    assert abs(dominant_frequency(direct, 48000) - 440) < 20
    assert rms(direct) > 2.0 * rms(original)
    assert not any(abs(dominant_frequency(pcm, 48000) - 880) < 50 for _, pcm in carol.heard if rms(pcm) > 300)
    # Alice does not hear herself.
    assert rms(alice.audio(alice.mic.spoken[said][0])) < 300

    text = server.metrics.render()
    assert server.metrics.stage_latency.count("end_to_first_audio") == 1
    assert server.metrics.stage_latency.count("first_audio_out") == 1
    assert "polyvox_participants 3" in text and "polyvox_rooms 1" in text
    for c in (alice, bob, carol):
        await c.leave()
    await wait_for(lambda: not server.rooms, what="the room to close")


async def test_a_participant_dropping_mid_utterance_leaves_the_room_working_and_is_released(server):
    alice = RoomClient(server.url, "r", name="Alice", speaks="en", hears="en")
    bob = RoomClient(server.url, "r", name="Bob", speaks="es", hears="es")
    carol = RoomClient(server.url, "r", name="Carol", speaks="en", hears="en")
    for c in (alice, bob, carol):
        await c.join()
    session = server.rooms["r"]
    aid = alice.participant_id
    await asyncio.sleep(0.5)
    said = alice.mic.say(tone(440, 3.0))
    await wait_for(lambda: said in alice.mic.spoken, what="Alice to start talking")
    await asyncio.sleep(0.8)
    await alice.close()  # mid-utterance, without saying goodbye

    await wait_for(lambda: aid not in session.transport.peers, within=20, what="the server to notice")
    listing = session.describe()
    assert [p["name"] for p in listing["participants"]] == ["Bob", "Carol"]
    # What Alice said before dropping still reaches the others...
    await wait_for(lambda: [c for c in final_captions(bob) if c["participant_id"] == aid], within=40, what="Alice's last words")
    # ...and then nothing of hers is left anywhere: every stage that keeps per-participant
    # state (lanes, denoise filter, segmenter, resampler, results) says so itself.
    holders = session.session.state_holders()
    assert {type(h).__name__ for h in holders} >= {
        "AudioInputProcessor", "DenoiseProcessor", "VADSegmenterProcessor", "ASRProcessor",
        "TranslationProcessor", "TTSProcessor", "InterpretationResultProcessor",
    }

    def released() -> bool:
        return session.session.holding(aid) == [] and aid not in session.room.participants

    await wait_for(released, within=40, what="Alice's resources to be released")
    assert all(aid not in p.mixer._direct for p in session.transport.peers.values())  # noqa: SLF001

    # The room goes on: Carol speaks, Bob gets her interpretation.
    carol.mic.say(np.concatenate([tone(660, 0.8), silence(0.1)]))
    caption = await wait_for(
        lambda: [c for c in final_captions(bob) if c["participant_id"] == carol.participant_id], what="Carol's caption"
    )
    assert caption[0]["translations"] == {"es": "[es] Tone 660."}
    assert server.metrics.render().count("polyvox_participants 2") == 1

    await bob.leave()
    await carol.close()
    await wait_for(lambda: not server.rooms, what="the empty room to be removed")
    await wait_for(lambda: session.session.ended, what="its pipeline to stop")


class RecordingVoiceCapture(FrameProcessor):
    """Stands in for the voice-capture processor: a profile from the first utterance."""

    def __init__(self, room) -> None:
        super().__init__()
        self.room = room

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, UtteranceAudioFrame):
            participant = self.room.participants.get(frame.user_id)
            if participant is not None and participant.voice is None:
                participant.voice = f"profile:{participant.name}:{len(frame.audio)}"
        await self.push_frame(frame, direction)


async def test_a_voice_capture_processor_plugs_in_and_later_utterances_use_the_voice():
    engines = fake_engines()
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"])
    factory = SessionFactory(
        engines, InterpretationParams(segmenter=PARAMS), extra_processors=lambda room: [RecordingVoiceCapture(room)]
    )
    async with RoomServer(factory, settings, port=0) as srv:
        alice = RoomClient(srv.url, "v", name="Alice", speaks="en", hears="en")
        bob = RoomClient(srv.url, "v", name="Bob", speaks="es", hears="es")
        await alice.join()
        await bob.join()
        alice.mic.say(np.concatenate([tone(440, 0.6), silence(0.6), tone(660, 0.6), silence(0.2)]))
        await wait_for(lambda: len(final_captions(bob)) == 2, what="both captions")
        voice = srv.rooms["v"].room.participants[alice.participant_id].voice
        assert isinstance(voice, str) and voice.startswith("profile:Alice:")
        assert engines.tts.voices[-1] == voice  # the second utterance was spoken in it
        await alice.leave()
        await bob.leave()


async def test_a_join_that_never_connects_is_released_and_frees_its_place():
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], max_participants=1, connect_timeout_s=0.6)
    async with RoomServer(SessionFactory(fake_engines(), InterpretationParams(segmenter=PARAMS)), settings, port=0) as srv:
        # An offer whose client then vanishes: the server answers, nothing ever connects.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        import aiohttp

        async with aiohttp.ClientSession() as http:
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "name": "ghost"}
            await pc.close()
            async with http.post(f"{srv.url}/api/rooms/full/join", json=body) as resp:
                assert resp.status == 200
            async with http.post(f"{srv.url}/api/rooms/full/join", json=body) as resp:
                assert resp.status == 409  # the ghost holds the only place ...
        await wait_for(lambda: "full" not in srv.rooms, within=10, what="the ghost to be released")
        assert "polyvox_joins_reaped_total 1" in srv.metrics.render()
        real = RoomClient(srv.url, "full", name="Real", speaks="en", hears="en")
        await real.join()  # ... and a real participant gets it afterwards
        await real.leave()


async def test_a_connected_client_whose_audio_stops_is_released():
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], idle_timeout_s=1.0)
    async with RoomServer(SessionFactory(fake_engines(), InterpretationParams(segmenter=PARAMS)), settings, port=0) as srv:
        gone = RoomClient(srv.url, "idle", name="Gone", speaks="en", hears="en")
        stays = RoomClient(srv.url, "idle", name="Stays", speaks="en", hears="en")
        await gone.join()
        await stays.join()
        await asyncio.sleep(0.5)
        sender = next(s for s in gone.pc.getSenders() if s.track is not None)
        await sender.stop()  # the process froze: no more RTP, no goodbye
        await wait_for(lambda: gone.participant_id not in srv.rooms["idle"].transport.peers, within=15,
                       what="the silent client to be released")
        assert stays.participant_id in srv.rooms["idle"].transport.peers
        await stays.leave()
        await gone.close()


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
async def test_memory_stays_flat_over_100_joins_and_leaves():
    import gc

    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], joins_per_minute=1000)
    async with RoomServer(SessionFactory(fake_engines(), InterpretationParams(segmenter=PARAMS)), settings, port=0) as srv:
        host = RoomClient(srv.url, "churn", name="Host", speaks="en", hears="es")  # keeps the room open
        await host.join()
        plateau = None
        for cycle in range(100):
            guest = RoomClient(srv.url, "churn", name=f"Guest{cycle}", speaks="es", hears="en")
            await guest.join()
            guest.mic.say(np.concatenate([tone(550, 0.3), silence(0.4)]))
            if cycle % 10 == 0:
                await asyncio.sleep(0.8)  # now and then an utterance is interpreted too
            await guest.leave()
            if cycle == 29:
                await asyncio.sleep(1.0)
                gc.collect()
                plateau = _rss_mib()
        await asyncio.sleep(1.0)
        gc.collect()
        session = srv.rooms["churn"].session
        await wait_for(lambda: session.state_holders() and all(
            not h.holds_participant(pid) for h in session.state_holders() for pid in list(session.room.participants)
            if pid != host.participant_id
        ), what="every guest released")
        after = _rss_mib()
        print(f"\nRSS after 30 joins/leaves {plateau:.0f} MiB, after 100 {after:.0f} MiB")
        assert list(session.room.participants) == [host.participant_id]
        assert plateau is not None and after <= plateau * 1.10, (plateau, after)
        await host.leave()


async def test_a_three_language_room_gives_each_listener_their_own_interpretation(server):
    # Distinct beeps per language make each listener's audio identifiable.
    class LanguageBeeps(BeepTTSEngine):
        def synthesize(self, text, language, voice=None):
            freq = {"es": 880, "fr": 1320}.get(language, 660)
            for _ in text.split():
                yield tone(freq, 0.1, self.sample_rate)

    engines = fake_engines(tts=LanguageBeeps())
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.0)
    async with RoomServer(SessionFactory(engines, InterpretationParams(segmenter=PARAMS)), settings, port=0) as srv:
        alice = RoomClient(srv.url, "three", name="Alice", speaks="en", hears="en")
        bruno = RoomClient(srv.url, "three", name="Bruno", speaks="es", hears="es")
        fleur = RoomClient(srv.url, "three", name="Fleur", speaks="fr", hears="fr")  # listens: fr is not recognised
        for c in (alice, bruno, fleur):
            await c.join()
        await asyncio.sleep(0.5)
        alice.mic.say(np.concatenate([tone(440, 0.8), silence(0.1)]))
        both = {"es": "[es] Tone 440.", "fr": "[fr] Tone 440."}
        for listener in (bruno, fleur):
            await wait_for(lambda listener=listener: final_captions(listener), what="captions")
            assert final_captions(listener)[0]["translations"] == both
        for listener, freq in ((bruno, 880), (fleur, 1320)):
            caption = final_captions(listener)[0]
            first = await wait_for(lambda listener=listener, caption=caption: listener.first_sound_after(
                caption["received_at"] - 0.05, threshold=2000), what="an interpretation")
            await asyncio.sleep(0.5)
            assert abs(dominant_frequency(listener.audio(first)[: int(0.25 * 48000)], 48000) - freq) < 30
        for c in (alice, bruno, fleur):
            await c.leave()
