"""Specification of the NLLB-200 engine, run on a tiny random NLLB checkpoint loaded by path.

These run the ``transformers`` backend, whose model calls can be watched with hooks; the
``ctranslate2`` backend (the default) is held to the same outputs in
``test_mt_ctranslate2.py``.

The checkpoint (``tests/tiny_models.build_tiny_nllb``) is saved exactly like the hub's:
an ``M2M100ForConditionalGeneration`` and an ``NllbTokenizer`` whose language codes are
special tokens. Its weights are random, so the words it produces are arbitrary; what is
checked is what reaches the model (language tokens, output budget, batches).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pipeline.engines.base import MTEngine  # noqa: E402
from pipeline.engines.mt.nllb import NLLB_CODES, NLLBMTEngine, nllb_code  # noqa: E402
from pipeline.errors import UnsupportedLanguageError  # noqa: E402
from tests.tiny_models import build_tiny_nllb, shared_checkpoint  # noqa: E402

EOS = 2


@pytest.fixture(scope="session")
def tiny_nllb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_checkpoint(
        tmp_path_factory.getbasetemp(), "nllb", lambda folder: build_tiny_nllb(folder / "tiny-nllb")
    )


@pytest.fixture(scope="module")
def engine(tiny_nllb: Path) -> Iterator[NLLBMTEngine]:
    engine = NLLBMTEngine(model=str(tiny_nllb), backend="transformers", batch_window_ms=0)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def endless(tiny_nllb: Path) -> Iterator[NLLBMTEngine]:
    """The same model with </s> suppressed, so every output runs to its full budget."""
    engine = NLLBMTEngine(
        model=str(tiny_nllb), backend="transformers", batch_window_ms=0, generation={"suppress_tokens": [EOS]}
    )
    engine.load()
    yield engine
    engine.close()


class ModelCalls:
    """Records what the encoder and decoder of a loaded engine's model receive."""

    def __init__(self, engine: NLLBMTEngine) -> None:
        self.encoder_inputs: list[list[list[int]]] = []
        self.decoder_steps: list[list[int]] = []
        model: Any = engine._model  # the loaded transformers model
        self._handles = [
            model.get_encoder().register_forward_pre_hook(self._on_encoder, with_kwargs=True),
            model.get_decoder().register_forward_pre_hook(self._on_decoder, with_kwargs=True),
        ]

    def _on_encoder(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.encoder_inputs.append(kwargs["input_ids"].tolist())

    def _on_decoder(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs["input_ids"]
        self.decoder_steps.append(ids[:, -1].tolist())

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.fixture
def calls(engine: NLLBMTEngine) -> Iterator[ModelCalls]:
    recorder = ModelCalls(engine)
    yield recorder
    recorder.close()


def token_id(engine: NLLBMTEngine, token: str) -> int:
    return engine._tokenizer.convert_tokens_to_ids(token)


def test_is_an_mt_engine_named_nllb() -> None:
    assert issubclass(NLLBMTEngine, MTEngine)
    assert NLLBMTEngine.name == "nllb"


def test_maps_iso_codes_to_nllb_codes() -> None:
    assert len(NLLB_CODES) >= 40
    assert nllb_code("en") == "eng_Latn"
    assert nllb_code("es") == "spa_Latn"
    assert nllb_code("fr") == "fra_Latn"
    assert nllb_code("de") == "deu_Latn"
    assert nllb_code("zh") == "zho_Hans"
    assert nllb_code("zh-TW") == "zho_Hant"
    assert nllb_code("pt_BR") == "por_Latn"
    assert nllb_code("EN") == "eng_Latn"
    assert nllb_code("zho_Hant") == "zho_Hant"
    assert nllb_code("xx") is None


def test_loads_by_path_and_knows_only_the_models_languages(engine: NLLBMTEngine) -> None:
    # The tiny tokenizer has eng/spa/fra/deu only: pairs are limited to those.
    assert set(engine.pairs()) == {
        (s, t) for s in ("de", "en", "es", "fr") for t in ("de", "en", "es", "fr") if s != t
    }
    assert engine.supports("en", "es")
    assert engine.supports("es-MX", "en")
    assert not engine.supports("en", "it")
    assert engine.device == "cpu" and engine.dtype == "float32"


def test_source_token_and_forced_target_token_reach_the_model(engine: NLLBMTEngine, calls: ModelCalls) -> None:
    engine.translate(["the weather is very good today"], "en", "es")
    engine.translate(["el tiempo es muy bueno"], "es", "fr")

    english, spanish = calls.encoder_inputs
    assert english[0][0] == token_id(engine, "eng_Latn")
    assert english[0][-1] == EOS
    assert spanish[0][0] == token_id(engine, "spa_Latn")
    # Each generation starts with </s>, then the forced target language token.
    firsts = [i for i, step in enumerate(calls.decoder_steps) if step == [EOS]]
    assert len(firsts) == 2
    assert calls.decoder_steps[firsts[0] + 1] == [token_id(engine, "spa_Latn")]
    assert calls.decoder_steps[firsts[1] + 1] == [token_id(engine, "fra_Latn")]


def test_translates_a_batch_in_order_and_deterministically(engine: NLLBMTEngine, calls: ModelCalls) -> None:
    texts = ["good morning", "", "where is the train station", "   ", "thank you very much"]
    first = engine.translate(texts, "en", "de")
    assert len(first) == 5
    assert all(isinstance(t, str) for t in first)
    assert first[1] == "" and first[3] == ""
    assert engine.translate(texts, "en", "de") == first
    # The three real texts went through the encoder together, as one batch.
    assert [len(batch) for batch in calls.encoder_inputs] == [3, 3]


def test_output_budget_grows_with_the_input(endless: NLLBMTEngine) -> None:
    recorder = ModelCalls(endless)
    try:
        short = "good morning"
        long = " ".join(["the weather is very good today and tomorrow will be better"] * 12)
        endless.translate([short], "en", "es")
        short_steps = len(recorder.decoder_steps)
        short_tokens = len(recorder.encoder_inputs[0][0])
        endless.translate([long], "en", "es")
        long_steps = len(recorder.decoder_steps) - short_steps
        long_tokens = len(recorder.encoder_inputs[1][0])
    finally:
        recorder.close()

    assert long_tokens > 100
    # Generation runs to exactly the budget (</s> is suppressed): 2 × input + 10.
    assert short_steps == 2 * short_tokens + 10
    assert long_steps == 2 * long_tokens + 10
    assert endless.max_new_tokens(long_tokens) == long_steps
    # Never more than the model's positions allow.
    assert endless.max_new_tokens(10_000) == endless.max_output_tokens


def test_concurrent_calls_share_batches_per_language_pair(tiny_nllb: Path) -> None:
    engine = NLLBMTEngine(model=str(tiny_nllb), backend="transformers", batch_window_ms=200)
    engine.load()
    spa, fra = token_id(engine, "spa_Latn"), token_id(engine, "fra_Latn")
    recorder = ModelCalls(engine)
    results: dict[int, list[str]] = {}
    texts = [f"{'good morning ' * (i + 1)}".strip() for i in range(6)]

    def speak(i: int) -> None:
        target = "es" if i % 2 == 0 else "fr"
        results[i] = engine.translate([texts[i]], "en", target)

    try:
        threads = [threading.Thread(target=speak, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        recorder.close()
        engine.close()

    assert sorted(results) == list(range(6))
    assert all(len(r) == 1 and isinstance(r[0], str) for r in results.values())
    # Six requests, two pairs: fewer model calls than requests, one target per call.
    assert len(recorder.encoder_inputs) < 6
    steps = recorder.decoder_steps
    forced = [steps[i + 1] for i, step in enumerate(steps[:-1]) if step == [EOS] * len(step)]
    assert len(forced) == len(recorder.encoder_inputs)
    assert all(len(set(step)) == 1 and step[0] in (spa, fra) for step in forced)
    assert {step[0] for step in forced} == {spa, fra}


def test_unsupported_language_is_named(engine: NLLBMTEngine) -> None:
    with pytest.raises(UnsupportedLanguageError, match="'xx'"):
        engine.translate(["hello"], "en", "xx")
    # Italian is in the table but not in this model's vocabulary.
    with pytest.raises(UnsupportedLanguageError, match=r"'it' \(ita_Latn\)"):
        engine.translate(["hello"], "it", "en")


def test_a_hub_model_missing_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    from pipeline.models import ModelMissingError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    engine = NLLBMTEngine(model="facebook/nllb-200-distilled-1.3B")
    with pytest.raises(ModelMissingError) as info:
        engine.load()
    assert str(info.value).startswith("mt.model 'facebook/nllb-200-distilled-1.3B' is not downloaded")
    assert "polyvox models pull --profile gpu" in str(info.value)
    assert "\n" not in str(info.value)


def test_text_longer_than_the_input_window_is_split_at_sentences(tmp_path: Path) -> None:
    folder = build_tiny_nllb(tmp_path / "short-window", max_positions=40)
    engine = NLLBMTEngine(model=str(folder), backend="transformers", batch_window_ms=0)
    engine.load()
    recorder = ModelCalls(engine)
    sentence = "The weather is very good today."
    try:
        assert engine.max_input_tokens == 40
        (translation,) = engine.translate([" ".join([sentence] * 12)], "en", "es")
    finally:
        recorder.close()
        engine.close()
    (pieces,) = recorder.encoder_inputs  # one batch holding every piece
    assert len(pieces) > 1
    eng = pieces[0][0]
    for piece in pieces:
        real = [t for t in piece if t != 1]  # without padding
        assert real[0] == eng and real[-1] == EOS and len(real) <= 40
    assert isinstance(translation, str)
