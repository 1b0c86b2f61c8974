"""The NLLB engine's CTranslate2 backend, on the tiny random NLLB checkpoint.

The transformers checkpoint (``tests/tiny_models.build_tiny_nllb``) is converted with
CTranslate2's own converter into a cache folder of the test, exactly as a hub model is
on first use. Converted to float32, its greedy output must be the transformers
backend's, token for token: same language tokens, same output budget, same splitting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ctranslate2")

from loguru import logger  # noqa: E402

from pipeline.engines.mt import nllb as nllb_module  # noqa: E402
from pipeline.engines.mt.nllb import NLLBMTEngine  # noqa: E402
from pipeline.errors import EngineUnavailableError, UnsupportedLanguageError  # noqa: E402
from tests.tiny_models import build_tiny_nllb, shared_checkpoint  # noqa: E402

EOS = 2
TEXTS = [
    "the weather is very good today",
    "where is the train station",
    "thank you very much. my friend speaks spanish and english",
    "hello",
]


@pytest.fixture(scope="session")
def tiny_nllb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_checkpoint(
        tmp_path_factory.getbasetemp(), "nllb", lambda folder: build_tiny_nllb(folder / "tiny-nllb")
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ct2-cache")


def make(model: Path | str, cache: Path, **options) -> NLLBMTEngine:
    options.setdefault("compute_type", "float32")
    options.setdefault("batch_window_ms", 0)
    engine = NLLBMTEngine(model=str(model), backend="ctranslate2", cache_dir=str(cache), **options)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def ct2(tiny_nllb: Path, cache: Path) -> Iterator[NLLBMTEngine]:
    engine = make(tiny_nllb, cache)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf(tiny_nllb: Path) -> Iterator[NLLBMTEngine]:
    engine = NLLBMTEngine(model=str(tiny_nllb), backend="transformers", batch_window_ms=0)
    engine.load()
    yield engine
    engine.close()


class ConversionCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = nllb_module._convert_to_ct2

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(nllb_module, "_convert_to_ct2", counted)


def test_float32_conversion_translates_exactly_like_transformers(ct2, hf) -> None:
    assert ct2.backend == "ctranslate2" and ct2.dtype == "float32" and ct2.device == "cpu"
    for source, target in (("en", "es"), ("es", "fr"), ("en", "de")):
        assert ct2.translate(TEXTS, source, target) == hf.translate(TEXTS, source, target)


def test_output_budget_is_the_same_as_transformers(tiny_nllb, cache) -> None:
    """With </s> suppressed both backends run to the budget: same length, same words."""
    ct2 = make(tiny_nllb, cache, generation={"suppress_tokens": [EOS]})
    hf = NLLBMTEngine(
        model=str(tiny_nllb), backend="transformers", batch_window_ms=0, generation={"suppress_tokens": [EOS]}
    )
    try:
        long_text = " ".join(TEXTS)
        ours = ct2.translate([TEXTS[3], long_text], "en", "es")
        theirs = hf.translate([TEXTS[3], long_text], "en", "es")
        assert ours == theirs
        tokenizer = ct2._tokenizer
        tokenizer.src_lang = "spa_Latn"
        produced = len(tokenizer(ours[1], add_special_tokens=False)["input_ids"])
        tokenizer.src_lang = "eng_Latn"
        budget = ct2.max_new_tokens(len(tokenizer(long_text)["input_ids"]))
        # The budget covers the target language token too; re-tokenizing the decoded
        # text may merge a few pieces, never add any.
        assert 0.8 * (budget - 1) <= produced <= budget - 1
    finally:
        ct2.close()
        hf.close()


def test_int8_on_the_cpu_by_default(tiny_nllb, cache) -> None:
    engine = make(tiny_nllb, cache, compute_type="auto")
    try:
        assert engine.dtype == "int8"
        assert engine.converted_path is not None and engine.converted_path.name.endswith("-int8")
        assert all(isinstance(t, str) for t in engine.translate(TEXTS, "en", "es"))
    finally:
        engine.close()


def test_a_checkpoint_is_converted_once_per_quantization(tiny_nllb, tmp_path, monkeypatch) -> None:
    counter = ConversionCounter(monkeypatch)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        first = make(tiny_nllb, tmp_path)
        second = make(tiny_nllb, tmp_path)
        third = make(tiny_nllb, tmp_path, compute_type="int8")
    finally:
        logger.remove(sink)
    try:
        assert counter.calls == 2  # float32 once, int8 once
        assert first.converted_path == second.converted_path != third.converted_path
        assert first.converted_path.parent == tmp_path / "ctranslate2"
        assert sum("converting mt.model" in line for line in lines) == 2
        assert sum("converted mt.model" in line for line in lines) == 2
    finally:
        for engine in (first, second, third):
            engine.close()


def test_a_failed_conversion_leaves_no_half_written_cache(tiny_nllb, tmp_path, monkeypatch) -> None:
    def broken(source: Path, output: Path, quantization: str) -> None:
        output.mkdir(parents=True)
        (output / "model.bin").write_bytes(b"half a model")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nllb_module, "_convert_to_ct2", broken)
    with pytest.raises(EngineUnavailableError, match="converting mt.model .* failed: disk full"):
        make(tiny_nllb, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []

    monkeypatch.undo()
    engine = make(tiny_nllb, tmp_path)  # the next start converts afresh and works
    try:
        assert engine.translate(["hello"], "en", "es")[0]
    finally:
        engine.close()


def test_a_ready_ctranslate2_folder_is_used_directly(ct2, cache, tmp_path, monkeypatch) -> None:
    counter = ConversionCounter(monkeypatch)
    folder = ct2.converted_path
    assert folder is not None and (folder / "model.bin").is_file()
    direct = make(folder, tmp_path / "unused-cache")
    try:
        assert counter.calls == 0
        assert direct.converted_path == folder
        assert direct.translate(TEXTS, "en", "fr") == ct2.translate(TEXTS, "en", "fr")
    finally:
        direct.close()
    assert not (tmp_path / "unused-cache").exists()


def test_a_ctranslate2_folder_without_tokenizer_says_so(ct2, tmp_path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.bin", "config.json", "shared_vocabulary.json"):
        (bare / name).symlink_to(ct2.converted_path / name)
    with pytest.raises(EngineUnavailableError, match="without tokenizer files"):
        make(bare, tmp_path)


def test_concurrent_speakers_share_one_batch(tiny_nllb, cache, ct2) -> None:
    # The batch fills at 4 texts, so the window only matters if a thread is late.
    engine = make(tiny_nllb, cache, batch_window_ms=2000, max_batch=len(TEXTS))
    # A batch shares the budget of its longest text (random weights never stop early),
    # so the reference is the same four texts translated in one call.
    expected = dict(enumerate(ct2.translate(TEXTS, "en", "es")))
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(TEXTS))

    def speak(i: int) -> None:
        barrier.wait()
        results[i] = engine.translate([TEXTS[i]], "en", "es")[0]

    try:
        engine._batcher.batch_sizes.clear()
        threads = [threading.Thread(target=speak, args=(i,)) for i in range(len(TEXTS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        sizes = list(engine._batcher.batch_sizes)
    finally:
        engine.close()
    assert sizes == [len(TEXTS)]
    assert results == expected


def test_unsupported_pairs_are_clear_errors(ct2) -> None:
    with pytest.raises(UnsupportedLanguageError, match="'xx'"):
        ct2.translate(["hello"], "en", "xx")
    with pytest.raises(UnsupportedLanguageError, match=r"'it' \(ita_Latn\)"):
        ct2.translate(["hello"], "it", "en")
    assert not ct2.supports("en", "it") and ct2.supports("en", "de")


def test_options_the_backend_cannot_honour_are_refused() -> None:
    with pytest.raises(ValueError, match="does not take generation option"):
        NLLBMTEngine(backend="ctranslate2", generation={"top_k": 5})
    with pytest.raises(ValueError, match="compute_type"):
        NLLBMTEngine(backend="ctranslate2", compute_type="int4")
    with pytest.raises(ValueError, match="backend"):
        NLLBMTEngine(backend="onnx")
