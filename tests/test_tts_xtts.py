"""XTTSEngine on a real XTTS checkpoint folder with random weights (tests/tiny_xtts.py).

The folder is loaded by path through coqui's own loader, voices are computed by the
model's own conditioning encoders, and audio comes out of polyvox's streaming decoder
(``pipeline/engines/tts/xtts_stream.py``) and the checkpoint's HiFi-GAN: only the GPT is
small, and the weights are random, so the engine is told to generate a fixed number of
audio tokens per sentence (random weights never choose to stop).

The streaming specification is checked against coqui's own non-streamed path: the same
audio tokens run through coqui's GPT forward and HiFi-GAN decoder at once give the audio
the stream delivered in chunks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("TTS", reason="the xtts extra (coqui-tts, torch) is not installed")

from pipeline.engines.tts.xtts import XTTSEngine  # noqa: E402
from pipeline.engines.tts.xtts_stream import (  # noqa: E402
    VOCODER_CONTEXT_FRAMES,
    SentenceJob,
    SpeechRequest,
)
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
HOP = 256  # output samples per vocoder frame


def frames_for(tokens: int) -> int:
    """Vocoder frames of ``tokens`` audio tokens: ×4 (1024/256), then ×24000/22050."""
    return int(int(tokens * 4) * 24000 / 22050)


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


class Submitted:
    """Records the requests an engine hands its decoder (a spy: they still run)."""

    def __init__(self, monkeypatch, engine):
        self.requests: list[SpeechRequest] = []
        decoder = engine.decoder
        original = decoder.submit

        def submit(request):
            self.requests.append(request)
            return original(request)

        monkeypatch.setattr(decoder, "submit", submit)


@dataclass
class Streamed:
    chunks: list[np.ndarray]
    request: SpeechRequest
    text_tokens: list[int]
    calls_before: tuple[int, int]
    calls_after: tuple[int, int]
    lazy: bool


# A sentence of 18 audio tokens streamed as 6 + 6 + 6: the first chunk is due after 6
# tokens (78 vocoder frames in all).
FIRST, LATER, LONG = 6, 6, 18


@pytest.fixture(scope="module")
def streaming(checkpoint):
    engine = XTTSEngine(
        model=str(checkpoint), first_chunk_tokens=FIRST, stream_chunk_size=LATER, fixed_audio_tokens=LONG
    )
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def streamed(streaming) -> Streamed:
    """One seeded sentence through the streaming engine, with what the decoder did."""
    import torch

    decoder = streaming.decoder
    requests: list[SpeechRequest] = []
    original = decoder.submit
    decoder.submit = lambda request: requests.append(request) or original(request)
    try:
        torch.manual_seed(7)
        before = (decoder.gpt_forward_calls, decoder.gpt_positions)
        stream = streaming.synthesize("Hello there, how are you?", "en")
        lazy = not requests and (decoder.gpt_forward_calls, decoder.gpt_positions) == before
        chunks = list(stream)
        after = (decoder.gpt_forward_calls, decoder.gpt_positions)
    finally:
        del decoder.submit
    (request,) = requests
    text_tokens = streaming._model.tokenizer.encode("hello there, how are you?", lang="en")
    return Streamed(chunks, request, text_tokens, before, after, lazy)


def coqui_reference(engine, text_tokens, codes, voice=None):
    """coqui's non-streamed synthesis of these audio tokens: one GPT forward, one decode."""
    import torch

    model = engine._model
    cond, speaker = engine._voice_tensors(voice or engine.default_voice)
    with torch.inference_mode():
        text = torch.IntTensor(text_tokens)[None]
        codes_t = torch.tensor(codes)[None]
        latents = model.gpt(
            text, torch.tensor([text.shape[-1]]), codes_t,
            torch.tensor([codes_t.shape[-1] * model.gpt.code_stride_len]),
            cond_latents=cond, return_attentions=False, return_latent=True,
        )
        wav = model.hifigan_decoder(latents, g=speaker)[0, 0]
    return (wav.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()


def test_streamed_chunks_follow_the_schedule(streamed):
    calls = streamed.request.vocoder_calls
    # A chunk after 6 tokens, after 12, and the rest when the sentence ends (18).
    assert [tokens for tokens, _, _ in calls] == [FIRST, FIRST + LATER, LONG]
    assert [len(chunk) for chunk in streamed.chunks] == [emitted * HOP for _, _, emitted in calls]
    assert all(c.dtype == np.int16 and c.ndim == 1 and c.size for c in streamed.chunks)
    assert sum(c.size for c in streamed.chunks) == frames_for(LONG) * HOP
    # The first chunk is what is final after 6 tokens: small, and early.
    first = streamed.chunks[0].size
    assert 0 < first < streamed.chunks[1].size


def test_streamed_audio_equals_the_non_streamed_synthesis(streaming, streamed):
    codes = streamed.request.codes[0]
    assert len(codes) == LONG
    reference = coqui_reference(streaming, streamed.text_tokens, codes)
    ours = np.concatenate(streamed.chunks)

    assert ours.shape == reference.shape
    # Float rounding only: at most a couple of int16 steps anywhere.
    assert np.abs(ours.astype(np.int32) - reference.astype(np.int32)).max() <= 2
    assert np.abs(reference).max() > 100  # not silence: the comparison means something


def test_each_token_goes_through_the_gpt_once(streamed):
    """One prompt prefill, then one single-position step per further token."""
    calls = streamed.calls_after[0] - streamed.calls_before[0]
    positions = streamed.calls_after[1] - streamed.calls_before[1]
    prompt = 32 + len(streamed.text_tokens) + 2 + 1  # voice, [START] text [STOP], start-of-audio
    assert calls == LONG  # coqui's non-streamed path would add a full forward of prompt + codes
    assert positions == prompt + LONG - 1


def test_each_chunk_is_vocoded_once_with_bounded_context(streamed):
    """Frames decoded grow with the sentence, not with its square (coqui re-decodes all)."""
    calls = streamed.request.vocoder_calls
    decoded = sum(frames for _, frames, _ in calls)
    emitted = sum(sent for _, _, sent in calls)
    assert emitted == frames_for(LONG)
    assert decoded <= emitted + 2 * VOCODER_CONTEXT_FRAMES * len(calls)


def test_nothing_runs_until_the_stream_is_advanced(streamed):
    assert streamed.lazy


def test_long_text_is_spoken_sentence_by_sentence(engine, monkeypatch):
    submitted = Submitted(monkeypatch, engine)
    sentences: list[str] = []
    tokenizer = engine._model.tokenizer
    original = tokenizer.encode
    monkeypatch.setattr(tokenizer, "encode", lambda text, lang: sentences.append(text) or original(text, lang))
    long_clause = ", ".join(["una frase bastante larga que sigue"] * 7)  # 250 characters

    chunks = speak(engine, f"Buenos días. ¿Cómo está usted? {long_clause}.", "es")

    assert sentences[:2] == ["buenos días.", "¿cómo está usted?"]
    # A sentence over XTTS's Spanish limit (239 characters) is cut at a comma.
    assert len(sentences) == 4 and all(len(s) <= 239 for s in sentences)
    assert sentences[2].endswith(",")
    (request,) = submitted.requests
    assert [len(codes) for codes in request.codes] == [TOKENS] * 4
    assert sum(c.size for c in chunks) == 4 * frames_for(TOKENS) * HOP


def test_a_sentence_is_capped_by_its_length(checkpoint, monkeypatch):
    """Random weights never choose to stop: only the cap ends the sentence."""
    engine = XTTSEngine(model=str(checkpoint), audio_tokens_per_char=0.5, audio_token_margin=1)
    try:
        engine.load()
        submitted = Submitted(monkeypatch, engine)
        short, longer = "Hello there.", "Hello there, good morning."
        caps = [engine.audio_token_cap(short, "en"), engine.audio_token_cap(longer, "en")]
        assert caps == [7, 14]  # ceil(0.5 × characters) + 1
        assert engine.audio_token_cap("你好。", "zh") > engine.audio_token_cap("abc", "en")
        audio = [sum(c.size for c in speak(engine, text)) for text in (short, longer)]
    finally:
        engine.close()
    stop = TINY_ARGS["gpt_stop_audio_token"]
    for cap, request, samples in zip(caps, submitted.requests, audio, strict=True):
        (codes,) = request.codes
        assert len(codes) == cap or (len(codes) < cap and codes[-1] == stop)
        assert samples == frames_for(len(codes)) * HOP


def test_no_sentence_may_exceed_the_models_limit(engine):
    decoder = engine.decoder
    cond, speaker = engine._voice_tensors(engine.default_voice)
    request = SpeechRequest([SentenceJob([5, 6, 7], 10_000)], cond, speaker)
    decoder.submit(request)
    request.cancel()
    assert decoder.max_audio_tokens == TINY_ARGS["gpt_max_audio_tokens"] - 3  # coqui's max_gen_mel_tokens
    assert request.sentences[0].max_tokens == decoder.max_audio_tokens


def test_concurrent_requests_are_decoded_together(engine):
    """Two speakers at once: one forward pass serves both, and both make progress."""
    decoder = engine.decoder
    decoder.step_sizes.clear()
    arrivals: list[tuple[float, int, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        try:
            barrier.wait()
            for _chunk in engine.synthesize("One. Two. Three.", "en"):
                arrivals.append((time.monotonic(), index, "chunk"))
            arrivals.append((time.monotonic(), index, "done"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    assert max(decoder.step_sizes) == 2
    order = [(index, kind) for _, index, kind in sorted(arrivals)]
    # Neither waited for the other to finish: both had audio before either was done.
    first_done = next(i for i, (_, kind) in enumerate(order) if kind == "done")
    assert {index for index, kind in order[:first_done] if kind == "chunk"} == {0, 1}
    assert sum(kind == "done" for _, kind in order) == 2


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
        assert sum(c.size for c in speak(engine, "Hello.")) == frames_for(TOKENS) * HOP
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
    assert sum(c.size for c in speak(engine, "Hello.", voice=stored)) == frames_for(TOKENS) * HOP


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
        ({"first_chunk_tokens": 0}, "first_chunk_tokens"),
        ({"max_batch": 0}, "max_batch"),
        ({"audio_tokens_per_char": 0}, "audio_tokens_per_char"),
        ({"speed": 9.0}, "speed"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        XTTSEngine(**options)


def test_half_precision_needs_cuda(checkpoint):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        XTTSEngine(model=str(checkpoint), device="cpu", dtype="float16").load()
