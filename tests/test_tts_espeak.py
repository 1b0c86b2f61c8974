"""EspeakTTSEngine: streamed, option- and markup-safe speech from the real espeak-ng."""

from __future__ import annotations

import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pipeline.engines.tts.espeak import EspeakTTSEngine
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)

if shutil.which("espeak-ng") is None:
    pytest.fail("espeak-ng is not installed (apt install espeak-ng)", pytrace=False)

FOUR_SENTENCES = (
    "It was a bright cold day in April, and the clocks were striking thirteen. "
    "Winston Smith slipped quickly through the glass doors of Victory Mansions. "
    "The hallway smelt of boiled cabbage and old rag mats. "
    "At one end of it a coloured poster, too large for indoor display, had been tacked to the wall."
)


@pytest.fixture(scope="module")
def engine() -> EspeakTTSEngine:
    engine = EspeakTTSEngine()
    engine.load()
    engine.warmup()
    return engine


def seconds(chunks: list[np.ndarray], engine: EspeakTTSEngine) -> float:
    return sum(len(chunk) for chunk in chunks) / engine.sample_rate


def rms(chunks: list[np.ndarray]) -> float:
    samples = np.concatenate(chunks).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def espeak_children() -> list[tuple[int, str]]:
    """(pid, state) of this process's espeak-ng children, zombies included."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        name = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == os.getpid() and name.startswith("espeak"):
            found.append((int(stat.parent.name), state))
    return found


def test_languages_and_sample_rate_come_from_the_installed_espeak(engine):
    assert {"en", "es"} <= engine.languages
    assert engine.sample_rate == 22050
    assert engine.clones_voices is False


def test_spanish_sentences_stream_as_audible_int16_chunks(engine):
    chunks = list(engine.synthesize("Hola, ¿cómo estás? Me llamo Juan.", "es"))

    assert len(chunks) >= 2
    assert all(chunk.dtype == np.int16 and chunk.ndim == 1 for chunk in chunks)
    assert 1.0 <= seconds(chunks, engine) <= 6.0
    assert rms(chunks) > 500


def test_chunks_are_at_most_about_200_ms(engine):
    chunks = list(engine.synthesize(FOUR_SENTENCES, "en"))

    assert max(len(chunk) for chunk in chunks) <= 0.2 * engine.sample_rate


def test_first_chunk_arrives_before_synthesis_is_done(engine):
    started = time.perf_counter()
    stream = engine.synthesize(FOUR_SENTENCES, "en")
    first = next(stream)
    first_at = time.perf_counter() - started
    # Only the first sentence's process has run: the rest of the text is not spoken yet.
    assert len(espeak_children()) <= 1
    rest = list(stream)
    total = time.perf_counter() - started

    assert len(first) > 0 and rest
    assert first_at < 0.5 * total
    assert seconds([first, *rest], engine) > 8.0


@pytest.mark.parametrize(
    "text",
    ["--help -v xx -w /tmp/espeak-test.wav", "-q", "<speak>Hello</speak>", '<break time="5s"/> hi'],
)
def test_text_is_spoken_never_read_as_options_or_markup(engine, text):
    chunks = list(engine.synthesize(text, "en"))

    assert seconds(chunks, engine) > 0.3
    assert rms(chunks) > 300


def test_markup_is_read_aloud(engine):
    plain = seconds(list(engine.synthesize("Hello", "en")), engine)
    tagged = seconds(list(engine.synthesize("<speak>Hello</speak>", "en")), engine)

    # With SSML the tags would vanish; read as text they add words ("speak").
    assert tagged > plain + 0.3


def test_closing_the_stream_early_leaves_no_espeak_process(engine):
    stream = engine.synthesize(FOUR_SENTENCES, "en")
    next(stream)
    assert espeak_children()

    stream.close()

    assert espeak_children() == []


def test_finished_streams_leave_no_espeak_process(engine):
    for _ in engine.synthesize("One. Two. Three.", "en"):
        pass

    assert espeak_children() == []


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_blank_text_yields_nothing(engine, text):
    assert list(engine.synthesize(text, "en")) == []


def test_unsupported_language_is_refused_at_once(engine):
    with pytest.raises(UnsupportedLanguageError):
        engine.synthesize("Hello", "xx")


def test_voice_argument_is_ignored(engine):
    ignored = list(engine.synthesize("Hello there.", "en", voice=object()))

    assert np.array_equal(
        np.concatenate(ignored), np.concatenate(list(engine.synthesize("Hello there.", "en")))
    )


def test_concurrent_calls_give_the_same_audio_as_one(engine):
    expected = np.concatenate(list(engine.synthesize("Good morning. How are you?", "en")))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda _: np.concatenate(
                    list(engine.synthesize("Good morning. How are you?", "en"))
                ),
                range(8),
            )
        )

    assert all(np.array_equal(result, expected) for result in results)


def test_missing_binary_says_how_to_install():
    engine = EspeakTTSEngine(binary="no-such-espeak-binary")

    with pytest.raises(EngineUnavailableError, match="apt install espeak-ng"):
        engine.load()


def test_unknown_configured_voice_is_a_config_error():
    engine = EspeakTTSEngine(voices={"en": "no-such-voice"})

    with pytest.raises(ConfigError, match="no-such-voice"):
        engine.load()


def test_configured_voice_with_variant_is_used():
    default = EspeakTTSEngine()
    female = EspeakTTSEngine(voices={"en": "en-gb+f3"})

    a = np.concatenate(list(default.synthesize("Hello there.", "en")))
    b = np.concatenate(list(female.synthesize("Hello there.", "en")))

    assert not (len(a) == len(b) and np.array_equal(a, b))


# --------------------------------------------------------------------------- dying and stuck


#: ~1,600 characters of one sentence (split at commas into pieces of a few hundred).
LONG_SENTENCE = ", ".join(["the quick brown fox jumps over the lazy dog while the cat sleeps"] * 25) + "."


def _running_espeak() -> int:
    (pid,) = [pid for pid, state in espeak_children() if state != "Z"]
    return pid


def test_a_killed_espeak_is_an_error_not_silence(engine):
    stream = engine.synthesize(LONG_SENTENCE, "en")
    first = next(stream)
    assert first.size
    os.kill(_running_espeak(), signal.SIGKILL)
    with pytest.raises(EngineError, match=r"espeak-ng was killed \(SIGKILL\)") as caught:
        for _ in stream:
            pass
    assert caught.value.retryable
    assert espeak_children() == []


def test_a_stuck_espeak_times_out_and_is_killed():
    impatient = EspeakTTSEngine(timeout_s=0.3, timeout_per_char_s=0.0)
    stream = impatient.synthesize(LONG_SENTENCE, "en")
    next(stream)
    os.kill(_running_espeak(), signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"took over 0\.30 s for a sentence of \d+ characters") as caught:
        for _ in stream:
            pass
    print(f"\nstuck espeak-ng: timed out {time.monotonic() - started:.2f} s after it stopped")
    assert caught.value.retryable
    assert espeak_children() == []
    assert list(impatient.synthesize("Still here.", "en"))  # the next sentence speaks


def test_time_the_caller_takes_between_chunks_does_not_count():
    engine = EspeakTTSEngine(timeout_s=0.3, timeout_per_char_s=0.0)
    chunks = []
    for chunk in engine.synthesize("One short sentence, spoken slowly by its reader.", "en"):
        chunks.append(chunk)
        if len(chunks) <= 3:
            time.sleep(0.4)  # more than the whole deadline, three times
    assert seconds(chunks, engine) > 1.0


def test_no_audio_for_a_non_blank_sentence_is_an_error(engine, monkeypatch):
    quiet = EspeakTTSEngine()
    quiet.load()
    monkeypatch.setattr(quiet, "_executable", shutil.which("true"))  # exits 0, writes nothing
    with pytest.raises(EngineError, match="wrote no audio for a sentence of 6 characters"):
        list(quiet.synthesize("Hello.", "en"))


def test_timeouts_must_be_positive():
    with pytest.raises(ConfigError):
        EspeakTTSEngine(timeout_s=0)
    with pytest.raises(ConfigError):
        EspeakTTSEngine(timeout_per_char_s=-1)
