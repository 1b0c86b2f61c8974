"""In-call controls on the server side: a listener's balance between original and
interpretation, the heartbeat, speaking / interpreting indicators, listen-only joins."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from tests.fakes import dominant_frequency, fake_engines, silence, tone
from transports.webrtc import RoomServer, WebRTCSettings
from transports.webrtc.activity import ParticipantActivity
from transports.webrtc.client import RoomClient
from transports.webrtc.mixer import FRAME_SAMPLES, ListenerMixer


def const(value: int, samples: int = FRAME_SAMPLES) -> np.ndarray:
    return np.full(samples, value, dtype=np.int16)


# -- the balance ------------------------------------------------------------------


def test_the_balance_moves_from_interpretation_only_to_original_only():
    mixer = ListenerMixer(duck_gain=0.2, foreign_gain=0.4)
    assert (mixer.duck_gain, mixer.foreign_gain, mixer.interpretation_gain) == (0.2, 0.4, 1.0)
    mixer.set_balance(0.0)
    assert (mixer.duck_gain, mixer.foreign_gain, mixer.interpretation_gain) == (0.0, 0.0, 1.0)
    mixer.set_balance(1.0)
    assert (mixer.duck_gain, mixer.foreign_gain, mixer.interpretation_gain) == (1.0, 1.0, 0.0)
    mixer.set_balance(0.75)
    assert mixer.duck_gain == pytest.approx(0.6) and mixer.foreign_gain == pytest.approx(0.7)
    assert mixer.interpretation_gain == pytest.approx(0.5)
    mixer.set_balance(0.5)  # back to the room's levels
    assert (mixer.duck_gain, mixer.foreign_gain, mixer.interpretation_gain) == (0.2, 0.4, 1.0)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError):
            mixer.set_balance(bad)  # type: ignore[arg-type]


def test_the_balance_changes_what_the_listener_hears():
    mixer = ListenerMixer(duck_gain=0.1)
    mixer.set_balance(0.75)  # more original: interpretation at half, original ducked less
    mixer.add_interpretation("u", const(2000))
    mixer.add_direct("alice", const(1000), gain=1.0)
    assert abs(int(mixer.pull()[0]) - (1000 + 1000 * (0.1 + 0.9 * 0.5))) <= 1
    mixer.set_balance(0.0)  # interpretation only: nothing else while it plays
    mixer.add_interpretation("u", const(2000))
    mixer.add_direct("alice", const(1000), gain=1.0)
    assert mixer.pull()[0] == 2000


def test_an_interpretation_reports_its_end_once_and_only_after_it_started():
    mixer = ListenerMixer()
    ended: list[str] = []
    mixer.add_interpretation("a", const(1, 100), on_end=lambda: ended.append("a"))
    mixer.add_interpretation("b", const(2, 100), on_end=lambda: ended.append("b"))
    mixer.finish_interpretation("a")
    mixer.pull(50)
    assert ended == []  # "a" plays
    mixer.pull(100)  # "a" runs out, "b" starts
    mixer.pull(10)
    assert ended == ["a"]
    mixer.add_interpretation("c", const(3, 100), on_end=lambda: ended.append("c"))
    mixer.cut_interpretation("c")  # never heard: no end to report
    mixer.close()  # "b" was playing when the listener left
    assert ended == ["a", "b"]


# -- activity ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_speaking_needs_a_moment_of_sound_and_ends_after_the_release():
    clock, sent = Clock(), []
    activity = ParticipantActivity(sent.append, start_ms=60, release_ms=700, clock=clock)
    loud, quiet = tone(300, 0.02, amplitude=0.2), silence(0.02)

    def frames(pcm: np.ndarray, count: int) -> None:
        for _ in range(count):
            activity.audio("ann", pcm.tobytes())
            clock.now += 0.02

    frames(loud, 2)  # a click: 40 ms
    frames(quiet, 10)
    assert sent == []
    frames(loud, 5)
    assert sent == [{"type": "activity", "participant_id": "ann", "speaking": True}]
    frames(quiet, 20)  # a short pause (0.4 s) keeps it on
    frames(loud, 5)
    assert len(sent) == 1
    frames(quiet, 40)
    assert sent[-1] == {"type": "activity", "participant_id": "ann", "speaking": False} and len(sent) == 2
    assert activity.snapshot() == []
    frames(loud, 5)
    assert activity.snapshot() == [{"type": "activity", "participant_id": "ann", "speaking": True}]


def test_interpreting_lasts_while_any_listener_hears_it():
    sent: list[dict] = []
    activity = ParticipantActivity(sent.append)
    activity.interpretation_started("bob", ("u1", "es"), "ann")
    activity.interpretation_started("carl", ("u1", "fr"), "ann")
    assert sent == [{"type": "activity", "participant_id": "ann", "interpreting": True}]
    activity.interpretation_ended("bob", ("u1", "es"))
    assert len(sent) == 1 and activity.interpreting("ann")
    activity.forget("carl")  # the last listener left
    assert sent[-1] == {"type": "activity", "participant_id": "ann", "interpreting": False}
    assert not activity.interpreting("ann") and activity.snapshot() == []


# -- over WebRTC (fake engines) -----------------------------------------------------


@pytest.fixture
async def server():
    params = InterpretationParams(segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0))
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.3, duck_gain=0.15)
    async with RoomServer(SessionFactory(fake_engines(), params), settings, port=0) as srv:
        yield srv


async def wait_for(predicate, within: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def activity(client: RoomClient, pid: str, what: str) -> list[bool]:
    return [m[what] for m in client.messages if m.get("type") == "activity" and m["participant_id"] == pid and what in m]


async def test_a_listen_only_participant_hears_the_interpretation_and_sees_who_speaks(server):
    ann = RoomClient(server.url, "r", name="Ann", speaks="en", hears="en")
    luis = RoomClient(server.url, "r", name="Luis", speaks="es", hears="es", listen_only=True)
    await ann.join()
    await luis.join()
    room = server.rooms["r"]
    assert sorted(room.participant_ids) == sorted([ann.participant_id, luis.participant_id])
    await asyncio.sleep(0.3)

    ann.mic.say(np.concatenate([tone(440, 0.8), silence(0.1)]))
    await wait_for(lambda: [c for c in luis.captions if c["final"]], what="Luis's caption")
    await wait_for(lambda: False in activity(luis, ann.participant_id, "speaking"), what="speaking on, then off")
    assert activity(luis, ann.participant_id, "speaking")[:2] == [True, False]
    # The interpretation plays to Luis (880 Hz beeps) and the page is told while it does.
    await wait_for(lambda: False in activity(luis, ann.participant_id, "interpreting"), what="interpreting on, then off")
    assert activity(luis, ann.participant_id, "interpreting")[:2] == [True, False]
    assert activity(ann, ann.participant_id, "interpreting")[:2] == [True, False]  # the speaker sees it too
    first = luis.first_sound_after(0.0, threshold=2000)
    assert first is not None
    assert abs(dominant_frequency(luis.audio(first)[: int(0.3 * 48000)], 48000) - 880) < 20
    # Nobody's activity is about the silent listener.
    assert activity(ann, luis.participant_id, "speaking") == []
    await luis.leave()
    await ann.leave()


async def test_heartbeat_and_balance_messages(server):
    ann = RoomClient(server.url, "r", name="Ann", speaks="en", hears="en")
    luis = RoomClient(server.url, "r", name="Luis", speaks="es", hears="es", listen_only=True)
    await ann.join()
    await luis.join()
    luis.send({"type": "ping", "t": 12.5})
    pong = await wait_for(lambda: [m for m in luis.messages if m.get("type") == "pong"], what="pong")
    assert pong[0]["t"] == 12.5
    assert not [m for m in ann.messages if m.get("type") == "pong"]  # only to the one who asked

    mixer = server.rooms["r"].transport.peers[luis.participant_id].mixer
    luis.send({"type": "mix", "original": 1.0})
    await wait_for(lambda: mixer.balance == 1.0, what="the balance to move")
    assert mixer.interpretation_gain == 0.0 and mixer.foreign_gain == 1.0
    # Nonsense is ignored, the connection stays up.
    for bad in ({"type": "mix", "original": 7}, {"type": "mix", "original": "x"}, {"type": "mix"}, {"type": "ping", "t": "x"}):
        luis.send(bad)
    luis.send({"type": "ping"})
    await wait_for(lambda: len([m for m in luis.messages if m.get("type") == "pong"]) == 3, what="more pongs")
    assert mixer.balance == 1.0
    # With the balance at "original only" Luis hears Ann's own voice at full level.
    ann.mic.say(tone(440, 0.6))
    loud = await wait_for(lambda: luis.first_sound_after(0.0, threshold=2000), what="Ann's voice")
    await asyncio.sleep(0.4)
    assert abs(dominant_frequency(luis.audio(loud)[: int(0.2 * 48000)], 48000) - 440) < 20
    await luis.leave()
    await ann.leave()


async def test_a_stopping_server_turns_pages_away_until_it_is_back(server):
    import aiohttp

    server._closing = True  # what stop() sets first: rooms close, nobody may join meanwhile
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "stopping"
    client = RoomClient(server.url, "r", name="Luis", speaks="es", hears="es", listen_only=True)
    with pytest.raises(RuntimeError, match="503"):
        await client.join()
    await client.close()
    assert not server.rooms
