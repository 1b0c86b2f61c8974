"""Shared fixtures: real recorded speech (librivox, from pocketsphinx-testdata) and flite speech."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Tests must never reach the Hugging Face hub: fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")

#: The WebRTC end-to-end tests' `offline` engines and `server` fixtures.
pytest_plugins = ["tests.webrtc_fixtures"]


@dataclass
class Clip:
    """A recording with its reference transcript."""

    path: Path
    text: str
    pcm: np.ndarray  # 16 kHz mono int16

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 16000


def _read_wav(path: Path) -> np.ndarray:
    from pipeline.audio import load_audio

    return load_audio(path)


@pytest.fixture(scope="session")
def librivox() -> list[Clip]:
    """The five librivox utterances with their transcripts (apt pocketsphinx-testdata)."""
    transcription = LIBRIVOX / "transcription"
    if not transcription.exists():
        pytest.fail("pocketsphinx-testdata is not installed (apt install pocketsphinx-testdata)")
    clips = []
    for line in transcription.read_text().splitlines():
        text, _, name = line.rpartition("(")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        path = LIBRIVOX / f"{name.strip(' )')}.wav"
        clips.append(Clip(path, text, _read_wav(path)))
    return clips


@pytest.fixture(scope="session")
def flite_speech(tmp_path_factory) -> list[Clip]:
    """English sentences spoken by three different flite voices (apt flite)."""
    if shutil.which("flite") is None:
        pytest.fail("flite is not installed (apt install flite)")
    folder = tmp_path_factory.mktemp("flite")
    sentences = [
        ("slt", "the weather is very good today"),
        ("rms", "i would like a cup of coffee please"),
        ("awb", "where is the train station"),
    ]
    clips = []
    for voice, text in sentences:
        path = folder / f"{voice}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        clips.append(Clip(path, text, _read_wav(path)))
    return clips


def concat_with_silence(parts: list[np.ndarray], gap_s: float = 1.5, lead_s: float = 0.5) -> np.ndarray:
    """Utterances separated by silence, as one recording."""
    gap = np.zeros(int(gap_s * 16000), dtype=np.int16)
    out = [np.zeros(int(lead_s * 16000), dtype=np.int16)]
    for part in parts:
        out += [part, gap]
    return np.concatenate(out)
