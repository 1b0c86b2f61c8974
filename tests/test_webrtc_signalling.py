"""The signalling API: what it answers, and that bad requests get a 4xx JSON error, never a 500."""

from __future__ import annotations

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from pipeline.errors import ConfigError
from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from transports.webrtc import RoomServer, WebRTCSettings, make_token
from transports.webrtc.client import RoomClient

SECRET = "0123456789abcdef-test-secret"


def settings(**kw) -> WebRTCSettings:
    return WebRTCSettings(ice_addresses=["127.0.0.1"], **kw)


async def offer_sdp() -> str:
    """A real browser-like offer: one audio track and the captions data channel."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.createDataChannel("captions")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture
async def server():
    async with RoomServer(SessionFactory(fake_engines()), settings(max_participants=2, joins_per_minute=1000), port=0) as srv:
        yield srv


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def join(http, server, body, room="lobby", **kw):
    async with http.post(f"{server.url}/api/rooms/{room}/join", json=body, **kw) as resp:
        return resp.status, await resp.json()


async def test_health_languages_and_metrics(server, http):
    async with http.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok", "rooms": 0, "participants": 0}
    async with http.get(f"{server.url}/api/languages") as resp:
        info = await resp.json()
    # fake engines: ASR en/es; MT targets es/en/fr, all spoken by the beep TTS
    assert info == {
        "speaks": ["en", "es"], "hears": ["en", "es", "fr"], "token_required": False,
        "names": {"en": "English", "es": "Spanish", "fr": "French"}, "detect": False,
        "features": {"voice_changer": False, "voices": [], "images": False, "nonverbal": False},
    }
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200 and "polyvox_rooms 0" in text and "polyvox_participants 0" in text


async def test_the_page_and_its_script_are_served(server, http):
    async with http.get(f"{server.url}/") as resp:
        html = await resp.text()
    assert resp.status == 200 and "/static/app.js" in html and 'id="speaks"' in html
    async with http.get(f"{server.url}/static/app.js") as resp:
        assert resp.status == 200 and "createDataChannel(\"captions\")" in await resp.text()


async def test_a_join_answers_with_sdp_and_the_room_lists_the_participant(server, http):
    status, answer = await join(http, server, {"sdp": await offer_sdp(), "type": "offer", "name": "Ada", "speaks": "en", "hears": "es"})
    assert status == 200 and answer["type"] == "answer" and "a=candidate" in answer["sdp"]
    assert "127.0.0.1" in answer["sdp"]  # complete gathering, loopback allowed
    async with http.get(f"{server.url}/api/rooms/lobby") as resp:
        listing = await resp.json()
    assert listing == {
        "room": "lobby",
        "participants": [{"id": answer["participant_id"], "name": "Ada", "speaks": "en", "hears": "es", "voice_cloned": True, "listener": False, "mode": "interpret", "changer_voice": None, "via": "webrtc"}],
        "languages": ["en", "es"],
    }
    leave_url = f"{server.url}/api/rooms/lobby/participants/{answer['participant_id']}"
    async with http.delete(leave_url) as resp:
        assert resp.status == 403  # ids are public; leaving needs the key
    async with http.delete(leave_url, headers={"X-Participant-Key": "guess"}) as resp:
        assert resp.status == 403
    assert len(server.rooms["lobby"].participant_ids) == 1
    async with http.delete(leave_url, headers={"X-Participant-Key": answer["key"]}) as resp:
        assert resp.status == 200 and await resp.json() == {"left": answer["participant_id"]}
    assert server.rooms == {}  # the empty room is gone


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("not json", 400, "JSON"),
        (["a", "list"], 400, "object"),
        ({"type": "offer"}, 400, "sdp"),
        ({"sdp": "v=0 garbage m=audio", "type": "offer"}, 400, "SDP"),
        ({"sdp": "OFFER", "type": "answer"}, 400, "offer"),
        ({"sdp": "v=0\r\n", "type": "offer"}, 400, "audio"),
        ({"SDP": "x", "type": "offer", "speaks": "en"}, 400, "sdp"),
        ("OFFER:speaks=xx", 400, "recognise"),
        ("OFFER:hears=zz", 400, "interpret"),
        ("OFFER:name=" + "n" * 65, 400, "name"),
    ],
)
async def test_malformed_joins_get_a_4xx_json_error(server, http, body, status, fragment):
    if isinstance(body, str) and body.startswith("OFFER:"):
        key, _, value = body[6:].partition("=")
        body = {"sdp": await offer_sdp(), "type": "offer", "speaks": "en", "hears": "es", key: value}
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    async with http.post(f"{server.url}/api/rooms/lobby/join", **kwargs) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert fragment.lower() in error.lower()
    assert server.rooms.get("lobby") is None or server.rooms["lobby"].participant_ids == []


async def test_bad_room_names_unknown_routes_and_unknown_participants_are_4xx(server, http):
    status, body = await join(http, server, {"sdp": await offer_sdp(), "type": "offer"}, room="no%20spaces")
    assert status == 400 and "room names" in body["error"]
    async with http.get(f"{server.url}/api/nothing-here") as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with http.delete(f"{server.url}/api/rooms/lobby/participants/nobody") as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with http.put(f"{server.url}/api/rooms/lobby/join") as resp:
        assert resp.status == 405 and "error" in await resp.json()
    async with http.post(f"{server.url}/api/rooms/lobby/join", data=b"x" * 300_000) as resp:
        assert resp.status == 413


async def test_a_full_room_refuses_the_next_participant(server):
    clients = [RoomClient(server.url, "small", name=f"p{i}") for i in range(3)]
    await clients[0].join()
    await clients[1].join()
    with pytest.raises(RuntimeError, match="409"):
        await clients[2].join()
    for c in clients:
        await c.close()


async def test_another_sites_page_cannot_call_the_api(server, http):
    body = {"sdp": await offer_sdp(), "type": "offer"}
    status, error = await join(http, server, body, headers={"Origin": "https://evil.example"})
    assert status == 403 and error == {"error": "origin not allowed"}
    status, _ = await join(http, server, body, headers={"Origin": server.url})
    assert status == 200


async def test_join_attempts_are_rate_limited_per_client(http):
    async with RoomServer(SessionFactory(fake_engines()), settings(joins_per_minute=2), port=0) as srv:
        statuses = [(await join(http, srv, {"type": "offer"}))[0] for _ in range(3)]
    assert statuses == [400, 400, 429]


async def test_with_a_secret_joining_needs_a_valid_token_for_that_room(http):
    async with RoomServer(SessionFactory(fake_engines()), settings(), port=0, secret=SECRET) as srv:
        sdp = await offer_sdp()
        status, body = await join(http, srv, {"sdp": sdp, "type": "offer"})
        assert status == 401 and "token" in body["error"]
        status, body = await join(http, srv, {"sdp": sdp, "type": "offer", "token": make_token("other", SECRET)})
        assert status == 403 and body["error"] == "token is not valid for this room"
        status, body = await join(http, srv, {"sdp": sdp, "type": "offer", "token": make_token("lobby", SECRET, ttl_s=-1)})
        assert status == 403 and body["error"] == "token has expired"
        async with http.get(f"{srv.url}/api/rooms/lobby") as resp:
            assert resp.status == 401
        token = make_token("lobby", SECRET)
        status, body = await join(http, srv, {"sdp": sdp, "type": "offer", "token": token})
        assert status == 200
        async with http.get(f"{srv.url}/api/rooms/lobby", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200 and len((await resp.json())["participants"]) == 1


def test_a_public_address_without_a_secret_refuses_to_start(monkeypatch):
    monkeypatch.delenv("POLYVOX_ROOM_SECRET", raising=False)
    with pytest.raises(ConfigError, match="POLYVOX_ROOM_SECRET"):
        RoomServer(SessionFactory(fake_engines()), settings(), host="0.0.0.0", port=0)
    server = RoomServer(SessionFactory(fake_engines()), settings(), host="0.0.0.0", port=0, secret=SECRET)
    assert server.require_token


async def test_the_secret_and_tokens_never_reach_the_logs(http):
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    try:
        async with RoomServer(SessionFactory(fake_engines()), settings(), port=0, secret=SECRET) as srv:
            token = make_token("lobby", SECRET)
            await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "token": token})
            await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "token": token + "x"})
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert "joined" in text and SECRET not in text and token.partition(".")[2] not in text


async def test_a_token_for_an_enrolled_user_brings_their_voice_into_the_room(tmp_path, http):
    import numpy as np

    from pipeline.session import InterpretationParams
    from tests.fakes import CloningBeepTTSEngine, tone
    from voices.consent import VoiceConsent
    from voices.store import VoiceStore

    engines = fake_engines(tts=CloningBeepTTSEngine())
    consent = VoiceConsent(VoiceStore(tmp_path / "voices", vad=engines.vad), engine=engines.tts)
    await consent.enroll("ada", np.concatenate([tone(200, 4.0), tone(300, 3.0)]))
    factory = SessionFactory(engines, InterpretationParams(), consent=consent)
    async with RoomServer(factory, settings(), port=0, secret=SECRET) as srv:
        token = make_token("lobby", SECRET, user="ada")
        status, answer = await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "name": "Ada", "token": token})
        assert status == 200
        participant = srv.rooms["lobby"].room.participants[answer["participant_id"]]
        assert participant.identity == "ada" and participant.voice.source == "enrolled"
        # Someone else's token for the same room brings no voice with it.
        status, other = await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "token": make_token("lobby", SECRET)})
        stranger = srv.rooms["lobby"].room.participants[other["participant_id"]]
        assert stranger.identity is None and stranger.voice is None
        await srv.leave("lobby", answer["participant_id"])
        await srv.leave("lobby", other["participant_id"])


async def test_someone_whose_speech_cannot_be_recognised_joins_to_listen(server, http):
    # The fake recogniser knows en and es; French can be heard (en→fr MT, French TTS).
    status, answer = await join(http, server, {"sdp": await offer_sdp(), "type": "offer", "name": "Fleur",
                                               "speaks": "fr", "hears": "fr"})
    assert status == 200 and answer["listen_only"] is True
    assert "cannot be recognised" in answer["notice"] and "French" in answer["notice"]
    participant = server.rooms["lobby"].room.participants[answer["participant_id"]]
    assert participant.listener and participant.language == "fr"
    # Asking to listen is fine in any language; a language nobody can hear is still refused.
    status, answer2 = await join(http, server, {"sdp": await offer_sdp(), "type": "offer", "speaks": "en",
                                                "hears": "es", "listen_only": True})
    assert status == 200 and answer2["listen_only"] is True and "notice" not in answer2
    status, refused = await join(http, server, {"sdp": await offer_sdp(), "type": "offer", "speaks": "de", "hears": "de"})
    assert status == 400 and "de" in refused["error"]


async def test_speaks_auto_joins_when_the_recogniser_identifies_languages(http):
    from tests.fakes import ToneLanguageASREngine

    async with RoomServer(SessionFactory(fake_engines(asr=ToneLanguageASREngine())), settings(), port=0) as srv:
        async with http.get(f"{srv.url}/api/languages") as resp:
            assert (await resp.json())["detect"] is True
        status, answer = await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "speaks": "auto", "hears": "es"})
        assert status == 200 and "listen_only" not in answer
        assert srv.rooms["lobby"].room.participants[answer["participant_id"]].language == "auto"
        await srv.leave("lobby", answer["participant_id"])
    # A recogniser that cannot identify languages refuses "auto" clearly.
    async with RoomServer(SessionFactory(fake_engines()), settings(), port=0) as srv:
        status, refused = await join(http, srv, {"sdp": await offer_sdp(), "type": "offer", "speaks": "auto", "hears": "es"})
        assert status == 400 and "speaks" in refused["error"]
