"""``polyvox doctor``: what this machine lacks for a profile, and how to fix it."""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys

import pytest
from loguru import logger

from bot.cli import main
from bot.config import load_settings
from bot.doctor import check_models, doctor_command


@pytest.fixture(autouse=True)
def loguru_restored():
    """``main`` points loguru at the stderr of the moment (the test's captured stream,
    closed afterwards): point it back at the real one."""
    yield
    logger.remove()
    logger.add(sys.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doctor(*overrides: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    settings = load_settings(profile="offline", overrides=[f"server.port={free_port()}", *overrides])
    status = doctor_command(settings, out=out)
    return status, out.getvalue().splitlines()


def line(lines: list[str], start: str) -> str:
    (found,) = [text for text in lines if text.strip().startswith(start)]
    return found


def test_a_machine_with_everything_is_ready(capsys):
    assert main(["doctor", "--profile", "offline", "--set", f"server.port={free_port()}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("polyvox doctor: profile 'offline' (asr pocketsphinx, mt apertium, tts espeak")
    for start in ("ok       ffmpeg:", "ok       libopus:", "ok       Apertium en→es: pair installed",
                  "ok       espeak-ng voice es: installed", "ok       server port:", "ok       WebRTC rooms:"):
        line(lines, start)
    assert not [text for text in lines if "MISSING" in text]
    assert lines[-1] == "ready: `.venv/bin/polyvox serve --profile offline` should start"


def test_missing_tools_are_named_with_the_command_that_installs_them(tmp_path, monkeypatch):
    # A PATH with Apertium's tools but neither ffmpeg nor espeak-ng.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apertium-wblank-mode", "lt-proc", "bash"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    status, lines = doctor()
    assert status == 1
    ffmpeg = lines.index(line(lines, "MISSING  ffmpeg: not found"))
    assert lines[ffmpeg + 1].strip() == "fix: sudo apt install ffmpeg"
    espeak = lines.index(line(lines, "MISSING  espeak-ng:"))
    assert "espeak-ng" in lines[espeak] and lines[espeak + 1].strip() == "fix: sudo apt install espeak-ng"
    line(lines, "ok       Apertium en→es")  # still found through the PATH given
    assert lines[-1] == "3 problems: fix them before `.venv/bin/polyvox serve --profile offline`"  # ffmpeg, ffprobe, espeak-ng


def test_models_not_on_this_machine_are_named_with_the_pull_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    here = tmp_path / "nllb"
    here.mkdir()
    settings = load_settings(profile="offline", overrides=[
        f"asr.model={tmp_path / 'gone.nemo'}", f"mt.model={here}", "tts.model=polyvox-tests/not-a-cached-model",
    ])
    checks = {c.name: c for c in check_models(settings)}
    asr = checks[f"asr.model {tmp_path / 'gone.nemo'}"]
    assert asr.status == "missing" and asr.detail == "no such file or folder"
    assert checks[f"mt.model {here}"].status == "ok"
    tts = checks["tts.model polyvox-tests/not-a-cached-model"]
    assert tts.status == "missing" and "not in the Hugging Face cache" in tts.detail
    assert tts.fix == ".venv/bin/polyvox models pull --profile offline"
