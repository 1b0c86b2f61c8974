"""Specification of the Whisper ASR engine, on a tiny random Whisper converted by CTranslate2.

The checkpoint (``tests/tiny_whisper.build_tiny_whisper``) is a transformers Whisper with
random weights, saved and converted with CTranslate2's ``TransformersConverter`` exactly
as faster-whisper's published models are; the engine loads the folder by path through
its real loading code with the hub off. Random weights make the words and the language
arbitrary, so what is checked is the contract: transcripts in the hinted language,
batching, a probability distribution over the registry's languages, errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("transformers")

from pipeline.engines.asr.whisper import WhisperASREngine, whisper_repository  # noqa: E402
from pipeline.engines.base import ASREngine, Transcript  # noqa: E402
from pipeline.engines.registry import engine_class  # noqa: E402
from pipeline.errors import (  # noqa: E402
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.languages import family_codes, known_codes  # noqa: E402
from pipeline.models import ModelMissingError  # noqa: E402
from tests.tiny_models import shared_checkpoint  # noqa: E402
from tests.tiny_whisper import build_tiny_whisper  # noqa: E402


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_checkpoint(tmp_path_factory.getbasetemp(), "whisper", build_tiny_whisper)


@pytest.fixture(scope="module")
def whisper(tiny_whisper: Path) -> Iterator[WhisperASREngine]:
    engine = WhisperASREngine(model=str(tiny_whisper), beam_size=1, batch_window_ms=0)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return (wave * 32767).astype(np.int16)


def test_is_an_asr_engine_registered_as_whisper() -> None:
    assert issubclass(WhisperASREngine, ASREngine)
    assert engine_class("asr", "whisper") is WhisperASREngine
    assert WhisperASREngine.detects_language


def test_model_sizes_name_their_hub_repositories() -> None:
    assert whisper_repository("large-v3-turbo") == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
    assert whisper_repository("small") == "Systran/faster-whisper-small"
    assert whisper_repository("org/my-whisper-ct2") == "org/my-whisper-ct2"
    assert WhisperASREngine.hub_repository("turbo") == whisper_repository("large-v3-turbo")


def test_loads_a_converted_folder_by_path(whisper: WhisperASREngine) -> None:
    assert whisper.device == "cpu" and whisper.compute_type == "int8"
    assert whisper.multilingual and whisper.detects_language
    # Whisper's languages, as the registry names them (jw → jv, no → nb).
    assert whisper.languages == frozenset(family_codes("whisper"))
    assert {"jv", "nb", "yue"} <= whisper.languages
    # Every XTTS v2 language can be recognised.
    assert set(family_codes("xtts")) <= whisper.languages


def test_transcribes_in_the_hinted_language(whisper: WhisperASREngine) -> None:
    transcript = whisper.transcribe(speechlike(1.5), 16000, "es-MX")
    assert isinstance(transcript, Transcript)
    assert transcript.language == "es"
    assert isinstance(transcript.text, str) and transcript.punctuated
    assert transcript.confidence is not None and 0.0 <= transcript.confidence <= 1.0
    assert transcript.extra["model"] == whisper.model_name


def test_a_batch_of_languages_is_one_decoding_call(whisper: WhisperASREngine) -> None:
    items = [(speechlike(0.8 + 0.4 * i, seed=i), 16000, lang) for i, lang in enumerate(["en", "ja", "fr"])]
    before = len(whisper._batcher.batch_sizes)  # type: ignore[union-attr]
    batch = whisper.transcribe_batch(items)
    assert [t.language for t in batch] == ["en", "ja", "fr"]
    assert list(whisper._batcher.batch_sizes)[before:] == [3]  # type: ignore[union-attr]
    assert all(isinstance(t.text, str) and t.extra["batch_size"] == 3 for t in batch)
    # Greedy decoding is deterministic.
    assert [t.text for t in whisper.transcribe_batch(items)] == [t.text for t in batch]


def test_concurrent_callers_share_batches(tiny_whisper: Path) -> None:
    engine = WhisperASREngine(model=str(tiny_whisper), beam_size=1, batch_window_ms=300)
    engine.load()
    try:
        results: list[Transcript] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(engine.transcribe(speechlike(1.0, i), 16000, "de")))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4 and {t.language for t in results} == {"de"}
        assert max(engine._batcher.batch_sizes) > 1  # type: ignore[union-attr]
    finally:
        engine.close()


def test_identifies_the_language_as_a_distribution(whisper: WhisperASREngine) -> None:
    ranking = whisper.detect_language(speechlike(2.0), 16000)
    codes = [code for code, _ in ranking]
    probabilities = [p for _, p in ranking]
    assert set(codes) == whisper.languages and set(codes) <= set(known_codes())
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)


def test_an_unknown_language_is_refused(whisper: WhisperASREngine) -> None:
    with pytest.raises(UnsupportedLanguageError, match="does not transcribe 'tlh'"):
        whisper.transcribe(speechlike(1.0), 16000, "tlh")


def test_bad_audio_is_not_retryable(whisper: WhisperASREngine) -> None:
    with pytest.raises(EngineError) as info:
        whisper.transcribe(speechlike(1.0), 8000, "en")
    assert not info.value.retryable
    with pytest.raises(EngineError):
        whisper.detect_language(np.zeros((2, 100), dtype=np.int16), 16000)


def test_very_short_audio_gives_an_empty_transcript(whisper: WhisperASREngine) -> None:
    assert whisper.transcribe(np.zeros(800, dtype=np.int16), 16000, "en").text == ""


def test_languages_option_narrows_the_model(tiny_whisper: Path) -> None:
    engine = WhisperASREngine(model=str(tiny_whisper), languages=["ja", "ko"], beam_size=1)
    try:
        engine.load()
        assert engine.languages == {"ja", "ko"}
        assert engine.transcribe(speechlike(1.0), 16000, "ja").language == "ja"
        with pytest.raises(UnsupportedLanguageError):
            engine.transcribe(speechlike(1.0), 16000, "en")
        # Identification still ranks every language the model tells apart.
        assert len(engine.detect_language(speechlike(1.0), 16000)) == len(family_codes("whisper"))
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="does not transcribe tlh"):
        WhisperASREngine(model=str(tiny_whisper), languages=["tlh"]).load()


def test_a_folder_that_is_not_ctranslate2_says_how_to_convert(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EngineUnavailableError, match="ct2-transformers-converter"):
        WhisperASREngine(model=str(tmp_path)).load()


def test_an_uncached_hub_model_offline_names_the_repository_and_the_pull_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelMissingError) as info:
        WhisperASREngine(model="large-v3-turbo").load()
    message = str(info.value)
    assert "mobiuslabsgmbh/faster-whisper-large-v3-turbo" in message
    assert "polyvox models pull" in message and "\n" not in message


async def test_language_identification_processor_with_the_tiny_whisper(whisper: WhisperASREngine) -> None:
    """The processor asks the real engine; random weights are never confident, so the
    utterance keeps the fallback until a detection is (a configured threshold of 0
    accepts the model's best guess, which must then be one of its languages)."""
    from pipecat.tests.utils import run_test

    from pipeline.frames import Utterance, UtteranceAudioFrame
    from pipeline.processors.language_id import LanguageIDParams, LanguageIDProcessor
    from pipeline.room import Room

    def frame() -> UtteranceAudioFrame:
        return UtteranceAudioFrame(Utterance("alice", "auto", 0.0, 1.5), speechlike(1.5).tobytes(), 16000)

    room = Room(["en"], default_language="auto")
    strict = LanguageIDProcessor(whisper, room, LanguageIDParams(fallback="de"))
    down, _ = await run_test(strict, frames_to_send=[frame()])
    (out,) = [f for f in down if isinstance(f, UtteranceAudioFrame)]
    assert out.utterance.language == "de"
    assert out.utterance.compute["lid"] > 0

    room = Room(["en"], default_language="auto")
    eager = LanguageIDProcessor(whisper, room, LanguageIDParams(threshold=1e-6, settle_probability=1e-6))
    down, _ = await run_test(eager, frames_to_send=[frame()])
    (out,) = [f for f in down if isinstance(f, UtteranceAudioFrame)]
    best = whisper.detect_language(speechlike(1.5), 16000)[0][0]
    assert out.utterance.language == best
    assert room.participants["alice"].language == best and eager.settled_language("alice") == best
