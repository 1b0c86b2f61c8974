"""The Discord transport: members' audio in from the receiver's thread, interpretations
out to the channel's audio source in order of speech end, captions once per utterance.

Fast tests use the fake engines and a recording sink that implements the audio source's
interface; the integration test at the end uses the offline engines and the real
``InterpretationAudioSource``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import EndFrame, Frame, UserAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.frames import CaptionFrame, Utterance
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, InterpretationSession
from tests.fakes import TagMTEngine, ToneASREngine, fake_engines, silence, tone
from transports.discord.transport import DiscordVoiceTransport, playback_key

PARAMS = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)
ALICE, BOB = 111111111111111111, 222222222222222222


class RecordingSink:
    """Implements the audio source's interface and records every call, thread-safely."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple]] = []
        self.audio: dict[tuple, bytearray] = {}
        self.rates: set[int] = set()
        self._lock = threading.Lock()

    def enqueue(self, pcm: bytes, sample_rate: int, *, key: tuple = ()) -> None:
        with self._lock:
            self.events.append(("enqueue", key))
            self.audio.setdefault(key, bytearray()).extend(pcm)
            self.rates.add(sample_rate)

    def announce(self, key: tuple) -> None:
        with self._lock:
            self.events.append(("announce", key))

    def finish(self, key: tuple) -> None:
        with self._lock:
            self.events.append(("finish", key))

    def abandon(self, key: tuple) -> None:
        with self._lock:
            self.events.append(("abandon", key))

    def clear(self) -> None:
        with self._lock:
            self.events.append(("clear", ()))

    def keys(self, op: str) -> list[tuple]:
        with self._lock:
            return [k for o, k in self.events if o == op]

    def first(self, op: str, key: tuple) -> int:
        with self._lock:
            return next(i for i, (o, k) in enumerate(self.events) if o == op and k == key)


class FrameLog(FrameProcessor):
    """Records the user audio frames the cascade's first stage would see."""

    def __init__(self) -> None:
        super().__init__()
        self.user_frames: list[UserAudioRawFrame] = []
        self.threads: set[int] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserAudioRawFrame):
            self.user_frames.append(frame)
            self.threads.add(threading.get_ident())
        await self.push_frame(frame, direction)


@asynccontextmanager
async def running(transport: DiscordVoiceTransport, processors: list[FrameProcessor]):
    """Run ``[input, *processors, output]`` in the background; end it cleanly on exit."""
    worker = PipelineWorker(
        Pipeline([transport.input(), *processors, transport.output()]),
        params=PipelineParams(enable_metrics=False),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_w: Any, _f: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield worker
    finally:
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, 30)


@asynccontextmanager
async def session_running(transport: DiscordVoiceTransport, engines: Any, room: Room, segmenter: SegmenterParams | None = None):
    """Run an interpretation session over ``transport``; end it cleanly (drained) on exit."""
    session = InterpretationSession(engines, transport, InterpretationParams(segmenter=segmenter or PARAMS), room=room)
    await session.start()
    try:
        yield session
    finally:
        await session.stop(drain=True)


def feed_from_thread(transport: DiscordVoiceTransport, tracks: dict[int, np.ndarray], pace: float = 0.25) -> threading.Thread:
    """Feed 20 ms chunks of each member's audio as the receiver does: from its own thread,
    all members on one clock, at ``pace`` × real time."""

    def run() -> None:
        step = 320
        length = max(len(p) for p in tracks.values())
        for start in range(0, length, step):
            for user, pcm in tracks.items():
                piece = pcm[start : start + step]
                if len(piece):
                    transport.receive_audio(user, piece.tobytes())
            time.sleep(0.02 * pace)

    thread = threading.Thread(target=run, name="fake-voice-receiver")
    thread.start()
    return thread


async def wait_for(predicate, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def en_es_room() -> Room:
    room = Room(["en", "es"], default_language="en")
    room.join(str(ALICE), language="en", name="Alice")
    room.join(str(BOB), language="es", name="Bob")
    return room


async def test_audio_from_the_receiver_thread_becomes_user_audio_frames_on_the_loop():
    sink = RecordingSink()
    transport = DiscordVoiceTransport(sink)
    log = FrameLog()
    chunk = tone(440, 0.02).tobytes()
    transport.receive_audio(ALICE, chunk)  # before the pipeline runs: nobody to hand it to
    assert transport.input().frames_dropped == 1
    async with running(transport, [log]):
        loop_thread = threading.get_ident()
        thread = threading.Thread(target=lambda: [transport.receive_audio(ALICE, chunk) for _ in range(25)])
        thread.start()
        await asyncio.to_thread(thread.join)
        await wait_for(lambda: len(log.user_frames) == 25)
    assert log.threads == {loop_thread}
    frame = log.user_frames[0]
    assert (frame.user_id, frame.sample_rate, frame.num_channels, frame.audio) == (str(ALICE), 16000, 1, chunk)


async def test_interpretations_are_keyed_by_speech_end_even_when_the_later_one_is_ready_first():
    # Alice (en) stops talking first, but her recognition is slow; Bob (es) stops later
    # and is synthesised first. The channel must still hear Alice first.
    engines = fake_engines(asr=ToneASREngine(delays={440: 1.0}))
    room = en_es_room()
    sink = RecordingSink()
    transport = DiscordVoiceTransport(sink, room=room)
    alice = np.concatenate([silence(0.1), tone(440, 0.5), silence(1.5)])
    bob = np.concatenate([silence(0.9), tone(550, 0.5), silence(0.7)])
    async with session_running(transport, engines, room):
        thread = feed_from_thread(transport, {ALICE: alice, BOB: bob})
        await asyncio.to_thread(thread.join)
        await wait_for(lambda: len(sink.keys("finish")) == 2)
    (alice_key,) = [k for k in sink.keys("finish") if k[2] == "es"]
    (bob_key,) = [k for k in sink.keys("finish") if k[2] == "en"]
    assert alice_key < bob_key  # the player plays in key order
    # Bob's audio reached the sink before Alice's...
    assert sink.first("enqueue", bob_key) < sink.first("enqueue", alice_key)
    # ...but Alice's place was announced before it, so the player knows to wait for her.
    assert sink.first("announce", alice_key) < sink.first("enqueue", bob_key)
    # Alice (en) is interpreted into Spanish, Bob (es) into English: one 100 ms beep per word.
    assert len(sink.audio[alice_key]) == 3 * 2400 * 2  # "[es] Tone 440."
    assert sink.rates == {24000}
    assert sink.keys("abandon") == []


async def test_captions_come_once_per_utterance_with_transcript_and_every_translation():
    room = Room(["en", "es", "fr"], default_language="en")
    room.join(str(ALICE), language="en", name="Alice")
    sink = RecordingSink()
    transport = DiscordVoiceTransport(sink, room=room)
    captions: list[CaptionFrame] = []

    @transport.event_handler("on_caption")
    async def _caption(_t: Any, caption: CaptionFrame) -> None:
        if caption.final:
            captions.append(caption)

    alice = np.concatenate([silence(0.1), tone(440, 0.4), silence(0.6), tone(660, 0.4), silence(0.6)])
    async with session_running(transport, fake_engines(), room):
        thread = feed_from_thread(transport, {ALICE: alice})
        await asyncio.to_thread(thread.join)
        await wait_for(lambda: len(captions) == 2)
        await wait_for(lambda: transport.output().pending_utterances == 0)
    assert [(c.text, c.translations) for c in captions] == [
        ("Tone 440.", {"es": "[es] Tone 440.", "fr": "[fr] Tone 440."}),
        ("Tone 660.", {"es": "[es] Tone 660.", "fr": "[fr] Tone 660."}),
    ]
    # Two languages per utterance, both played, in speech-end order.
    finished = sink.keys("finish")
    assert len(finished) == 4 and finished == sorted(finished)


async def test_a_dropped_utterance_gives_up_its_place_and_the_next_one_plays():
    engines = fake_engines(asr=ToneASREngine(empty_on={440}))
    room = en_es_room()
    sink = RecordingSink()
    transport = DiscordVoiceTransport(sink, room=room)
    alice = np.concatenate([silence(0.1), tone(440, 0.4), silence(0.6), tone(660, 0.4), silence(0.6)])
    async with session_running(transport, engines, room):
        thread = feed_from_thread(transport, {ALICE: alice})
        await asyncio.to_thread(thread.join)
        await wait_for(lambda: len(sink.keys("finish")) == 1)
        await wait_for(lambda: transport.output().pending_utterances == 0)
    (abandoned,) = sink.keys("abandon")
    (finished,) = sink.keys("finish")
    assert abandoned < finished  # the empty utterance came first and was announced...
    assert abandoned not in sink.audio  # ...but never got audio
    assert sink.keys("announce") == [abandoned, finished]


async def test_a_language_that_never_gets_translated_does_not_hold_the_queue():
    # Places for Spanish and French are held when the utterance leaves the VAD; French never
    # comes (MT cannot do it), so its place is released once MT is done with the utterance.
    room = Room(["en", "es", "fr"], default_language="en")
    room.join(str(ALICE), language="en")
    sink = RecordingSink()
    transport = DiscordVoiceTransport(sink, room=room)
    engines = fake_engines(mt=TagMTEngine(pairs=[("en", "es")]))
    alice = np.concatenate([silence(0.1), tone(440, 0.4), silence(0.6)])
    async with session_running(transport, engines, room):
        thread = feed_from_thread(transport, {ALICE: alice})
        await asyncio.to_thread(thread.join)
        await wait_for(lambda: len(sink.keys("announce")) == 2)
        await wait_for(lambda: transport.output().pending_utterances == 0)
    assert [k[2] for k in sink.keys("finish")] == ["es"]
    assert [k[2] for k in sink.keys("abandon")] == ["fr"]


def test_playback_keys_order_by_wall_clock_speech_end_not_per_speaker_time():
    # Utterance.end counts from each member's first sample, so it cannot order two members.
    early = Utterance("1", "en", start=50.0, end=52.0)
    late = Utterance("2", "en", start=0.5, end=1.0)
    early.mark("speech_end", 100.0)
    late.mark("speech_end", 101.0)
    assert playback_key(early, "es") < playback_key(late, "es")
    assert playback_key(early, "es") < playback_key(early, "fr")


async def test_speech_end_is_when_the_last_sample_arrived_not_when_a_lane_got_to_it():
    room = en_es_room()
    transport = DiscordVoiceTransport(RecordingSink(), room=room)
    captions: list[CaptionFrame] = []

    @transport.event_handler("on_caption")
    async def _caption(_t: Any, caption: CaptionFrame) -> None:
        captions.append(caption)

    # Recognition is slow: by the time Alice's utterance is recognised, a second has passed.
    engines = fake_engines(asr=ToneASREngine(delays={440: 1.0}))
    async with session_running(transport, engines, room):
        spoken: list[float] = []

        def speak() -> None:
            voice = tone(440, 0.5)
            for i in range(0, len(voice), 320):  # half a second of Alice, as the receiver delivers it
                transport.receive_audio(ALICE, voice[i : i + 320].tobytes())
                spoken.append(time.monotonic())
                time.sleep(0.02)
            for _ in range(30):  # then the hang-over's silence
                transport.receive_audio(ALICE, silence(0.02).tobytes())
                time.sleep(0.02)

        await asyncio.to_thread(speak)
        await wait_for(lambda: captions, 10)
    marks = captions[0].utterance.marks
    # The end of her speech is when its last voiced audio arrived (stamped on the
    # receiver's thread; within a VAD window), not when the hang-over passed nor when
    # the slow recogniser got to it.
    assert abs(marks["speech_end"] - spoken[-1]) < 0.1
    assert marks["asr_done"] - marks["speech_end"] > 1.0


class SinkTap:
    """Forwards every call to the real audio source and keeps what each key was given."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.audio: dict[tuple, list[np.ndarray]] = {}
        self.rate = 0

    def enqueue(self, pcm: bytes, sample_rate: int, *, key: tuple = ()) -> None:
        self.audio.setdefault(key, []).append(np.frombuffer(pcm, dtype=np.int16))
        self.rate = sample_rate
        self.source.enqueue(pcm, sample_rate, key=key)

    def announce(self, key: tuple) -> None:
        self.source.announce(key)

    def finish(self, key: tuple) -> None:
        self.source.finish(key)

    def abandon(self, key: tuple) -> None:
        self.source.abandon(key)

    def clear(self) -> None:
        self.source.clear()


def envelope(pcm: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """10 ms RMS envelope of the first ``seconds`` after the first loud sample."""
    start = int(np.flatnonzero(np.abs(pcm) > 500)[0])
    window = rate // 100
    part = pcm[start : start + int(seconds * rate)].astype(np.float64)
    part = part[: len(part) // window * window].reshape(-1, window)
    return np.sqrt((part**2).mean(axis=1))


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.slow
async def test_two_members_real_speech_offline_engines_source_plays_both_in_order(librivox):
    """Two members' recorded English speech through the offline cascade (silero, RNNoise,
    pocketsphinx, Apertium, espeak); the real audio source yields both Spanish
    interpretations, the member who finished speaking first heard first."""
    from bot.app import load_engines
    from bot.config import load_settings
    from pipeline.audio import resample
    from transports.discord.player import InterpretationAudioSource

    settings = load_settings(profile="offline")
    engines = load_engines(settings)
    try:
        room = Room(["en", "es"], default_language="en")
        room.join(str(ALICE), language="en")
        room.join(str(BOB), language="en")
        source = InterpretationAudioSource()
        tap = SinkTap(source)
        transport = DiscordVoiceTransport(tap, room=room)
        first, second = librivox[0].pcm, librivox[1].pcm
        # Bob starts speaking while Alice is finishing; Alice ends first.
        alice = np.concatenate([silence(0.3), first, silence(2.0 + len(second) / 16000)])
        bob = np.concatenate([silence(0.3 + len(first) / 16000 - 0.5), second, silence(2.0)])
        captions: list[CaptionFrame] = []

        @transport.event_handler("on_caption")
        async def _caption(_t: Any, caption: CaptionFrame) -> None:
            if caption.final:
                captions.append(caption)

        async with session_running(transport, engines, room, SegmenterParams(min_silence_ms=500)):
            thread = feed_from_thread(transport, {ALICE: alice, BOB: bob}, pace=0.5)
            await asyncio.to_thread(thread.join)
            await wait_for(
                lambda: captions and transport.output().pending_utterances == 0, limit_s=90
            )
        # Read the source as discord.py's player thread does, 20 ms at a time, until idle.
        reads = []
        for _ in range(50 * 180):
            chunk = source.read()
            assert len(chunk) == 3840
            reads.append(np.frombuffer(chunk, dtype=np.int16).reshape(-1, 2)[:, 0])
            if len(reads) > 100 and not np.any(np.concatenate(reads[-100:])):
                break
        played = np.concatenate(reads)
    finally:
        engines.close()
    speakers = {c.user_id for c in captions}
    assert speakers == {str(ALICE), str(BOB)}
    assert all(c.translations.get("es") for c in captions)
    keys = sorted(tap.audio)
    assert {k[1] for k in keys} == {c.utterance.id for c in captions}
    by_id = {c.utterance.id: c for c in captions}
    order = [by_id[k[1]].user_id for k in keys]
    # Alice finished first, so every one of her utterances comes before Bob's.
    assert order == sorted(order, key=lambda user: user != str(ALICE)), order
    synthesized = sum(sum(len(c) for c in chunks) for chunks in tap.audio.values()) / tap.rate
    voiced_played = np.count_nonzero(np.abs(played) > 0) / 48000
    assert voiced_played > 0.7 * synthesized  # all of it was played (one of two missing: ~0.5)
    # The first thing the channel hears is Alice's first interpretation, not Bob's.
    heard = envelope(played, 48000, 1.0)
    alice_first = envelope(resample(np.concatenate(tap.audio[keys[0]]), tap.rate, 48000), 48000, 1.0)
    bob_first_key = next(k for k in keys if by_id[k[1]].user_id == str(BOB))
    bob_first = envelope(resample(np.concatenate(tap.audio[bob_first_key]), tap.rate, 48000), 48000, 1.0)
    assert similarity(heard, alice_first) > 0.9
    assert similarity(heard, alice_first) > similarity(heard, bob_first) + 0.1
