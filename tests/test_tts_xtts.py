"""XTTSEngine on a real XTTS checkpoint folder with random weights (tests/tiny_xtts.py).

The folder is loaded by path through coqui's own loader, voices are computed by the
model's own conditioning encoders, and audio comes out of its streaming generator and
HiFi-GAN decoder: only the GPT is small, and the weights are random, so the engine is
told to generate a fixed number of audio tokens per sentence (random weights never
choose to stop).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("TTS", reason="the xtts extra (coqui-tts, torch) is not installed")

from pipeline.engines.tts.xtts import XTTSEngine  # noqa: E402
from pipeline.errors import (  # noqa: E402
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from tests.tiny_xtts import TINY_ARGS, write_tiny_xtts  # noqa: E402
from voices.profile import VoiceLatents, VoiceProfile  # noqa: E402
from voices.store import VoiceStore  # noqa: E402

TOKENS = 4  # audio tokens per sentence: ~0.19 s of speech
CHUNK = 2  # tokens per streamed chunk
SAMPLES_PER_TOKEN = 1024 * 24000 // 22050  # one GPT code = 1024 samples at 22.05 kHz


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, torch's spinning OpenMP threads
    slow down ~20x when other processes compete for the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_xtts(tmp_path_factory.mktemp("xtts") / "tiny", speakers=["Tiny Speaker", "Other"])


@pytest.fixture(scope="module")
def engine(checkpoint) -> XTTSEngine:
    engine = XTTSEngine(model=str(checkpoint), stream_chunk_size=CHUNK, fixed_audio_tokens=TOKENS)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


class CallCounter:
    """Counts calls to a model method while still running it (a spy, not a stub)."""

    def __init__(self, monkeypatch, target, name):
        self.count = 0
        original = getattr(target, name)

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(target, name, counted)


def speak(engine, text, language="en", voice=None) -> list[np.ndarray]:
    return list(engine.synthesize(text, language, voice))


def test_loads_a_checkpoint_folder_by_path(engine):
    assert engine.clones_voices is True
    assert engine.sample_rate == 24000
    assert engine.device == "cpu" and engine.dtype == "float32"
    assert {"en", "es", "fr", "de", "zh", "ja"} <= engine.languages


def test_streams_int16_chunks_as_they_are_generated(engine):
    chunks = speak(engine, "Hello there.")

    # 4 tokens in chunks of 2: two chunks while generating, then the tail at the end.
    assert len(chunks) == TOKENS // CHUNK + 1
    assert all(c.dtype == np.int16 and c.ndim == 1 and c.size for c in chunks)
    total = sum(c.size for c in chunks)
    assert total == pytest.approx(TOKENS * SAMPLES_PER_TOKEN, rel=0.1)
    # The first chunk is the first two tokens' audio, not the sentence's.
    assert chunks[0].size < total / 2


def test_first_chunk_comes_before_the_sentence_is_generated(engine, monkeypatch):
    decoded: list[int] = []
    decoder = engine._model.hifigan_decoder
    original = decoder.forward
    monkeypatch.setattr(decoder, "forward", lambda latents, g=None: decoded.append(latents.shape[1]) or original(latents, g=g))

    stream = engine.synthesize("Hello there.", "en")
    assert decoded == []  # lazy: nothing runs until the stream is advanced
    next(stream)
    assert decoded == [CHUNK]  # only the first chunk's tokens have been decoded
    rest = list(stream)
    assert decoded[-1] == TOKENS and len(rest) == TOKENS // CHUNK


def test_stream_chunk_size_sets_the_chunking(checkpoint):
    coarse = XTTSEngine(model=str(checkpoint), stream_chunk_size=TOKENS, fixed_audio_tokens=TOKENS)
    try:
        chunks = speak(coarse, "Hello.")
    finally:
        coarse.close()

    assert len(chunks) == 2  # all the tokens at once, then the final tail


def test_long_text_is_spoken_sentence_by_sentence(engine, monkeypatch):
    sentences: list[str] = []
    model = engine._model
    original = model.inference_stream
    monkeypatch.setattr(
        model, "inference_stream", lambda text, *a, **k: sentences.append(text) or original(text, *a, **k)
    )
    long_clause = ", ".join(["una frase bastante larga que sigue"] * 7)  # 250 characters

    chunks = speak(engine, f"Buenos días. ¿Cómo está usted? {long_clause}.", "es")

    assert sentences[:2] == ["Buenos días.", "¿Cómo está usted?"]
    # A sentence over XTTS's Spanish limit (239 characters) is cut at a comma.
    assert len(sentences) == 4 and all(len(s) <= 239 for s in sentences)
    assert sentences[2].endswith(",")
    assert len(chunks) == len(sentences) * (TOKENS // CHUNK + 1)


def test_a_voice_is_computed_once_and_its_tensors_are_reused(engine, librivox, monkeypatch):
    gpt_calls = CallCounter(monkeypatch, engine._model, "get_gpt_cond_latents")
    speaker_calls = CallCounter(monkeypatch, engine._model, "get_speaker_embedding")
    latents = engine.condition(librivox[0].pcm, 16000)
    voice = VoiceProfile("alice", latents, librivox[0].seconds, "auto")
    before = engine.cache_info()

    first = speak(engine, "Hello.", voice=voice)
    second = speak(engine, "Good morning.", voice=voice)

    assert (gpt_calls.count, speaker_calls.count) == (1, 1)
    after = engine.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 1
    assert first and second

    refined = voice.refined(engine.condition(librivox[2].pcm, 16000), 12.0)
    speak(engine, "Hello.", voice=refined)
    assert engine.cache_info().misses - before.misses == 2  # a new version is a new voice


def test_conditioning_gives_xtts_shaped_latents_that_differ_by_speaker(engine, librivox, flite_speech):
    reader = engine.condition(librivox[0].pcm, 16000)
    again = engine.condition(librivox[0].pcm, 16000)
    synthetic = engine.condition(flite_speech[0].pcm, 16000)

    assert reader.gpt_cond_latent.shape == (1, 32, TINY_ARGS["gpt_n_model_channels"])
    assert reader.speaker_embedding.shape == (1, 512, 1)
    assert np.linalg.norm(reader.speaker_embedding) == pytest.approx(1.0, rel=1e-4)
    assert np.allclose(reader.gpt_cond_latent, again.gpt_cond_latent, atol=1e-5)
    assert not np.allclose(reader.speaker_embedding, synthetic.speaker_embedding, atol=1e-3)


def test_different_voices_give_different_audio(engine, librivox, flite_speech, monkeypatch):
    import torch

    a = VoiceProfile("a", engine.condition(librivox[0].pcm, 16000), 7.0, "auto")
    b = VoiceProfile("b", engine.condition(flite_speech[1].pcm, 16000), 2.0, "auto")
    torch.manual_seed(1)
    audio_a = np.concatenate(speak(engine, "Hello.", voice=a))
    torch.manual_seed(1)
    audio_b = np.concatenate(speak(engine, "Hello.", voice=b))

    assert audio_a.shape == audio_b.shape and not np.array_equal(audio_a, audio_b)


def test_reference_speech_under_a_second_is_refused(engine, librivox):
    from pipeline.errors import AudioInputError

    with pytest.raises(AudioInputError, match="too short"):
        engine.condition(librivox[0].pcm[:8000], 16000)


def test_default_voice_is_the_checkpoints_first_speaker(engine, checkpoint):
    import torch

    speakers = torch.load(checkpoint / "speakers_xtts.pth")
    voice = engine.default_voice

    assert voice.id == "builtin:Tiny Speaker" and voice.source == "builtin"
    assert np.array_equal(voice.gpt_cond_latent, speakers["Tiny Speaker"]["gpt_cond_latent"].numpy())
    assert speak(engine, "Hello.")  # voice=None speaks in it


def test_default_speaker_can_be_named(checkpoint):
    engine = XTTSEngine(model=str(checkpoint), default_speaker="Other", fixed_audio_tokens=2)
    try:
        assert engine.default_voice.id == "builtin:Other"
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="neither a built-in speaker"):
        XTTSEngine(model=str(checkpoint), default_speaker="Nobody").load()


def test_without_speakers_the_default_voice_is_cloned_from_espeak(tmp_path, checkpoint):
    folder = tmp_path / "no-speakers"
    folder.mkdir()
    for name in ("config.json", "vocab.json", "model.pth"):
        (folder / name).symlink_to(checkpoint / name)
    engine = XTTSEngine(model=str(folder), stream_chunk_size=CHUNK, fixed_audio_tokens=TOKENS)
    try:
        voice = engine.default_voice
        assert voice.id == "builtin:espeak" and voice.seconds > 5.0
        assert len(speak(engine, "Hello.")) == TOKENS // CHUNK + 1
    finally:
        engine.close()


def test_a_profile_from_another_model_is_refused(engine):
    alien = VoiceProfile(
        "alice",
        VoiceLatents(np.zeros((1, 32, 1024), np.float32), np.ones((1, 512, 1), np.float32)),
        6.0,
        "enrolled",
    )

    with pytest.raises(EngineError, match="another model"):
        engine.synthesize("Hello.", "en", alien)


def test_unsupported_language_and_blank_text(engine):
    with pytest.raises(UnsupportedLanguageError):
        engine.synthesize("Hello.", "xx")
    assert speak(engine, "  \n ") == []
    assert speak(engine, "Hola.", "es-MX")


def test_concurrent_requests_are_serialised_per_sentence(engine):
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            results[index] = speak(engine, "One. Two.")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert all(len(results[i]) == 2 * (TOKENS // CHUNK + 1) for i in range(2))


def test_closing_a_stream_early_frees_the_model(engine):
    stream = engine.synthesize("First sentence. Second sentence.", "en")
    next(stream)
    stream.close()

    done = threading.Event()
    threading.Thread(target=lambda: (speak(engine, "Next."), done.set()), daemon=True).start()

    assert done.wait(timeout=60)


def test_enrolled_voice_from_a_recording_speaks(engine, tmp_path, librivox):
    from tests.conftest import concat_with_silence

    store = VoiceStore(tmp_path / "voices")
    profile = store.enroll("alice", concat_with_silence([c.pcm for c in librivox[:2]]), engine)

    stored = VoiceStore(tmp_path / "voices").get("alice")
    assert stored.key == profile.key
    assert np.allclose(stored.gpt_cond_latent, profile.gpt_cond_latent)
    assert len(speak(engine, "Hello.", voice=stored)) == TOKENS // CHUNK + 1


def test_missing_or_incomplete_checkpoints_say_what_is_wrong(tmp_path, checkpoint):
    with pytest.raises(EngineUnavailableError, match="no such file or folder"):
        XTTSEngine(model=str(tmp_path / "nowhere")).load()

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").symlink_to(checkpoint / "config.json")
    with pytest.raises(EngineUnavailableError, match="missing model.pth, vocab.json"):
        XTTSEngine(model=str(partial)).load()

    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="HF_HUB_OFFLINE"):
        XTTSEngine(model="coqui/No-Such-Model").load()  # offline: the HF cache only
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "float8"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"stream_chunk_size": 0}, "stream_chunk_size"),
        ({"speed": 9.0}, "speed"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        XTTSEngine(**options)


def test_half_precision_needs_cuda(checkpoint):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        XTTSEngine(model=str(checkpoint), device="cpu", dtype="float16").load()
