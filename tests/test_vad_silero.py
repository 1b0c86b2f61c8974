"""SileroVADEngine: one shared ONNX session, independent per-participant streams."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.engines.vad.silero import SileroVADEngine, SileroVADStream
from pipeline.errors import EngineUnavailableError

WINDOW = 512


@pytest.fixture(scope="module")
def engine() -> SileroVADEngine:
    engine = SileroVADEngine()
    engine.load()
    engine.warmup()
    return engine


def windows(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + WINDOW] for i in range(0, len(pcm) - WINDOW + 1, WINDOW)]


def probabilities(stream: SileroVADStream, pcm: np.ndarray) -> np.ndarray:
    return np.array([stream.speech_probability(w) for w in windows(pcm)])


def active_windows(pcm: np.ndarray, below_peak_db: float = 25.0) -> np.ndarray:
    """Which windows are loud (within ``below_peak_db`` of the loudest): the speech."""
    frames = np.stack(windows(pcm)).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    return db > db.max() - below_peak_db


def test_engine_contract(engine):
    assert engine.name == "silero"
    assert engine.sample_rate == 16000
    stream = engine.stream()
    assert stream.window == WINDOW


def test_speech_scores_high(engine, librivox):
    for clip in librivox[:3]:
        probs = probabilities(engine.stream(), clip.pcm)
        loud = active_windows(clip.pcm)
        assert probs.max() > 0.95, clip.path.name
        # Most loud windows are speech; dips between words are allowed.
        assert np.mean(probs[loud] > 0.5) > 0.85, clip.path.name


def test_silence_and_white_noise_score_low(engine):
    silence = np.zeros(16000 * 2, dtype=np.int16)
    assert probabilities(engine.stream(), silence).max() < 0.1

    rng = np.random.default_rng(7)
    noise = np.clip(rng.normal(0, 3000, 16000 * 2), -32768, 32767).astype(np.int16)
    probs = probabilities(engine.stream(), noise)
    assert probs.mean() < 0.1
    assert probs.max() < 0.5


def test_streams_are_independent(engine, librivox):
    """Interleaving two participants' windows changes neither one's probabilities."""
    speech = librivox[0].pcm[: WINDOW * 120]
    rng = np.random.default_rng(3)
    other = np.clip(rng.normal(0, 1000, len(speech)), -32768, 32767).astype(np.int16)

    alone_speech = probabilities(engine.stream(), speech)
    alone_other = probabilities(engine.stream(), other)

    a, b = engine.stream(), engine.stream()
    mixed_speech, mixed_other = [], []
    for ws, wo in zip(windows(speech), windows(other), strict=True):
        mixed_speech.append(a.speech_probability(ws))
        mixed_other.append(b.speech_probability(wo))

    np.testing.assert_allclose(mixed_speech, alone_speech, atol=1e-6)
    np.testing.assert_allclose(mixed_other, alone_other, atol=1e-6)


def test_streams_in_parallel_threads(engine, librivox):
    """The shared session serves several threads at once."""
    clips = [c.pcm[: WINDOW * 100] for c in librivox[:4]]
    expected = [probabilities(engine.stream(), pcm) for pcm in clips]
    results: list[np.ndarray | None] = [None] * len(clips)

    def run(i: int) -> None:
        results[i] = probabilities(engine.stream(), clips[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_reset_forgets_state(engine, librivox):
    speech = librivox[1].pcm
    stream = engine.stream()
    probabilities(stream, speech)
    stream.reset()
    np.testing.assert_allclose(
        probabilities(stream, speech[: WINDOW * 40]),
        probabilities(engine.stream(), speech[: WINDOW * 40]),
        atol=1e-6,
    )


def test_wrong_window_size_is_rejected(engine):
    with pytest.raises(ValueError, match="512"):
        engine.stream().speech_probability(np.zeros(320, dtype=np.int16))


def test_missing_model_file():
    with pytest.raises(EngineUnavailableError, match="not found"):
        SileroVADEngine(model="/nonexistent/silero.onnx").load()


def test_custom_model_path_loads(engine):
    from pipeline.engines.vad.silero import _bundled_model_path

    other = SileroVADEngine(model=str(_bundled_model_path()))
    window = np.zeros(WINDOW, dtype=np.int16)
    assert other.stream().speech_probability(window) == pytest.approx(
        engine.stream().speech_probability(window)
    )
