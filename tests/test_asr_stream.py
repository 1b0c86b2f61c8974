"""Specification of the streaming ASR interface and of RedecodingASRStream.

A tiny deterministic engine stands in for a model: it hears each tone burst as one word
named after the burst's frequency, with the burst's timing, so what a stream decodes
(and over which window) is visible in the words and their times.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engines.base import ASREngine, RedecodingASRStream, Transcript, Word
from pipeline.errors import EngineError

RATE = 16000


class BurstASREngine(ASREngine):
    """One word per tone burst: 300 Hz → "w300", timed from the burst's first to last loud sample."""

    name = "burst"
    languages = frozenset({"en"})

    def __init__(self) -> None:
        self.decoded: list[int] = []  # samples of each call, in order

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        self.decoded.append(len(pcm))
        frame = sample_rate // 100  # 10 ms frames; a frame is loud when its RMS is
        frames = len(pcm) // frame
        rms = np.sqrt(np.mean(pcm[: frames * frame].astype(np.float64).reshape(frames, frame) ** 2, axis=1))
        words: list[Word] = []
        start = None
        for index in range(frames + 1):
            on = index < frames and rms[index] > 1000
            if on and start is None:
                start = index
            elif not on and start is not None:
                burst = pcm[start * frame : index * frame].astype(np.float64)
                spectrum = np.abs(np.fft.rfft(burst))
                freq = np.fft.rfftfreq(burst.size, 1 / sample_rate)[int(np.argmax(spectrum))]
                words.append(Word(f"w{int(round(freq / 100) * 100)}", start / 100, index / 100))
                start = None
        return Transcript(" ".join(w.text for w in words), language, words=words)


def burst(freq: float, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def gap(seconds: float = 0.25) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def speech(*freqs: int) -> np.ndarray:
    """Bursts at ``freqs``, each followed by a gap: 0.5 s per word."""
    return np.concatenate([part for f in freqs for part in (burst(f), gap())])


def feed_in_chunks(stream: RedecodingASRStream, pcm: np.ndarray, chunk: int = 320) -> None:
    for start in range(0, len(pcm), chunk):
        stream.feed(pcm[start : start + chunk])


def test_engines_do_not_stream_unless_they_say_so() -> None:
    engine = BurstASREngine()
    assert engine.supports_streaming is False
    with pytest.raises(NotImplementedError):
        engine.open_stream("en")


def test_transcripts_have_no_word_timings_unless_given() -> None:
    assert Transcript("hello", "en").words == []


def test_finalize_is_transcribe_of_the_audio_since_the_last_cut() -> None:
    engine = BurstASREngine()
    pcm = speech(300, 500, 700)
    stream = RedecodingASRStream(engine, "en", partial_interval_s=0)

    feed_in_chunks(stream, pcm)
    final = stream.finalize()

    assert final == engine.transcribe(pcm, RATE, "en")
    assert final.text == "w300 w500 w700"
    assert [round(w.start, 2) for w in final.words] == [0.0, 0.5, 1.0]


def test_partials_grow_with_the_audio_and_are_rate_limited() -> None:
    engine = BurstASREngine()
    stream = RedecodingASRStream(engine, "en", partial_interval_s=0, max_partial_load=None)
    texts = []
    for freq in (300, 500, 700):
        feed_in_chunks(stream, speech(freq))
        texts.append(stream.partial().text)
    assert texts == ["w300", "w300 w500", "w300 w500 w700"]

    calls = len(engine.decoded)
    assert stream.partial().text == texts[-1]  # nothing new fed: no decode
    assert len(engine.decoded) == calls

    slow = RedecodingASRStream(engine, "en", partial_interval_s=3600)
    feed_in_chunks(slow, speech(300))
    assert slow.partial().text == "w300"
    feed_in_chunks(slow, speech(500))
    calls = len(engine.decoded)
    assert slow.partial().text == "w300"  # within the interval: the previous hypothesis
    assert len(engine.decoded) == calls
    assert slow.finalize().text == "w300 w500"  # finalize always decodes


def test_finalize_then_more_audio_then_finalize_covers_both_parts() -> None:
    engine = BurstASREngine()
    stream = RedecodingASRStream(engine, "en")
    feed_in_chunks(stream, speech(300, 500))
    assert stream.finalize().text == "w300 w500"
    assert stream.finalize().text == "w300 w500"  # idempotent without new audio

    feed_in_chunks(stream, speech(700))

    assert stream.finalize().text == "w300 w500 w700"


def test_cut_forgets_the_earlier_audio_and_keeps_the_clock() -> None:
    engine = BurstASREngine()
    stream = RedecodingASRStream(engine, "en", partial_interval_s=0, max_partial_load=None)
    feed_in_chunks(stream, speech(300, 500, 700))
    words = stream.finalize().words

    stream.cut(words[1].end)  # the caller committed "w300 w500"

    assert stream.partial().text == "w700"  # the last hypothesis, trimmed, until new audio
    final = stream.finalize()
    assert final.text == "w700"
    assert engine.decoded[-1] == len(speech(300, 500, 700)) - int(words[1].end * RATE)
    assert final.words[0].start == pytest.approx(1.0, abs=0.01)  # stream time, not window time

    feed_in_chunks(stream, speech(900))
    assert stream.finalize().text == "w700 w900"
    stream.cut(0.2)  # before the previous cut: nothing changes
    assert stream.finalize().text == "w700 w900"
    stream.cut(99.0)  # past the end: everything committed
    assert stream.finalize().text == ""


def test_a_window_past_its_limit_drops_the_oldest_audio() -> None:
    engine = BurstASREngine()
    stream = RedecodingASRStream(engine, "en", max_window_s=1.0)

    feed_in_chunks(stream, speech(300, 500, 700))

    assert engine.transcribe(np.zeros(1, np.int16), RATE, "en").text == ""
    assert stream.finalize().text == "w500 w700"
    assert engine.decoded[-1] == RATE


def test_streams_check_their_input_and_their_state() -> None:
    stream = RedecodingASRStream(BurstASREngine(), "en")
    with pytest.raises(EngineError) as info:
        stream.feed(np.zeros((2, 320), dtype=np.int16))
    assert info.value.retryable is False
    with pytest.raises(EngineError):
        stream.feed(np.zeros(320, dtype=np.int32))
    stream.feed(np.zeros(320, dtype=np.float32))  # floats in [-1, 1] are accepted

    with stream:
        pass
    stream.close()  # idempotent
    for call in (lambda: stream.feed(burst(300)), stream.partial, stream.finalize, lambda: stream.cut(0.1)):
        with pytest.raises(EngineError, match="closed") as info:
            call()
        assert info.value.retryable is False
