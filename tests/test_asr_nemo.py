"""Specification of the NeMo ASR engine, on tiny random FastConformer checkpoints.

The checkpoints (``tests/tiny_models.build_tiny_nemo_asr``) are real NeMo models
(CTC, hybrid RNN-T/CTC, TDT) with a sentencepiece tokenizer, saved with ``save_to`` as
``.nemo`` files; the engine restores them by path through its real loading code.
Random weights make the words arbitrary, so what is checked is shape, determinism,
batching, decoders, languages and errors; streams are checked against NeMo's own
simulated cache-aware streaming and against whole-utterance decoding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nemo.collections.asr")

from pipeline.engines.asr.nemo import NeMoASREngine  # noqa: E402
from pipeline.engines.base import ASREngine, RedecodingASRStream, Transcript  # noqa: E402
from pipeline.errors import EngineError, EngineUnavailableError, UnsupportedLanguageError  # noqa: E402
from tests.tiny_models import build_tiny_nemo_asr, shared_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_nemo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.getbasetemp()
    return {
        name: shared_checkpoint(
            base, f"nemo-{name}",
            lambda folder, kind=kind, pnc=pnc, streaming=streaming: build_tiny_nemo_asr(
                folder, kind, punctuated=pnc, streaming=streaming
            ),
        )
        for name, kind, pnc, streaming in (
            ("ctc", "ctc", False, False), ("hybrid", "hybrid", False, False), ("tdt", "tdt", False, False),
            ("ctc_pnc", "ctc", True, False), ("hybrid_streaming", "hybrid", False, True),
        )
    }


@pytest.fixture(scope="module")
def ctc(tiny_nemo: dict[str, Path]) -> Iterator[NeMoASREngine]:
    engine = NeMoASREngine(model=str(tiny_nemo["ctc"]), batch_window_ms=0)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


def utterances(count: int = 3) -> list[np.ndarray]:
    """Different lengths of deterministic "speech-like" audio (tones with noise)."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        seconds = 0.6 + 0.5 * i
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.05 * rng.standard_normal(t.size)
        out.append((wave * 32767).astype(np.int16))
    return out


def test_is_an_asr_engine_named_nemo() -> None:
    assert issubclass(NeMoASREngine, ASREngine)
    assert NeMoASREngine.name == "nemo"


def test_restores_a_nemo_file_by_path(ctc: NeMoASREngine) -> None:
    assert ctc.device == "cpu"
    assert ctc.decoder_type == "ctc"
    assert ctc.languages == frozenset({"en"})
    assert ctc.punctuated is False


def test_transcribes_a_batch_deterministically(ctc: NeMoASREngine) -> None:
    items = [(pcm, 16000, "en") for pcm in utterances(3)]
    first = ctc.transcribe_batch(items)
    assert len(first) == 3
    assert all(isinstance(t, Transcript) and isinstance(t.text, str) for t in first)
    assert all(t.language == "en" and t.punctuated is False for t in first)
    assert all(t.extra["decoder"] == "ctc" and t.extra["batch_size"] == 3 for t in first)
    assert ctc.transcribe_batch(items) == first
    # Batching must not change what each utterance decodes to.
    alone = [ctc.transcribe(pcm, sr, lang) for pcm, sr, lang in items]
    assert [t.text for t in alone] == [t.text for t in first]


def test_accepts_float_audio_and_returns_nothing_for_a_blip(ctc: NeMoASREngine) -> None:
    pcm = utterances(1)[0]
    as_float = ctc.transcribe(pcm.astype(np.float32) / 32768.0, 16000, "en")
    assert as_float.text == ctc.transcribe(pcm, 16000, "en").text
    assert ctc.transcribe(np.zeros(800, dtype=np.int16), 16000, "en").text == ""


def test_concurrent_callers_share_a_forward_pass(tiny_nemo: dict[str, Path]) -> None:
    engine = NeMoASREngine(model=str(tiny_nemo["ctc"]), batch_window_ms=300)
    engine.load()
    clips = utterances(4)
    expected = [engine.transcribe(pcm, 16000, "en").text for pcm in clips]
    engine._batcher.batch_sizes.clear()  # type: ignore[union-attr]
    results: dict[int, str] = {}

    def speak(i: int) -> None:
        results[i] = engine.transcribe(clips[i], 16000, "en").text

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    sizes = list(engine._batcher.batch_sizes)  # type: ignore[union-attr]
    engine.close()

    assert [results[i] for i in range(4)] == expected
    assert sum(sizes) == 4 and max(sizes) > 1


def test_hybrid_model_uses_the_chosen_decoder(tiny_nemo: dict[str, Path]) -> None:
    clips = [(pcm, 16000, "en") for pcm in utterances(2)]
    for decoder in ("rnnt", "ctc"):
        engine = NeMoASREngine(model=str(tiny_nemo["hybrid"]), decoder=decoder, batch_window_ms=0)
        engine.load()
        try:
            assert engine.decoder_type == decoder
            out = engine.transcribe_batch(clips)
        finally:
            engine.close()
        assert len(out) == 2 and all(t.extra["decoder"] == decoder for t in out)


def test_tdt_model_transcribes(tiny_nemo: dict[str, Path]) -> None:
    engine = NeMoASREngine(model=str(tiny_nemo["tdt"]), batch_window_ms=0)
    engine.load()
    try:
        assert engine.decoder_type == "tdt"
        out = engine.transcribe_batch([(pcm, 16000, "en") for pcm in utterances(2)])
    finally:
        engine.close()
    assert len(out) == 2 and all(isinstance(t.text, str) for t in out)


def test_pnc_model_is_detected_as_punctuated(tiny_nemo: dict[str, Path]) -> None:
    engine = NeMoASREngine(model=str(tiny_nemo["ctc_pnc"]), batch_window_ms=0)
    engine.load()
    try:
        assert engine.punctuated is True
        assert engine.transcribe(utterances(1)[0], 16000, "en").punctuated is True
    finally:
        engine.close()


def test_languages_come_from_the_name_or_the_option(tiny_nemo: dict[str, Path]) -> None:
    assert NeMoASREngine(model="nvidia/stt_es_fastconformer_hybrid_large_pc").languages == {"es"}
    assert NeMoASREngine(model="nvidia/parakeet-tdt-0.6b-v2").languages == {"en"}
    assert {"en", "es", "de", "uk"} <= NeMoASREngine(model="nvidia/parakeet-tdt-0.6b-v3").languages
    engine = NeMoASREngine(model=str(tiny_nemo["ctc"]), languages=["es"], batch_window_ms=0)
    try:
        assert engine.transcribe(utterances(1)[0], 16000, "es").language == "es"
        with pytest.raises(UnsupportedLanguageError, match="'en'"):
            engine.transcribe(utterances(1)[0], 16000, "en")
    finally:
        engine.close()


def test_rejects_bad_audio(ctc: NeMoASREngine) -> None:
    with pytest.raises(EngineError, match="16000 Hz") as info:
        ctc.transcribe(utterances(1)[0], 8000, "en")
    assert info.value.retryable is False
    with pytest.raises(EngineError, match="mono"):
        ctc.transcribe(np.zeros((2, 16000), dtype=np.int16), 16000, "en")
    with pytest.raises(UnsupportedLanguageError, match="'fr'"):
        ctc.transcribe(utterances(1)[0], 16000, "fr")


def test_a_hub_model_missing_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    from pipeline.models import ModelMissingError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelMissingError, match=r"^asr.model 'nvidia/parakeet-tdt-0.6b-v2' is not downloaded") as info:
        NeMoASREngine(model="nvidia/parakeet-tdt-0.6b-v2").load()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ streams

CHUNK = 320  # 20 ms


def stream_through(engine: NeMoASREngine, pcm: np.ndarray, *, partial_every: int = 15) -> tuple[Transcript, list[str]]:
    """Feed ``pcm`` in 20 ms chunks with a partial every 0.3 s; (final, partial texts)."""
    partials = []
    with engine.open_stream("en") as stream:
        for index, start in enumerate(range(0, len(pcm), CHUNK)):
            stream.feed(pcm[start : start + CHUNK])
            if index % partial_every == partial_every - 1:
                partials.append(stream.partial().text)
        return stream.finalize(), partials


def nemo_simulated_streaming(model, pcm: np.ndarray) -> str:
    """NeMo's own cache-aware streaming of a whole recording (its documented loop)."""
    import torch
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    buffer = CacheAwareStreamingAudioBuffer(model=model)
    buffer.append_audio(pcm.astype(np.float32) / 32768.0, stream_id=-1)
    channel, time_cache, length = model.encoder.get_initial_cache_state(batch_size=1)
    hypotheses = predictions = texts = None
    for step, (chunk, lengths) in enumerate(iter(buffer)):
        with torch.inference_mode():
            predictions, texts, channel, time_cache, length, hypotheses = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths,
                cache_last_channel=channel, cache_last_time=time_cache, cache_last_channel_len=length,
                keep_all_outputs=buffer.is_buffer_empty(), previous_hypotheses=hypotheses,
                previous_pred_out=predictions, return_transcription=True,
                drop_extra_pre_encoded=model.encoder.streaming_cfg.drop_extra_pre_encoded if step else 0,
            )
    text = texts[0] if isinstance(texts[0], str) else texts[0].text
    return " ".join(text.split())


def test_transcripts_carry_word_timings(ctc: NeMoASREngine) -> None:
    pcm = utterances(3)[2]
    transcript = ctc.transcribe(pcm, 16000, "en")
    assert [w.text for w in transcript.words] == transcript.text.split()
    assert all(0.0 <= w.start <= w.end <= len(pcm) / 16000 + 0.08 for w in transcript.words)


def test_offline_checkpoints_stream_by_redecoding_and_finalize_equals_batch_decode(ctc: NeMoASREngine) -> None:
    assert ctc.supports_streaming and ctc.streaming_mode == "buffered"
    pcm = np.concatenate(utterances(3))
    assert isinstance(ctc.open_stream("en"), RedecodingASRStream)

    final, partials = stream_through(ctc, pcm)

    batch = ctc.transcribe(pcm, 16000, "en")
    assert final.text == batch.text and final.words == batch.words
    assert len(partials) == len(pcm) // (15 * CHUNK) and all(isinstance(p, str) for p in partials)


@pytest.mark.parametrize("decoder", ["rnnt", "ctc"])
def test_cache_aware_stream_equals_nemo_simulated_streaming(tiny_nemo: dict[str, Path], decoder: str) -> None:
    # NeMo's conformer_stream_step cannot merge hypotheses carrying word timestamps, so
    # the reference runs on an engine without them.
    engine = NeMoASREngine(
        model=str(tiny_nemo["hybrid_streaming"]), decoder=decoder, word_timestamps=False, batch_window_ms=0
    )
    engine.load()
    try:
        assert engine.streaming_mode == "cache_aware"
        # A blip shorter than one chunk, lengths between chunk boundaries, several chunks.
        for pcm in [utterances(1)[0][:1600], *utterances(3)]:
            final, _ = stream_through(engine, pcm)
            assert final.text == nemo_simulated_streaming(engine._model, pcm)  # noqa: SLF001
            assert final.extra["streaming"] == "cache_aware"
    finally:
        engine.close()


@pytest.fixture(scope="module")
def streaming_ctc(tiny_nemo: dict[str, Path]) -> Iterator[NeMoASREngine]:
    """The cache-aware checkpoint with its CTC decoder (which gives several words)."""
    engine = NeMoASREngine(model=str(tiny_nemo["hybrid_streaming"]), decoder="ctc", batch_window_ms=0)
    engine.load()
    yield engine
    engine.close()


def test_cache_aware_partials_grow_and_finalize_can_resume(streaming_ctc: NeMoASREngine) -> None:
    first, second = utterances(3)[1], utterances(3)[2]
    whole, partials = stream_through(streaming_ctc, np.concatenate([first, second]))
    assert partials and partials[-1]
    assert len(partials[-1]) >= len(partials[0])

    with streaming_ctc.open_stream("en") as stream:
        for start in range(0, len(first), CHUNK):
            stream.feed(first[start : start + CHUNK])
        early = stream.finalize()
        assert stream.partial() == early
        for start in range(0, len(second), CHUNK):
            stream.feed(second[start : start + CHUNK])
        later = stream.finalize()

    assert early.text == stream_through(streaming_ctc, first)[0].text
    # Finalizing ran on a copy of the state: the stream went on as if never finalized.
    assert later.text == whole.text and later.words == whole.words


def test_cache_aware_cut_drops_the_earlier_words(streaming_ctc: NeMoASREngine) -> None:
    pcm = np.concatenate(utterances(3))
    with streaming_ctc.open_stream("en") as stream:
        stream.feed(pcm)
        words = stream.finalize().words
        assert len(words) >= 2
        at = words[len(words) // 2].start
        stream.cut(at)
        after = stream.finalize()
        stream.feed(utterances(1)[0])
        more = stream.finalize()

    assert after.words == [w for w in words if w.start >= at]
    assert after.text == " ".join(w.text for w in after.words)
    assert more.words[: len(after.words)] == after.words or not after.words
    assert all(w.start >= at for w in more.words)


def test_cache_aware_streams_of_several_speakers_share_forward_passes(tiny_nemo: dict[str, Path]) -> None:
    # The default decoder (RNN-T) with word timestamps on, as in production.
    engine = NeMoASREngine(model=str(tiny_nemo["hybrid_streaming"]), batch_window_ms=50)
    engine.load()
    try:
        clips = utterances(3)
        sequential = [stream_through(engine, pcm)[0].text for pcm in clips]
        engine._batcher.batch_sizes.clear()  # type: ignore[union-attr]  # noqa: SLF001
        start = threading.Barrier(3)

        def speak(pcm: np.ndarray) -> str:
            start.wait()
            return stream_through(engine, pcm)[0].text

        with ThreadPoolExecutor(max_workers=3) as pool:
            concurrent = list(pool.map(speak, clips))
        sizes = list(engine._batcher.batch_sizes)  # type: ignore[union-attr]  # noqa: SLF001
    finally:
        engine.close()

    assert concurrent == sequential
    assert max(sizes) > 1


def test_streaming_mode_can_be_chosen(tiny_nemo: dict[str, Path]) -> None:
    buffered = NeMoASREngine(model=str(tiny_nemo["hybrid_streaming"]), streaming="buffered", batch_window_ms=0)
    try:
        assert isinstance(buffered.open_stream("en"), RedecodingASRStream)
        assert buffered.streaming_mode == "buffered"
    finally:
        buffered.close()
    with pytest.raises(EngineUnavailableError, match="cannot stream cache-aware"):
        NeMoASREngine(model=str(tiny_nemo["ctc"]), streaming="cache_aware").load()
    with pytest.raises(ValueError, match="streaming"):
        NeMoASREngine(model=str(tiny_nemo["ctc"]), streaming="sometimes")


def test_gpu_options_are_a_logged_no_op_on_the_cpu(tiny_nemo: dict[str, Path]) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    engine = NeMoASREngine(
        model=str(tiny_nemo["tdt"]), device="cpu", dtype="bfloat16", cuda_graphs=True,
        batch_window_ms=0, warmup_seconds=[0.5, 1.0], warmup_batches=[1, 2],
    )
    try:
        engine.load()
        engine.warmup()
        assert engine.cuda_graphs is False and engine.decoder_type == "tdt"
        assert isinstance(engine.transcribe(utterances(1)[0], 16000, "en"), Transcript)
        # Two lengths × two batch sizes warmed: batches of 1 and 2 went through the model.
        assert sorted(set(engine._batcher.batch_sizes)) == [1, 2]
    finally:
        logger.remove(sink)
        engine.close()
    assert any("apply on CUDA only" in line for line in lines)
