"""The offline profile beyond English → Spanish: Apertium pivots and espeak-ng voices.

``polyvox translate IN --from auto --to fr --profile offline`` on real recorded English
(librivox): silero → pocketsphinx (which cannot identify languages, so ``auto`` falls
back to English) → Apertium English → Spanish → French → espeak-ng French.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.audio import load_audio, rms_dbfs, write_wav
from pipeline.engines.mt.apertium import ApertiumMTEngine
from pipeline.engines.tts.espeak import EspeakTTSEngine
from pipeline.languages import LanguageSupport
from tests.conftest import concat_with_silence

MODES = Path("/usr/share/apertium/modes")
needs_pairs = pytest.mark.skipif(
    not all((MODES / f"{mode}.mode").exists() for mode in ("eng-spa", "es-fr", "eng-cat", "spa-cat")),
    reason="the offline Apertium pairs are not installed (.ci/run installs them)",
)


class _English:
    """What PocketSphinx recognises (its engine class would start decoder processes)."""

    languages = frozenset({"en"})


@needs_pairs
def test_english_speech_is_heard_in_every_language_apertium_reaches_and_espeak_speaks():
    mt, tts = ApertiumMTEngine(), EspeakTTSEngine()
    mt.load()
    tts.load()
    try:
        support = LanguageSupport.from_engines(_English(), mt, tts)
        heard = set(support.hearable(["en"]))
        assert {"en", "es", "ca", "fr", "it", "pt"} <= heard
        # Every language Apertium reaches from English has an espeak-ng voice but Galician.
        reached = {t for s, t in mt.pairs() if s == "en"}
        assert reached - heard == ({"gl"} & reached)
        assert ("en", "fr") in support.translate and ("en", "fr") not in set(mt._discover())
    finally:
        mt.close()
        tts.close()


@pytest.mark.slow
@needs_pairs
def test_auto_to_french_through_the_pivot_on_recorded_speech(tmp_path, librivox, monkeypatch, capsys):
    from bot.cli import main

    clips = librivox[:2]
    source = tmp_path / "talk.wav"
    write_wav(source, concat_with_silence([c.pcm for c in clips]), 16000)
    out, captions = tmp_path / "talk.fr.wav", tmp_path / "talk.fr.json"
    status = main([
        "translate", str(source), "--from", "auto", "--to", "fr", "--profile", "offline",
        "-o", str(out), "--captions", str(captions), "-q",
    ])
    assert status == 0, capsys.readouterr().err

    document = json.loads(captions.read_text())
    utterances = document["utterances"]
    assert len(utterances) == len(clips), [u["transcript"] for u in utterances]
    mt = ApertiumMTEngine()
    try:
        for utterance in utterances:
            # PocketSphinx cannot identify languages: 'auto' fell back to English.
            assert utterance["language"] == "en"
            french = utterance["translations"]["fr"]
            assert french.strip()
            # Apertium's English → Spanish → French, not some other route.
            (spanish,) = mt.translate([utterance["transcript"]], "en", "es")
            assert french == mt.translate([spanish], "es", "fr")[0]
            assert utterance["output"] is not None
    finally:
        mt.close()
    assert document["dropped"] == []
    speech = load_audio(out, sample_rate=16000)
    assert rms_dbfs(speech) > -35
    assert len(speech) / 16000 > 0.4 * sum(c.seconds for c in clips)
