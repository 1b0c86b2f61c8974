"""Specification of the NeMo ASR engine, on tiny random FastConformer checkpoints.

The checkpoints (``tests/tiny_models.build_tiny_nemo_asr``) are real NeMo models
(CTC, hybrid RNN-T/CTC, TDT) with a sentencepiece tokenizer, saved with ``save_to`` as
``.nemo`` files; the engine restores them by path through its real loading code.
Random weights make the words arbitrary, so what is checked is shape, determinism,
batching, decoders, languages and errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nemo.collections.asr")

from pipeline.engines.asr.nemo import NeMoASREngine  # noqa: E402
from pipeline.engines.base import ASREngine, Transcript  # noqa: E402
from pipeline.errors import EngineError, UnsupportedLanguageError  # noqa: E402
from tests.tiny_models import build_tiny_nemo_asr, shared_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_nemo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.getbasetemp()
    return {
        name: shared_checkpoint(
            base, f"nemo-{name}",
            lambda folder, kind=kind, pnc=pnc: build_tiny_nemo_asr(folder, kind, punctuated=pnc),
        )
        for name, kind, pnc in (
            ("ctc", "ctc", False), ("hybrid", "hybrid", False), ("tdt", "tdt", False),
            ("ctc_pnc", "ctc", True),
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
