"""End to end over WebRTC with the offline engines: real English speech in, Spanish out.

An aiortc speaker says a librivox sentence; a Spanish listener must receive captions
whose translation is Apertium's translation of the transcript, and interpretation audio
that is speech. Then a whole call on the real page in headless Chromium
(``tests/browser/call.mjs``): listen-only joins, captions, indicators, the balance
slider, mute, caption export, contrast, the phone layout and a server restart.
Screenshots land in the test's temporary folder (and in ``$POLYVOX_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soxr

from bot.app import interpretation_params
from pipeline.audio import write_wav
from pipeline.engines.vad.silero import SileroVADEngine
from pipeline.session import SessionFactory
from transports.webrtc import RoomServer, WebRTCSettings
from transports.webrtc.client import RoomClient

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "browser" / "call.mjs"
CLIP = 1  # "he was not an ill disposed young man"


def speech_fraction(pcm48: np.ndarray) -> float:
    """Share of 32 ms windows silero calls speech, over the loud part of ``pcm48``."""
    vad = SileroVADEngine()
    vad.load()
    stream = vad.stream()
    pcm = soxr.resample(pcm48, 48000, 16000).astype(np.int16)
    probs = [stream.speech_probability(pcm[i : i + 512]) for i in range(0, len(pcm) - 512, 512)]
    vad.close()
    return float(np.mean(np.asarray(probs) > 0.5)) if probs else 0.0


async def wait_for_final(client: RoomClient, within: float) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        finals = [c for c in client.captions if c["final"] and c["translations"]]
        if finals:
            return finals[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no translated caption within {within} s; got {client.captions}")


def check_interpretation(listener: RoomClient, caption: dict, engines, reference: str) -> None:
    assert caption["language"] == "en"
    transcript = caption["text"]
    heard = set(transcript.lower().strip(".").split())
    assert len(heard & set(reference.split())) >= 3, (transcript, reference)
    (expected,) = engines.mt.translate([transcript], "en", "es")
    assert caption["translations"] == {"es": expected}


async def check_speech_arrives(listener: RoomClient, caption: dict) -> None:
    # The interpretation plays after the caption; give espeak and the mix time.
    await asyncio.sleep(4.0)
    pcm = listener.audio(caption["received_at"] - 1.0)
    loud = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert loud > 300, "the listener heard (almost) nothing"
    assert speech_fraction(pcm) > 0.2


async def test_an_aiortc_speaker_is_interpreted_for_a_spanish_listener(server, offline, librivox):
    _, engines = offline
    clip = librivox[CLIP]
    speaker = RoomClient(server.url, "e2e", name="Ann", speaks="en", hears="en")
    listener = RoomClient(server.url, "e2e", name="Luis", speaks="en", hears="es")
    await speaker.join()
    await listener.join()
    said = speaker.mic.say(np.concatenate([np.zeros(8000, np.int16), clip.pcm, np.zeros(16000, np.int16)]))
    caption = await wait_for_final(listener, within=60)
    assert caption["name"] == "Ann" and caption["participant_id"] == speaker.participant_id
    check_interpretation(listener, caption, engines, clip.text)
    await check_speech_arrives(listener, caption)
    first = listener.first_sound_after(speaker.mic.spoken[said][1] + 0.5, threshold=300)
    assert first is not None
    await speaker.leave()
    await listener.leave()


@pytest.fixture
def browser_harness() -> Path:
    """The Chromium driver, failing clearly when its tools are missing."""
    if shutil.which("node") is None or shutil.which("chromium") is None:
        pytest.fail("the browser test needs node and chromium (apt install nodejs npm chromium)")
    if not (HARNESS.parent / "node_modules" / "playwright-core").exists():
        pytest.fail("run `npm ci --prefix tests/browser` (playwright-core)")
    return HARNESS


def _name(room, name: str) -> str:
    return next(pid for pid in room.participant_ids if room.room.participants[pid].name == name)


async def test_a_call_in_chromium_listen_only_mute_balance_export_reconnect_and_phone(
    offline, librivox, tmp_path, browser_harness
):
    """Three pages in one Chromium (see tests/browser/call.mjs): Alice speaks, Luis
    listens without a microphone, Mia's phone has none; the server restarts mid-call."""
    settings, engines = offline
    clip = librivox[CLIP]
    mic = tmp_path / "mic.wav"  # Chromium loops it: a sentence every 5.4 s
    write_wav(mic, np.concatenate([np.zeros(16000, np.int16), clip.pcm, np.zeros(24000, np.int16)]), 16000)
    factory = SessionFactory(engines, interpretation_params(settings))
    webrtc = WebRTCSettings(ice_addresses=["127.0.0.1"])
    server = RoomServer(factory, webrtc, port=0)
    await server.start()
    port = server.port
    proc = await asyncio.create_subprocess_exec(
        "node", str(browser_harness), server.url, "call", str(mic), str(tmp_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=2**24,
    )
    result: dict = {}
    seen: dict = {}
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=240)
            if not line:
                break
            message = json.loads(line)
            if message.get("need") == "restart":
                room = server.rooms["call"]
                # The slider reached Luis's own mix; nobody else's moved.
                seen["balance"] = room.transport.peers[_name(room, "Luis")].mixer.balance
                seen["alice_balance"] = room.transport.peers[_name(room, "Alice")].mixer.balance
                await server.stop()
                await asyncio.sleep(1.0)  # down for a moment, then back on the same port
                server = RoomServer(factory, webrtc, port=port)
                await server.start()
                proc.stdin.write(b"restarted\n")
                await proc.stdin.drain()
            elif message.get("need") == "inspect":
                room = server.rooms["call"]
                seen["names"] = sorted(room.room.participants[pid].name for pid in room.participant_ids)
                seen["rejoined_balance"] = room.transport.peers[message["luis"]].mixer.balance
                proc.stdin.write(b"ok\n")
                await proc.stdin.drain()
            elif "result" in message:
                result = message["result"]
        await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await server.stop()
    err = (await proc.stderr.read()).decode()
    assert result.get("ok"), (result.get("error"), err[-2000:], result.get("console"))
    check_call(result, seen, engines, clip)


def check_call(result: dict, seen: dict, engines, clip) -> None:
    """What the three pages of the Chromium call saw (and the server, at two moments)."""
    print("screenshots:", *result["screenshots"], sep="\n  ")

    # Joining: Alice sends her microphone; Luis chose listen-only (a receive-only offer);
    # Mia had no microphone and is in anyway, told why and how to speak.
    assert result["alice"]["sends"] == 1 and result["alice"]["status"] == "In room call"
    assert result["luis"] == {**result["luis"], "listenOnly": True, "recvonly": True, "sends": 0,
                              "muteShown": False, "formShown": False}
    assert result["mia"]["listenOnly"] and result["mia"]["statusKind"] == "warn"
    assert "no microphone was found" in result["mia"]["status"]
    assert result["micMax"] > 0.05
    assert {p["name"] for p in result["participants"]} == {"Alice", "Luis", "Mia"}

    # Captions: Alice's words, Apertium's Spanish, partial ones first, in reading order,
    # each with its time, speaker and language names.
    alice_id = result["alice"]["id"]
    finals = [c for c in result["captions"] if c["final"] and c["participant_id"] == alice_id]
    assert len(finals) >= 1 and len(result["captionItems"]) >= 2
    first = finals[0]
    heard = set(first["text"].lower().strip(".").split())
    assert len(heard & set(clip.text.split())) >= 3, (first["text"], clip.text)
    (expected,) = engines.mt.translate([first["text"]], "en", "es")
    assert first["translations"] == {"es": expected}
    partials = [c for c in result["captions"] if c["utterance_id"] == first["utterance_id"] and not c["final"]]
    assert partials, "no partial caption before the final one"
    order = list(dict.fromkeys(c["utterance_id"] for c in result["captions"]))
    assert [item["utterance"] for item in result["captionItems"]] == order  # oldest first
    item = next(i for i in result["captionItems"] if i["utterance"] == first["utterance_id"])
    assert item["final"] and item["who"] == "Alice" and len(item["time"]) == 8  # HH:MM:SS
    assert item["lines"] == [
        {"lang": "en", "label": "English", "text": first["text"]},
        {"lang": "es", "label": "Spanish (interpreted)", "text": expected},
    ]
    assert expected in result["announced"]  # the screen-reader live region
    assert "neutral synthetic voice" in result["notice"]
    assert result["inbound"]["bytes"] > 10_000 and result["inbound"]["playing"]
    # Indicators: Alice speaking, then her interpretation playing.
    activity = [e for e in result["events"] if e["participant_id"] == alice_id]
    assert any(e.get("speaking") is True for e in activity) and any(e.get("speaking") is False for e in activity)
    assert any(e.get("interpreting") is True for e in activity)

    # The balance slider (moved with the keyboard) set Luis's own mix only, and the
    # setting came back with him after the restart.
    assert result["balance"] == {"value": "100", "text": "original voices only"}
    assert seen["balance"] == 1.0 and seen["alice_balance"] == 0.5
    assert seen["rejoined_balance"] == 1.0

    # Mute: the track is disabled, the room hears nothing of Alice, the M key unmutes.
    mute = result["mute"]
    assert mute["pressed"] == "true" and mute["enabled"] == [False] and mute["label"] == "Unmute"
    assert mute["speakingWhileMuted"] == 0 and mute["meterWhileMuted"] == 0
    assert mute["unpressed"] == "false" and mute["speakingAgain"] is True

    # Export: SubRip, WebVTT, text and the clipboard hold the finished captions.
    srt = Path(result["downloads"]["srt"]["path"]).read_text(encoding="utf-8")
    vtt = Path(result["downloads"]["vtt"]["path"]).read_text(encoding="utf-8")
    txt = Path(result["downloads"]["txt"]["path"]).read_text(encoding="utf-8")
    cues = [block.splitlines() for block in srt.strip().split("\n\n")]
    assert len(cues) >= len(finals) >= 1
    assert cues[0][0] == "1" and re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", cues[0][1])
    assert cues[0][2] == f"Alice: {first['text']}" and cues[0][3] == f"(Spanish) {expected}"
    assert vtt.startswith("WEBVTT\n\n")
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", vtt)
    assert f"<v Alice><lang es>{expected}</lang>" in vtt
    assert f"  Spanish: {expected}" in txt and "] Alice" in txt
    assert result["clipboard"] == txt
    assert result["downloads"]["srt"]["name"].startswith("polyvox-call-")
    assert result["downloads"]["srt"]["name"].endswith(".srt")

    # Readable: contrast of every visible text >= 4.5:1, every control named, a live region.
    for audit in (result["audit"], result["phoneAudit"]):
        assert audit["checked"] > 20 and audit["lowContrast"] == [] and audit["unnamed"] == [], audit
        assert "caption-announcer" in audit["live"] and "status" not in audit["unnamed"]
    # The phone: no join form during the call, a compact control panel, captions on screen.
    phone = result["phone"]
    assert not phone["formShown"] and phone["overflowX"] <= 0 and phone["captions"] >= 1
    assert phone["callHeight"] < 0.25 * phone["viewport"][1]
    assert phone["captionsTop"] < 0.75 * phone["viewport"][1]

    assert result["voiceOffSeen"] is True

    # The restart: noticed, shown, and everyone back with the same name and settings.
    print(f"connection loss noticed after {result['lost']['noticedAfterMs']} ms; "
          f"back in the room {result['rejoined']['afterMs']} ms after the server was")
    assert result["lost"]["status"].startswith("Connection lost")
    assert result["lost"]["participants"] == 0  # no stale list
    rejoined = result["rejoined"]
    assert rejoined["name"] == "Luis" and rejoined["listenOnly"] and rejoined["recvonly"]
    assert rejoined["balance"] == "100" and rejoined["reconnects"] == 1
    assert rejoined["names"] == ["Alice", "Luis", "Mia"] == seen["names"]
    assert rejoined["captionsKept"] >= 2 and rejoined["status"] == "Reconnected: in room call"
    assert result["aliceAfter"] == {"pressed": "true", "enabled": [False]}  # still muted
    # Leaving: the page is out at once; the server is told in the background.
    assert result["leave"] == {"phase": "idle", "formShown": True, "status": "Left the room"}
    for shot in result["screenshots"]:
        assert Path(shot).stat().st_size > 10_000
    keep = os.environ.get("POLYVOX_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in result["screenshots"]:
            shutil.copy(shot, Path(keep) / f"chromium-{Path(shot).name}")


async def _start_fake_server(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fake_room_server", str(port), cwd=str(Path(__file__).parent.parent),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.startswith(b"ready"), line
    return proc


async def test_a_page_notices_a_server_killed_without_a_word_and_rejoins(tmp_path, browser_harness):
    """SIGKILL: no connection is closed, packets just stop. The heartbeat must notice."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = await _start_fake_server(port)
    page = await asyncio.create_subprocess_exec(
        "node", str(browser_harness.parent / "lost.mjs"), f"http://127.0.0.1:{port}", "lost", str(tmp_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    result: dict = {}
    try:
        while True:
            line = await asyncio.wait_for(page.stdout.readline(), timeout=120)
            if not line:
                break
            message = json.loads(line)
            if message.get("step") == "joined":
                server.kill()
                await server.wait()
                page.stdin.write(b"killed\n")
            elif message.get("step") == "noticed":
                server = await _start_fake_server(port)
                page.stdin.write(b"restarted\n")
            elif "result" in message:
                result = message["result"]
            await page.stdin.drain()
        await asyncio.wait_for(page.wait(), timeout=30)
    finally:
        for proc in (page, server):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert result.get("ok"), (result.get("error"), result.get("console"))
    print(f"a killed server was noticed after {result['noticed']['afterMs']} ms ({result['noticed']['reason']})")
    print("screenshots:", *result["screenshots"], sep="\n  ")
    assert result["noticed"]["reason"] in ("nothing arrives from the server", "the server stopped answering")
    assert result["noticed"]["status"].startswith("Connection lost")
    assert result["back"] == {"status": "Reconnected: in room lost", "listenOnly": True, "names": ["Noor"]}
