"""Per-language ASR routes: ``RoutedASREngine`` and ``asr.routes`` in the configuration.

Fake engines check the routing itself (which model gets which utterance, one load per
model, batches split per model); tiny random NeMo checkpoints check it through the real
loader and the configuration: a Spanish utterance goes to the Spanish route's model and
an English one to the default model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.app import create_asr_engine
from bot.config import load_settings
from pipeline.engines.asr.routed import RoutedASREngine
from pipeline.engines.base import ASREngine, Transcript
from pipeline.errors import ConfigError, UnsupportedLanguageError
from pipeline.models import configured_models
from tests.fakes import ToneASREngine, ToneLanguageASREngine, tone


class LabelASREngine(ASREngine):
    """Transcribes anything as its own label; counts what it is asked to do."""

    name = "label"

    def __init__(self, label: str, languages: set[str]) -> None:
        self.label = label
        self.languages = frozenset(languages)  # type: ignore[misc]
        self.batches: list[list[str]] = []
        self.calls = {"load": 0, "warmup": 0, "close": 0}

    def load(self) -> None:
        self.calls["load"] += 1

    def warmup(self) -> None:
        self.calls["warmup"] += 1

    def close(self) -> None:
        self.calls["close"] += 1

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        return self.transcribe_batch([(pcm, sample_rate, language)])[0]

    def transcribe_batch(self, items: list[tuple[np.ndarray, int, str]]) -> list[Transcript]:
        if any(lang not in self.languages for _, _, lang in items):
            raise UnsupportedLanguageError("not mine")
        self.batches.append([lang for _, _, lang in items])
        return [Transcript(f"{self.label} {lang}", lang) for _, _, lang in items]


PCM = tone(440, 0.5)


def routed() -> tuple[RoutedASREngine, LabelASREngine, LabelASREngine, LabelASREngine]:
    default = LabelASREngine("parakeet", {"en", "es", "fr", "de"})
    spanish = LabelASREngine("stt_es", {"es"})
    whisper = LabelASREngine("whisper", {"en", "es", "ja", "ko", "zh"})
    return RoutedASREngine(default, {"es": spanish, "ja": whisper, "ko": whisper}), default, spanish, whisper


def test_each_language_goes_to_its_route_and_the_rest_to_the_default():
    engine, _, _, _ = routed()
    assert engine.transcribe(PCM, 16000, "es-MX").text == "stt_es es"
    assert engine.transcribe(PCM, 16000, "ja").text == "whisper ja"
    assert engine.transcribe(PCM, 16000, "en").text == "parakeet en"
    assert engine.transcribe(PCM, 16000, "es").extra["route"] == "es"
    assert engine.transcribe(PCM, 16000, "de").extra["route"] == "default"


def test_languages_are_the_union_of_the_default_and_the_routes():
    engine, _, _, _ = routed()
    assert engine.languages == {"en", "es", "fr", "de", "ja", "ko"}
    # Whisper knows Chinese, but no route sends Chinese to it.
    with pytest.raises(UnsupportedLanguageError, match="asr.routes"):
        engine.transcribe(PCM, 16000, "zh")


def test_a_batch_is_split_per_model_and_keeps_its_order():
    engine, default, spanish, whisper = routed()
    langs = ["en", "ja", "es", "ko", "fr", "ja"]
    out = engine.transcribe_batch([(PCM, 16000, lang) for lang in langs])
    assert [t.language for t in out] == langs
    assert [t.text.split()[0] for t in out] == ["parakeet", "whisper", "stt_es", "whisper", "parakeet", "whisper"]
    # One batch per model, each with its utterances.
    assert default.batches == [["en", "fr"]]
    assert whisper.batches == [["ja", "ko", "ja"]]
    assert spanish.batches == [["es"]]


def test_a_model_shared_by_routes_is_loaded_warmed_and_closed_once():
    engine, default, spanish, whisper = routed()
    assert engine.engines() == [default, spanish, whisper]  # default, then by route language
    engine.load()
    engine.warmup()
    engine.close()
    for model in (default, spanish, whisper):
        assert model.calls == {"load": 1, "warmup": 1, "close": 1}


def test_a_route_whose_model_lacks_its_language_fails_at_load():
    default = LabelASREngine("parakeet", {"en"})
    engine = RoutedASREngine(default, {"ja": LabelASREngine("stt_es", {"es"})})
    with pytest.raises(UnsupportedLanguageError, match=r"asr.routes.ja: 'label' does not transcribe 'ja'"):
        engine.load()


def test_identification_uses_the_first_model_that_can():
    default = ToneASREngine()
    detector = ToneLanguageASREngine({440: ("ja", 0.9)})
    engine = RoutedASREngine(default, {"ja": detector})
    assert engine.detects_language
    assert engine.detect_language(PCM, 16000)[0] == ("ja", 0.9)
    assert detector.detections == [440]
    plain = RoutedASREngine(default, {"fr": ToneASREngine()})
    assert not plain.detects_language
    with pytest.raises(NotImplementedError):
        plain.detect_language(PCM, 16000)


# -- configuration --------------------------------------------------------------------


def test_routes_parse_from_strings_and_mappings():
    settings = load_settings(
        profile="offline",
        overrides=[
            "asr.engine=nemo",
            "asr.routes.es=nvidia/stt_es_fastconformer_hybrid_large_pc",
            "asr.routes.JA=whisper:large-v3-turbo",
            "asr.routes.ko={engine: whisper, model: small, options: {beam_size: 1}}",
            "asr.device=cpu",
        ],
    )
    routes = settings.asr.routes
    assert sorted(routes) == ["es", "ja", "ko"]
    assert (routes["es"].engine, routes["es"].model) == ("nemo", "nvidia/stt_es_fastconformer_hybrid_large_pc")
    assert (routes["ja"].engine, routes["ja"].model) == ("whisper", "large-v3-turbo")
    assert routes["ko"].options == {"beam_size": 1}
    assert {route.device for route in routes.values()} == {"cpu"}  # the section's device


def test_a_null_route_is_no_route():
    settings = load_settings(profile="gpu", overrides=["asr.routes.ja=null", "asr.routes.zh=null"])
    assert sorted(settings.asr.routes) == ["ar", "hi", "ko", "tr"]
    assert load_settings(profile="gpu", overrides=["asr.routes=null"]).asr.routes == {}


def test_the_shipped_profiles_route_the_languages_parakeet_lacks_to_whisper():
    for profile, size in (("gpu", "large-v3-turbo"), ("cpu", "small")):
        settings = load_settings(profile=profile)
        assert settings.asr.model == "nvidia/parakeet-tdt-0.6b-v3"
        assert {lang: (r.engine, r.model) for lang, r in settings.asr.routes.items()} == {
            lang: ("whisper", size) for lang in ("ar", "hi", "ja", "ko", "tr", "zh")
        }


def test_models_pull_fetches_each_route_model_once_by_its_repository():
    models = configured_models(load_settings(profile="gpu"))
    assert models[:2] == [
        ("asr", "nvidia/parakeet-tdt-0.6b-v3"),
        ("asr", "mobiuslabsgmbh/faster-whisper-large-v3-turbo"),
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("asr.routes.xx=whisper:small", "asr: routes.xx: 'xx' is not an ISO 639-1 language code"),
        ("asr.routes=[es]", "asr: routes: expected a mapping"),
        ("asr.routes.es=", "asr: routes.es: empty model"),
    ],
)
def test_bad_routes_are_one_line_naming_the_route(override: str, message: str):
    with pytest.raises(ConfigError) as info:
        load_settings(profile="gpu", overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_equal_route_models_share_one_engine_and_the_default_is_reused():
    settings = load_settings(
        profile="offline",
        overrides=[
            "asr.engine=nemo",
            "asr.model=/models/parakeet.nemo",
            "asr.routes.fr=/models/parakeet.nemo",
            "asr.routes.es=/models/es.nemo",
            "asr.routes.ja=whisper:small",
            "asr.routes.ko=whisper:small",
        ],
    )
    engine = create_asr_engine(settings.asr)  # built, not loaded
    assert isinstance(engine, RoutedASREngine)
    assert engine.routes["fr"] is engine.default
    assert engine.routes["ja"] is engine.routes["ko"]
    assert engine.routes["es"] is not engine.default
    assert len(engine.engines()) == 3


def test_an_unknown_option_in_a_route_names_the_route():
    settings = load_settings(profile="gpu", overrides=["asr.routes.ja={engine: whisper, model: small, options: {nope: 1}}"])
    with pytest.raises(ConfigError, match=r"^asr.routes.ja: asr: engine 'whisper' has no option 'nope'"):
        create_asr_engine(settings.asr)


# -- tiny NeMo models through the real loader ----------------------------------------


def test_spanish_goes_to_the_spanish_model_and_english_to_the_default(tmp_path_factory):
    pytest.importorskip("nemo.collections.asr")
    from tests.tiny_models import build_tiny_nemo_asr, shared_checkpoint

    base = tmp_path_factory.getbasetemp()
    default_model = shared_checkpoint(base, "nemo-ctc", lambda f: build_tiny_nemo_asr(f, "ctc"))
    spanish_model = shared_checkpoint(base, "nemo-hybrid", lambda f: build_tiny_nemo_asr(f, "hybrid"))
    settings = load_settings(
        profile="offline",
        overrides=[
            "asr.engine=nemo",
            f"asr.model={default_model}",
            f"asr.routes.es={{model: {spanish_model}, options: {{languages: [es], batch_window_ms: 0}}}}",
            "asr.options.batch_window_ms=0",
        ],
    )
    engine = create_asr_engine(settings.asr)
    engine.load()
    try:
        assert engine.languages == {"en", "es"}
        rng = np.random.default_rng(3)
        speech = (0.2 * rng.standard_normal(16000)).astype(np.float32)
        spanish = engine.transcribe(speech, 16000, "es")
        english = engine.transcribe(speech, 16000, "en")
        assert (spanish.language, spanish.extra["route"], spanish.extra["model"]) == ("es", "es", str(spanish_model))
        assert (english.language, english.extra["route"], english.extra["model"]) == ("en", "default", str(default_model))
        # A mixed batch: each model decodes its own utterances in one pass.
        batch = engine.transcribe_batch([(speech, 16000, "es"), (speech, 16000, "en"), (speech, 16000, "es")])
        assert [t.extra["model"] for t in batch] == [str(spanish_model), str(default_model), str(spanish_model)]
        assert [t.extra["batch_size"] for t in batch] == [2, 1, 2]
    finally:
        engine.close()


def test_route_languages_reach_the_cascade_checks():
    from tests.fakes import fake_engines

    engine, _, _, _ = routed()
    engines = fake_engines(asr=engine)
    assert engines.languages.can_recognise("ja") and not engines.languages.can_recognise("zh")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
