"""End to end: ``polyvox translate --profile gpu`` with every model set to a local path.

NeMo ASR (plus Whisper for the languages the profile routes to it), NLLB and XTTS run
from tiny random checkpoints written by the tests, loaded through the engines' real
loaders by path, with the hub switched off: this is what an air-gapped machine with
``--set asr.model=... --set asr.routes.ja=whisper:... --set mt.model=...
--set tts.model=...`` does. Random weights make the words and the voice arbitrary; what
is checked is that every stage ran for every utterance and the outputs are well formed,
with the speaker's language identified (``--from auto``: random Whisper is never sure,
so the fallback, English, is used), and Spanish set explicitly into English: the
profile's default configuration both ways.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nemo.collections.asr")
pytest.importorskip("transformers")
pytest.importorskip("TTS.tts.models.xtts")

from pipeline.audio import load_audio  # noqa: E402
from tests.tiny_models import build_tiny_nemo_asr, build_tiny_nllb, shared_checkpoint  # noqa: E402
from tests.tiny_whisper import build_tiny_whisper  # noqa: E402

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tiny_xtts = pytest.importorskip("tests.tiny_xtts")
    base = tmp_path_factory.getbasetemp()
    return {
        "asr": shared_checkpoint(base, "nemo-ctc", lambda f: build_tiny_nemo_asr(f, "ctc")),
        "whisper": shared_checkpoint(base, "whisper", build_tiny_whisper),
        "mt": shared_checkpoint(base, "nllb", lambda f: build_tiny_nllb(f / "tiny-nllb")),
        "tts": shared_checkpoint(
            base, "xtts", lambda f: tiny_xtts.write_tiny_xtts(f / "tiny", speakers=["Tiny Speaker"])
        ),
    }


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two flite sentences with a pause between them, as one recording."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt install flite)")
    folder = tmp_path_factory.mktemp("speech")
    parts = []
    for voice, text in (("slt", "the weather is very good today"), ("rms", "where is the train station")):
        path = folder / f"{voice}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        parts.append(load_audio(path))
    gap = np.zeros(16000 * 2, dtype=np.int16)
    audio = np.concatenate([gap[:8000], parts[0], gap, parts[1], gap])
    out = folder / "talk.wav"
    from pipeline.audio import write_wav

    write_wav(out, audio, 16000)
    return out


@pytest.mark.parametrize(("source", "target"), [("auto", "es"), ("es", "en")])
def test_translate_with_the_gpu_profile_from_local_checkpoints(
    source: str,
    target: str,
    tmp_path: Path,
    checkpoints: dict[str, Path],
    two_sentences: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bot.cli import main
    from bot.config import load_settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, captions = tmp_path / f"talk.{target}.wav", tmp_path / f"talk.{target}.json"
    # Every route of the profile (Whisper for the languages Parakeet lacks), by path.
    routes = [
        f"asr.routes.{language}=whisper:{checkpoints['whisper']}"
        for language in load_settings(profile="gpu").asr.routes
    ]
    status = main([
        "translate", str(two_sentences), "--from", source, "--to", target,
        "-o", str(out), "--captions", str(captions),
        "--profile", "gpu",
        "--set", f"asr.model={checkpoints['asr']}",
        # Parakeet v3 knows its 25 languages by name; the tiny file's name says none.
        "--set", "asr.options.languages=[en, es]",
        *(part for route in routes for part in ("--set", route)),
        "--set", f"mt.model={checkpoints['mt']}",
        "--set", f"tts.model={checkpoints['tts']}",
        # deepfilternet is a separate extra; the denoiser is not what this test is about.
        "--set", "denoise.engine=rnnoise",
        "-q",
    ])
    assert status == 0, capsys.readouterr().err

    document = json.loads(captions.read_text())
    utterances = document["utterances"]
    assert len(utterances) == 2
    for utterance in utterances:
        assert utterance["language"] == ("en" if source == "auto" else source)
        assert isinstance(utterance["transcript"], str) and utterance["transcript"]
        assert isinstance(utterance["translations"][target], str)
        assert utterance["output"] is not None
    assert document["dropped"] == []
    speech = load_audio(out)
    assert len(speech) > 0
