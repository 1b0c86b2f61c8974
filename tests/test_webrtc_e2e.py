"""End to end over WebRTC with the offline engines: real English speech in, Spanish out.

A speaker (headless Chromium on the real page, or an aiortc client) says a librivox
sentence; a Spanish listener must receive captions whose translation is Apertium's
translation of the transcript, and interpretation audio that is speech.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soxr

from pipeline.audio import write_wav
from pipeline.engines.vad.silero import SileroVADEngine
from transports.webrtc.client import RoomClient

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "browser" / "join_room.mjs"
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


async def test_chromium_on_the_page_is_interpreted_for_a_spanish_listener(
    server, offline, librivox, tmp_path, browser_harness
):
    _, engines = offline
    clip = librivox[CLIP]
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.concatenate([np.zeros(16000, np.int16), clip.pcm, np.zeros(48000, np.int16)]), 16000)
    listener = RoomClient(server.url, "browser", name="Luis", speaks="en", hears="es")
    await listener.join()
    shot = tmp_path / "page.png"
    proc = await asyncio.create_subprocess_exec(
        "node", str(browser_harness), server.url, "browser", "Alice", "en", "en", str(mic), "60000", str(shot),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    page = json.loads(out.decode().strip().splitlines()[-1])
    assert page["ok"], page.get("error")
    assert page["joinStatus"] == "In room browser"
    assert page["maxMicLevel"] > 0.05  # the mic meter moved
    assert {p["name"] for p in page["participants"]} == {"Alice", "Luis"}
    # The page showed the caption with its translation, as the listener received it.
    caption = await wait_for_final(listener, within=30)
    assert caption["name"] == "Alice" and caption["participant_id"] == page["participantId"]
    check_interpretation(listener, caption, engines, clip.text)
    assert any(caption["translations"]["es"] in text for text in page["captionTexts"])
    # Told on joining what happens to voices (the offline profile clones none), and the
    # page's "Clone my voice" switch reached the server during the call.
    assert "neutral synthetic voice" in page["notice"]
    assert page["voiceOffSeen"] is True
    assert page["leftStatus"] == "Left the room"
    assert shot.exists()
    await check_speech_arrives(listener, caption)
    await listener.leave()
