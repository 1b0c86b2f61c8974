"""A listener's mix: interpretation in order, original ducked underneath, silence when idle."""

from __future__ import annotations

import asyncio

import numpy as np

from transports.webrtc.mixer import FRAME_SAMPLES, MIX_RATE, ListenerAudioTrack, ListenerMixer


def const(value: int, samples: int) -> np.ndarray:
    return np.full(samples, value, dtype=np.int16)


def test_idle_mix_is_silence_of_exactly_one_frame():
    out = ListenerMixer().pull()
    assert out.dtype == np.int16 and len(out) == FRAME_SAMPLES and not out.any()


def test_direct_speech_plays_at_its_gain_and_is_ducked_under_interpretation():
    mixer = ListenerMixer(duck_gain=0.1)
    mixer.add_direct("alice", const(1000, FRAME_SAMPLES * 2), gain=1.0)
    assert mixer.pull()[0] == 1000
    mixer.add_interpretation(("u1", "es"), const(2000, FRAME_SAMPLES))
    assert mixer.pull()[0] == 2000 + 100  # interpretation + original at the duck gain
    mixer.finish_interpretation(("u1", "es"))
    mixer.add_direct("alice", const(1000, FRAME_SAMPLES), gain=1.0)
    assert mixer.pull()[0] == 1000  # interpretation over: full level again


def test_interpretations_play_whole_and_in_order_even_when_chunks_interleave():
    mixer = ListenerMixer()
    mixer.add_interpretation("first", const(1, 100))
    mixer.add_interpretation("second", const(2, 100))
    mixer.add_interpretation("first", const(3, 100))  # a late chunk of the first
    mixer.finish_interpretation("first")
    mixer.finish_interpretation("second")
    out = mixer.pull(300)
    assert list(out[:100]) == [1] * 100 and list(out[100:200]) == [3] * 100 and list(out[200:]) == [2] * 100


def test_an_unfinished_interpretation_is_waited_for_not_skipped():
    mixer = ListenerMixer()
    mixer.add_interpretation("first", const(1, 10))
    mixer.add_interpretation("second", const(2, 10))
    mixer.finish_interpretation("second")
    out = mixer.pull(30)
    assert list(out[:10]) == [1] * 10 and not out[10:].any()  # "first" may still grow
    mixer.finish_interpretation("first")
    assert list(mixer.pull(10)) == [2] * 10


def test_on_start_fires_once_when_an_interpretation_begins_to_play():
    started = []
    mixer = ListenerMixer()
    mixer.add_interpretation("u", const(5, FRAME_SAMPLES * 2), on_start=lambda: started.append(1))
    assert started == []
    mixer.pull()
    mixer.pull()
    assert started == [1]


def test_direct_audio_never_builds_up_more_than_a_fraction_of_a_second():
    mixer = ListenerMixer()
    for _ in range(200):  # 4 s arriving while nobody pulls
        mixer.add_direct("bob", const(7, FRAME_SAMPLES), gain=1.0)
    pulled = 0
    while mixer.pull().any():
        pulled += FRAME_SAMPLES
    assert pulled <= 0.35 * MIX_RATE


def test_loud_sources_clip_instead_of_wrapping_around():
    mixer = ListenerMixer()
    mixer.add_direct("a", const(30000, FRAME_SAMPLES), gain=1.0)
    mixer.add_direct("b", const(30000, FRAME_SAMPLES), gain=1.0)
    assert mixer.pull()[0] == 32767


async def test_the_track_sends_20ms_frames_at_real_time_pace():
    mixer = ListenerMixer()
    track = ListenerAudioTrack(mixer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = [await track.recv() for _ in range(11)]
    elapsed = loop.time() - started
    assert all(f.sample_rate == MIX_RATE and f.samples == FRAME_SAMPLES for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(11)]
    assert 0.18 <= elapsed < 1.0  # 10 intervals of 20 ms, with room for a busy machine
    track.stop()
