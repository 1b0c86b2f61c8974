"""Phone callers over Twilio Media Streams (a local client of the protocol, loopback only):
a caller and a WebRTC participant interpret each other, a call of only phone
participants, refused calls, marks and ``clear``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.errors import EngineError
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from tests.fakes import BeepTTSEngine, dominant_frequency, fake_engines, silence, tone
from tests.waiting import wait_for
from transports.telephony.client import PhoneClient
from transports.webrtc import RoomServer, WebRTCSettings, make_token
from transports.webrtc.client import RoomClient

PARAMS = InterpretationParams(segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0))
SECRET = "s" * 32


def loud(pcm: np.ndarray, rate: int = 16000, threshold: float = 300.0) -> np.ndarray:
    step = rate // 50
    pieces = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
    kept = [p for p in pieces if np.sqrt(np.mean(p.astype(np.float64) ** 2)) > threshold]
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int16)


@pytest.fixture
async def server():
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.0, duck_gain=0.0)
    async with RoomServer(SessionFactory(fake_engines(), PARAMS), settings, port=0) as srv:
        yield srv


async def test_a_phone_caller_and_a_webrtc_participant_interpret_each_other(server):
    phone = PhoneClient(server.url, "call", name="Pia", speaks="es", hears="es")
    web = RoomClient(server.url, "call", name="Walt", speaks="en", hears="en")
    await phone.call()
    await web.join()
    room = server.rooms["call"]
    await wait_for(lambda: len(room.participant_ids) == 2, what="both participants")
    listing = room.describe()["participants"]
    assert {(p["name"], p["via"]) for p in listing} == {("Pia", "phone"), ("Walt", "webrtc")}

    # The caller speaks Spanish (a 550 Hz "word" through 8 kHz μ-law): Walt reads and hears English.
    await phone.say(np.concatenate([tone(550, 0.6), silence(0.5)]))
    caption = await wait_for(lambda: [c for c in web.captions if c["final"] and c["name"] == "Pia"], what="Pia's caption")
    assert caption[0]["text"] == "Tone 550." and caption[0]["translations"] == {"en": "[en] Tone 550."}
    await wait_for(lambda: len(loud(np.concatenate([p for _, p in web.heard]) if web.heard else np.zeros(0), 48000)) > 4800,
                   what="Walt hearing the interpretation")

    # Walt speaks English: the caller hears the Spanish interpretation down the phone line.
    heard_from = time.monotonic()
    web.mic.say(np.concatenate([tone(440, 0.6), silence(0.5)]))
    await wait_for(lambda: len(loud(phone.audio(heard_from))) >= 16000 * 0.2, what="the caller hearing it")
    interpretation = loud(phone.audio(heard_from))
    assert abs(dominant_frequency(interpretation) - 880) < 30  # the beep TTS, through μ-law and back
    await wait_for(lambda: phone.marks, what="a mark after the interpretation")
    assert phone.marks[0].startswith("interpretation-")
    caller = room.transport.peers[next(p["id"] for p in listing if p["via"] == "phone")]
    await wait_for(lambda: caller.marks_played, what="the mark played back")

    await phone.hang_up()
    await wait_for(lambda: len(room.participant_ids) == 1, what="the caller to leave")
    await wait_for(lambda: room.session.holding(caller.id) == [], what="the caller released in every stage")
    await web.leave()
    await wait_for(lambda: not server.rooms, what="the room to close")


async def test_a_call_of_only_phone_participants(server):
    alice = PhoneClient(server.url, "phones", name="Alice", speaks="en", hears="en")
    bruno = PhoneClient(server.url, "phones", name="Bruno", speaks="es", hears="es")
    await alice.call()
    await bruno.call()
    await wait_for(lambda: "phones" in server.rooms and len(server.rooms["phones"].participant_ids) == 2, what="both callers")
    since = time.monotonic()
    await alice.say(np.concatenate([tone(440, 0.6), silence(0.5)]))
    await wait_for(lambda: len(loud(bruno.audio(since))) >= 16000 * 0.2, what="Bruno hearing Alice's interpretation")
    assert abs(dominant_frequency(loud(bruno.audio(since))) - 880) < 30
    await alice.hang_up()
    await bruno.hang_up()
    await wait_for(lambda: not server.rooms, what="the room to close")


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"room": "bad room!"}, "room names"),
        ({"room": "ok", "speaks": "xx"}, "cannot recognise speech"),
        ({"room": "ok", "hears": "de"}, "cannot interpret into"),
    ],
)
async def test_a_call_with_bad_parameters_is_hung_up_with_the_reason(server, params, reason):
    phone = PhoneClient(server.url, "ok")
    phone.params.update(params)
    await phone.call()
    await wait_for(lambda: phone.closed_with is not None, what="the server to hang up")
    assert phone.closed_with[0] == 1008 and reason in phone.closed_with[1]
    assert not server.rooms
    await phone.hang_up()


async def test_tokens_apply_to_phone_calls_too():
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"])
    async with RoomServer(SessionFactory(fake_engines(), PARAMS), settings, port=0, secret=SECRET) as srv:
        refused = PhoneClient(srv.url, "vip")
        await refused.call()
        await wait_for(lambda: refused.closed_with is not None, what="a refusal")
        assert "token" in refused.closed_with[1]
        await refused.hang_up()
        wrong_room = PhoneClient(srv.url, "vip", token=make_token("other", SECRET))
        await wrong_room.call()
        await wait_for(lambda: wrong_room.closed_with is not None, what="a refusal")
        await wrong_room.hang_up()
        admitted = PhoneClient(srv.url, "vip", token=make_token("vip", SECRET))
        await admitted.call()
        await wait_for(lambda: "vip" in srv.rooms and srv.rooms["vip"].participant_ids, what="the caller in the room")
        await admitted.hang_up()


class BreaksMidSentenceTTS(BeepTTSEngine):
    """Speaks the first word of "... BREAK ...", then fails: an interpretation cut short."""

    def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
        if "Tone 440" not in text:
            yield from super().synthesize(text, language, voice)
            return
        yield tone(880, 1.5, self.sample_rate)
        time.sleep(0.3)
        raise EngineError("the model fell over")


async def test_an_interpretation_cut_short_is_cleared_from_the_callers_line():
    settings = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.0)
    factory = SessionFactory(fake_engines(tts=BreaksMidSentenceTTS()), PARAMS)
    async with RoomServer(factory, settings, port=0) as srv:
        speaker = PhoneClient(srv.url, "cut", speaks="en", hears="en")
        listener = PhoneClient(srv.url, "cut", speaks="es", hears="es")
        await speaker.call()
        await listener.call()
        await wait_for(lambda: "cut" in srv.rooms and len(srv.rooms["cut"].participant_ids) == 2, what="both callers")
        await speaker.say(np.concatenate([tone(440, 0.6), silence(0.5)]))
        await wait_for(lambda: listener.clears == 1, what="a clear")
        heard = len(loud(listener.audio())) / 16000
        assert 0.1 < heard < 1.3  # part of the 1.5 s chunk played, the rest was cut
        await speaker.hang_up()
        await listener.hang_up()
