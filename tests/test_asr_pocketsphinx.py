"""PocketSphinxASREngine on real speech: recorded librivox and flite-synthesised."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jiwer
import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from pipeline.engines.asr.pocketsphinx import PocketSphinxASREngine  # noqa: E402
from pipeline.errors import (  # noqa: E402
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.text import normalize_for_wer  # noqa: E402

RATE = 16000
CHUNK = RATE // 50  # 20 ms


@pytest.fixture(scope="module")
def engine():
    # Deadlines generous enough for a CPU shared with other work: these tests are not
    # about timeouts (the lone_worker ones are).
    engine = PocketSphinxASREngine(pool_size=2, timeout_per_audio_s=5.0)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def librivox_transcripts(engine, librivox):
    """The librivox clips transcribed one after another on one thread."""
    return [engine.transcribe(clip.pcm, RATE, "en") for clip in librivox]


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer(
        [normalize_for_wer(text) for text in references],
        [normalize_for_wer(text) or "<empty>" for text in hypotheses],
    )


@pytest.mark.slow
def test_recorded_speech_corpus_wer_is_at_most_0_35(librivox, librivox_transcripts):
    hypotheses = [transcript.text for transcript in librivox_transcripts]

    assert corpus_wer([clip.text for clip in librivox], hypotheses) <= 0.35
    for transcript in librivox_transcripts:
        assert transcript.language == "en"
        assert transcript.punctuated is False
        assert transcript.confidence is not None and 0.0 <= transcript.confidence <= 1.0


def test_synthetic_speech_sentence_wer_is_at_most_0_5(engine, flite_speech):
    slt = next(clip for clip in flite_speech if clip.path.stem == "slt")

    transcript = engine.transcribe(slt.pcm, RATE, "en")

    assert corpus_wer([slt.text], [transcript.text]) <= 0.5


@pytest.mark.slow
def test_two_threads_get_the_same_transcripts_as_one(engine, librivox, librivox_transcripts):
    sequential = [transcript.text for transcript in librivox_transcripts]
    start = threading.Barrier(2)

    def transcribe_all(clips):
        start.wait()
        return [engine.transcribe(clip.pcm, RATE, "en").text for clip in clips]

    # Each thread takes alternate files, so both decoders in the pool work at once
    # and each ends up decoding utterances the other one decoded sequentially.
    with ThreadPoolExecutor(max_workers=2) as pool:
        evens = pool.submit(transcribe_all, librivox[0::2])
        odds = pool.submit(transcribe_all, librivox[1::2])
        concurrent = [None] * len(librivox)
        concurrent[0::2] = evens.result()
        concurrent[1::2] = odds.result()

    assert concurrent == sequential


def test_a_clip_decodes_the_same_whatever_the_decoders_heard_before(
    engine, librivox, librivox_transcripts, flite_speech
):
    # Two other utterances pass through both pooled decoders in between.
    for clip in flite_speech[:2]:
        engine.transcribe(clip.pcm, RATE, "en")

    assert engine.transcribe(librivox[0].pcm, RATE, "en").text == librivox_transcripts[0].text


def test_float_samples_in_unit_range_are_accepted(engine, flite_speech):
    pcm = flite_speech[0].pcm

    as_float = engine.transcribe(pcm.astype(np.float32) / 32767.0, RATE, "en")

    assert as_float.text == engine.transcribe(pcm, RATE, "en").text


@pytest.mark.parametrize(
    "pcm",
    [
        np.zeros(RATE, dtype=np.int16),
        np.random.default_rng(0).normal(0, 30, RATE).astype(np.int16),
        np.zeros(RATE // 20, dtype=np.int16),
        np.zeros(0, dtype=np.int16),
    ],
    ids=["digital-silence", "faint-noise", "50ms", "empty"],
)
def test_silence_noise_and_slivers_transcribe_to_nothing(engine, pcm):
    assert engine.transcribe(pcm, RATE, "en").text == ""


def test_other_languages_are_refused(engine):
    with pytest.raises(UnsupportedLanguageError):
        engine.transcribe(np.zeros(RATE, dtype=np.int16), RATE, "es")


@pytest.mark.parametrize(
    ("pcm", "rate"),
    [
        (np.zeros(RATE, dtype=np.int16), 48000),
        (np.zeros((RATE, 2), dtype=np.int16), RATE),
        (np.zeros(RATE, dtype=np.int32), RATE),
        (np.full(RATE, 2.0, dtype=np.float32), RATE),
    ],
    ids=["48kHz", "stereo", "int32", "float-out-of-range"],
)
def test_malformed_audio_is_a_non_retryable_engine_error(engine, pcm, rate):
    with pytest.raises(EngineError) as raised:
        engine.transcribe(pcm, rate, "en")

    assert raised.value.retryable is False


def test_missing_model_directory_makes_the_engine_unavailable(tmp_path):
    engine = PocketSphinxASREngine(model=str(tmp_path / "no-such-model"))

    with pytest.raises(EngineUnavailableError, match="no-such-model"):
        engine.load()


async def test_decoding_in_worker_processes_does_not_stall_the_event_loop(engine, librivox):
    import asyncio
    import time

    loop_lag = 0.0

    async def ticker():
        nonlocal loop_lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            loop_lag = max(loop_lag, time.monotonic() - before - 0.01)

    tick = asyncio.create_task(ticker())
    clip = librivox[0]
    transcript = await asyncio.to_thread(engine.transcribe, clip.pcm, 16000, "en")
    tick.cancel()
    assert transcript.text
    # In-process decoding stalls the loop ~0.2 s per second of speech (7 s here).
    assert loop_lag < 0.5, loop_lag


def test_in_process_decoders_give_the_same_result(engine, librivox):
    local = PocketSphinxASREngine(processes=False, pool_size=1)
    local.load()
    clip = librivox[1]
    assert local.transcribe(clip.pcm, 16000, "en").text == engine.transcribe(clip.pcm, 16000, "en").text
    local.close()


def test_a_killed_worker_is_replaced(librivox):
    engine = PocketSphinxASREngine(pool_size=1, streams_per_worker=1, timeout_per_audio_s=5.0)
    engine.load()
    try:
        clip = librivox[1]
        expected = engine.transcribe(clip.pcm, 16000, "en").text
        (pid,) = engine.worker_pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineError) as info:
            engine.transcribe(clip.pcm, 16000, "en")
        assert info.value.retryable
        assert engine.transcribe(clip.pcm, 16000, "en").text == expected
        assert engine.worker_pids() != [pid]
    finally:
        engine.close()


# ------------------------------------------------------------------------------ streams


def stream_clip(engine, pcm, *, chunk=CHUNK, partial_every=15, live=False):
    """Feed ``pcm`` in 20 ms chunks, asking for a partial every 0.3 s; returns (final, partials).

    ``live`` feeds at the pace of speech (else as fast as the stream takes it);
    ``partials`` pairs the audio fed so far (seconds) with the partial text.
    """
    partials = []
    with engine.open_stream("en") as stream:
        began = time.monotonic()
        for index, start in enumerate(range(0, len(pcm), chunk)):
            if live:
                time.sleep(max(0.0, began + start / RATE - time.monotonic()))
            stream.feed(pcm[start : start + chunk])
            if index % partial_every == partial_every - 1:
                partials.append(((start + chunk) / RATE, stream.partial().text))
        return stream.finalize(), partials


@pytest.fixture(scope="module")
def librivox_streamed(engine, librivox):
    """The librivox clips streamed one after another: (final transcript, partials) each."""
    return [stream_clip(engine, clip.pcm) for clip in librivox]


def test_engine_streams(engine):
    assert engine.supports_streaming is True
    with pytest.raises(UnsupportedLanguageError):
        engine.open_stream("es")


@pytest.mark.slow
def test_streaming_in_20ms_chunks_gives_the_words_of_transcribe(
    librivox, librivox_transcripts, librivox_streamed
):
    for clip, batch, (final, _) in zip(librivox, librivox_transcripts, librivox_streamed, strict=True):
        assert final.text == batch.text
        assert final.words == batch.words
        assert final.confidence == pytest.approx(batch.confidence)
        # Word timings: in order, inside the clip, one per word of the text.
        assert [w.text for w in final.words] == final.text.split()
        starts = [w.start for w in final.words]
        assert starts == sorted(starts)
        assert all(0.0 <= w.start < w.end <= clip.seconds + 0.02 for w in final.words)


@pytest.mark.slow
def test_partials_grow_while_the_clip_is_fed_at_the_pace_of_speech(engine, librivox, librivox_streamed):
    clip, streamed = librivox[3], librivox_streamed[3][0]  # 6 s

    final, partials = stream_clip(engine, clip.pcm, live=True)

    assert final == streamed
    counts = [len(text.split()) for _, text in partials]
    early = [count for (fed, _), count in zip(partials, counts, strict=True) if fed <= clip.seconds - 1.0]
    # Something is shown well before the clip ends, and more words come as it goes.
    assert max(early) > 0
    assert counts[-1] > min(count for count in counts if count > 0)
    assert counts[-1] >= len(final.words) // 2


def test_finalize_then_more_audio_then_finalize_covers_both_parts(engine, flite_speech):
    first, second = flite_speech[0].pcm, flite_speech[1].pcm
    with engine.open_stream("en") as stream:
        for start in range(0, len(first), CHUNK):
            stream.feed(first[start : start + CHUNK])
        early = stream.finalize()
        assert stream.finalize() == early  # nothing new: the same answer
        for start in range(0, len(second), CHUNK):
            stream.feed(second[start : start + CHUNK])
        both = stream.finalize()

    assert early == engine.transcribe(first, RATE, "en")
    # The resumed utterance is decoded afresh from the start of the window.
    assert both == engine.transcribe(np.concatenate([first, second]), RATE, "en")
    assert corpus_wer([flite_speech[0].text + " " + flite_speech[1].text], [both.text]) <= 0.5


def test_cut_drops_the_earlier_words_and_keeps_the_later(engine, flite_speech):
    first, second = flite_speech[0], flite_speech[1]
    pause = np.zeros(RATE // 2, dtype=np.int16)
    with engine.open_stream("en") as stream:
        stream.feed(np.concatenate([first.pcm, pause]))
        committed = stream.finalize()
        assert corpus_wer([first.text], [committed.text]) <= 0.5
        stream.cut(committed.words[-1].end)
        assert stream.partial().text == ""  # nothing after the cut yet
        for start in range(0, len(second.pcm), CHUNK):
            stream.feed(second.pcm[start : start + CHUNK])
        later = stream.finalize()

    assert corpus_wer([second.text], [later.text]) <= 0.5
    assert not set(later.text.split()) & (set(committed.text.split()) - set(second.text.split()))
    # Times still count from the opening of the stream.
    assert later.words[0].start >= committed.words[-1].end
    assert later.words[-1].end <= (len(first.pcm) + len(pause) + len(second.pcm)) / RATE + 0.02


def test_silence_and_slivers_stream_to_nothing(engine):
    with engine.open_stream("en") as stream:
        stream.feed(np.zeros(RATE, dtype=np.int16))
        assert stream.partial().text == ""
        assert stream.finalize().text == ""
    with engine.open_stream("en") as stream:
        stream.feed(np.random.default_rng(0).normal(0, 30, RATE // 20).astype(np.int16))
        assert stream.finalize().text == ""


def test_streams_refuse_malformed_audio_and_use_after_close(engine):
    stream = engine.open_stream("en")
    with pytest.raises(EngineError) as info:
        stream.feed(np.zeros((320, 2), dtype=np.int16))
    assert info.value.retryable is False
    stream.close()
    stream.close()
    with pytest.raises(EngineError, match="closed") as info:
        stream.partial()
    assert info.value.retryable is False


@pytest.mark.slow
def test_three_concurrent_streams_give_the_sequential_results(engine, librivox, librivox_streamed):
    # The three shortest clips, at once, on a pool of two workers: two share one.
    picked = sorted(range(len(librivox)), key=lambda i: librivox[i].seconds)[:3]
    start = threading.Barrier(3)

    def run(index):
        start.wait()
        return stream_clip(engine, librivox[index].pcm)[0]

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, picked))

    assert [r.text for r in results] == [librivox_streamed[i][0].text for i in picked]


def test_an_in_process_stream_gives_the_same_result(engine, flite_speech):
    local = PocketSphinxASREngine(processes=False, pool_size=1)
    try:
        pcm = flite_speech[2].pcm
        assert stream_clip(local, pcm)[0] == stream_clip(engine, pcm)[0]
    finally:
        local.close()


@pytest.fixture
def lone_worker():
    """One worker process and a short fixed deadline (2 s), to break on purpose."""
    engine = PocketSphinxASREngine(pool_size=1, streams_per_worker=1, timeout_s=2.0, timeout_per_audio_s=5.0)
    engine.load()
    yield engine
    engine.close()


def test_a_worker_killed_mid_stream_fails_that_stream_and_a_new_stream_works(lone_worker, flite_speech):
    pcm = flite_speech[0].pcm
    expected = lone_worker.transcribe(pcm, RATE, "en")
    stream = lone_worker.open_stream("en")
    stream.feed(pcm[: len(pcm) // 2])
    os.kill(stream.worker_pid, signal.SIGKILL)

    with pytest.raises(EngineError) as info:
        stream.partial()
    assert info.value.retryable
    with pytest.raises(EngineError, match="open a new stream"):
        stream.feed(pcm[len(pcm) // 2 :])
    stream.close()

    # The replacement worker takes the next stream.
    assert stream_clip(lone_worker, pcm)[0] == expected
    assert lone_worker.worker_pids() and lone_worker.worker_pids() != [stream.worker_pid]


def test_a_hung_worker_times_out_and_is_replaced(engine, lone_worker, flite_speech):
    pcm = flite_speech[2].pcm
    expected = engine.transcribe(pcm, RATE, "en")
    stream = lone_worker.open_stream("en")
    stream.feed(pcm[: RATE // 2])
    stream.partial()  # the worker has caught up: the next deadline is the bare 2 s
    (pid,) = lone_worker.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(EngineError, match="no answer within") as info:
            stream.partial()
        assert info.value.retryable
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    with pytest.raises(EngineError, match="open a new stream"):
        stream.finalize()
    stream.close()
    # transcribe waits for the replacement.
    assert lone_worker.transcribe(pcm, RATE, "en").text == expected.text
    assert lone_worker.worker_pids() != [pid]


def test_new_streams_go_to_a_healthy_worker_while_a_dead_one_restarts(engine, flite_speech):
    pcm = flite_speech[2].pcm
    expected = engine.transcribe(pcm, RATE, "en")
    first, second = engine.open_stream("en"), engine.open_stream("en")
    assert first.worker_pid != second.worker_pid  # least loaded: one stream per worker
    dead = first.worker_pid
    os.kill(dead, signal.SIGKILL)
    try:
        # Opened at once, perhaps before the death is noticed: never on the dead worker.
        for _ in range(2):
            stream = engine.open_stream("en")
            assert stream.worker_pid != dead
            stream.close()
        assert stream_clip(engine, pcm)[0] == expected
        with pytest.raises(EngineError, match="open a new stream"):
            first.feed(pcm)
        second.feed(pcm)
        assert second.finalize() == expected
    finally:
        first.close()
        second.close()
