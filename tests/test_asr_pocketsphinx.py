"""PocketSphinxASREngine on real speech: recorded librivox and flite-synthesised."""

from __future__ import annotations

import threading
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


@pytest.fixture(scope="module")
def engine() -> PocketSphinxASREngine:
    engine = PocketSphinxASREngine(pool_size=2)
    engine.load()
    engine.warmup()
    return engine


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
    import os
    import signal

    from pipeline.errors import EngineError

    engine = PocketSphinxASREngine(pool_size=1)
    engine.load()
    try:
        clip = librivox[1]
        expected = engine.transcribe(clip.pcm, 16000, "en").text
        (worker,) = list(engine._workers.queue)  # noqa: SLF001 - simulating a crash
        os.kill(worker.process.pid, signal.SIGKILL)
        with pytest.raises(EngineError) as info:
            engine.transcribe(clip.pcm, 16000, "en")
        assert info.value.retryable
        assert engine.transcribe(clip.pcm, 16000, "en").text == expected
    finally:
        engine.close()
