"""Denoise engines: pipecat audio filters, one per participant, on real speech in white noise."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import FilterEnableFrame

from pipeline.engines.base import DenoiseEngine
from pipeline.engines.denoise.deepfilternet import DeepFilterNetDenoiseEngine
from pipeline.engines.denoise.passthrough import PassthroughDenoiseEngine
from pipeline.engines.denoise.rnnoise import RNNoiseDenoiseEngine

RATE = 16000
CHUNK = RATE // 50  # 20 ms, as transports deliver it
NOISE_LEAD_S = 1.5  # noise alone before the speech starts

ENGINES = {
    "none": PassthroughDenoiseEngine,
    "rnnoise": RNNoiseDenoiseEngine,
    "deepfilternet": DeepFilterNetDenoiseEngine,
}


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request) -> DenoiseEngine:
    engine = ENGINES[request.param]()
    engine.load()
    engine.warmup()
    return engine


def speech(librivox) -> np.ndarray:
    return next(c.pcm for c in librivox if c.path.stem.endswith("0880"))


def noisy(clean: np.ndarray, snr_db: float = 5.0, seed: int = 0) -> np.ndarray:
    """Noise alone for NOISE_LEAD_S, then the speech, all in white noise at ``snr_db``."""
    signal = np.concatenate([np.zeros(int(NOISE_LEAD_S * RATE)), clean.astype(np.float64)])
    speech_power = np.mean(clean.astype(np.float64) ** 2)
    noise = np.random.default_rng(seed).normal(
        0, np.sqrt(speech_power / 10 ** (snr_db / 10)), len(signal)
    )
    return np.clip(signal + noise, -32768, 32767).astype(np.int16)


async def run_filter(
    audio_filter: BaseAudioFilter, pcm: np.ndarray, chunk: int = CHUNK
) -> tuple[np.ndarray, list[int]]:
    """Feed ``pcm`` in chunks; return everything that came out and each call's output size."""
    out, sizes = [], []
    for i in range(0, len(pcm), chunk):
        data = await audio_filter.filter(pcm[i : i + chunk].tobytes())
        out.append(data)
        sizes.append(len(data) // 2)
    return np.frombuffer(b"".join(out), dtype=np.int16), sizes


def energy_db(pcm: np.ndarray) -> float:
    return 10 * np.log10(np.mean(pcm.astype(np.float64) ** 2) + 1e-9)


def lag_samples(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    """The delay (0 to ``max_lag`` samples) that best aligns ``delayed`` with ``reference``."""
    n = min(len(reference), len(delayed))
    size = 1 << (2 * n).bit_length()
    # Cross-correlation by FFT: entry k is sum(reference[i] * delayed[i + k]).
    spectrum = np.conj(np.fft.rfft(reference[:n].astype(np.float64), size))
    spectrum *= np.fft.rfft(delayed[:n].astype(np.float64), size)
    correlation = np.fft.irfft(spectrum, size)
    return int(np.argmax(correlation[:max_lag]))


async def test_sample_count_and_noise_reduction(engine, librivox):
    pcm = noisy(speech(librivox))
    audio_filter = engine.create_filter()
    await audio_filter.start(RATE)
    out, sizes = await run_filter(audio_filter, pcm)
    await audio_filter.stop()

    latency = audio_filter.latency_ms * RATE / 1000
    # As many samples out as in, less at most the documented latency still in flight.
    assert 0 <= len(pcm) - len(out) <= latency
    assert max(sizes) <= 2 * CHUNK

    # The noise-only lead, skipping the first half second while the filter adapts.
    lead = slice(int(0.5 * RATE + latency), int((NOISE_LEAD_S - 0.1) * RATE))
    drop = energy_db(pcm[lead]) - energy_db(out[lead])
    if engine.name == "none":
        np.testing.assert_array_equal(out, pcm)
    else:
        assert drop >= 6.0, f"{engine.name} reduced noise by only {drop:.1f} dB"


async def test_latency_is_as_documented(engine, librivox):
    clean = speech(librivox)
    audio_filter = engine.create_filter()
    await audio_filter.start(RATE)
    out, _ = await run_filter(audio_filter, clean)
    await audio_filter.stop()
    measured_ms = lag_samples(clean, out, RATE // 10) * 1000 / RATE
    assert measured_ms == pytest.approx(audio_filter.latency_ms, abs=1.0)


async def test_filters_are_independent(engine, librivox):
    """Two participants' filters interleaved give what each gives alone."""
    first = noisy(speech(librivox), seed=1)[:RATE]
    second = noisy(speech(librivox)[::-1].copy(), snr_db=0.0, seed=2)[:RATE]

    alone = []
    for pcm in (first, second):
        audio_filter = engine.create_filter()
        await audio_filter.start(RATE)
        alone.append((await run_filter(audio_filter, pcm))[0])
        await audio_filter.stop()

    a, b = engine.create_filter(), engine.create_filter()
    await a.start(RATE)
    await b.start(RATE)
    out_a, out_b = [], []
    for i in range(0, len(first), CHUNK):
        out_a.append(await a.filter(first[i : i + CHUNK].tobytes()))
        out_b.append(await b.filter(second[i : i + CHUNK].tobytes()))
    await a.stop()
    await b.stop()

    np.testing.assert_array_equal(np.frombuffer(b"".join(out_a), np.int16), alone[0])
    np.testing.assert_array_equal(np.frombuffer(b"".join(out_b), np.int16), alone[1])


async def test_deepfilternet_returns_exactly_what_it_is_given(librivox):
    """Any chunking: every call returns as many samples as it was given."""
    engine = DeepFilterNetDenoiseEngine()
    audio_filter = engine.create_filter()
    await audio_filter.start(RATE)
    pcm = noisy(speech(librivox))[:RATE]
    rng = np.random.default_rng(0)
    i = 0
    while i < len(pcm):
        n = int(rng.integers(1, 900))
        assert len(await audio_filter.filter(pcm[i : i + n].tobytes())) == 2 * len(pcm[i : i + n])
        i += n
    await audio_filter.stop()


async def test_deepfilternet_disabled_passes_audio_with_the_same_delay(librivox):
    engine = DeepFilterNetDenoiseEngine()
    audio_filter = engine.create_filter()
    await audio_filter.start(RATE)
    await audio_filter.process_frame(FilterEnableFrame(enable=False))
    pcm = noisy(speech(librivox))[:RATE]
    out, _ = await run_filter(audio_filter, pcm)
    await audio_filter.stop()
    delay = round(audio_filter.latency_ms * RATE / 1000)
    # Unfiltered, only resampled there and back.
    assert lag_samples(pcm, out, RATE // 10) == delay
    residual = out[delay:].astype(np.float64) - pcm[: len(pcm) - delay]
    assert energy_db(residual) < energy_db(pcm) - 20


def test_engine_names():
    assert {cls.name for cls in ENGINES.values()} == set(ENGINES)


async def test_deepfilternet_stop_after_a_cancelled_call_does_not_crash(librivox):
    import asyncio

    engine = DeepFilterNetDenoiseEngine()
    engine.load()
    audio_filter = engine.create_filter()
    await audio_filter.start(16000)
    big = librivox[0].pcm[: 16000 * 5].tobytes()  # long enough to be mid-flight when cancelled
    call = asyncio.create_task(audio_filter.filter(big))
    await asyncio.sleep(0.01)
    call.cancel()
    # The worker thread is still denoising; freeing the native state must wait for it.
    await audio_filter.stop()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(RuntimeError):
        await audio_filter.filter(big[:640])
