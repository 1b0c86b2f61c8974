"""The polyvox command line: serve, config, and errors as one line with an exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from bot.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("polyvox")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_serve_prints_what_it_will_start():
    result = run("serve", "--profile", "offline")
    assert result.returncode == 0, result.stderr
    assert "profile 'offline'" in result.stdout and "http://127.0.0.1:8080/" in result.stdout


def test_serve_with_the_gpu_profile_says_it_is_not_available_yet():
    result = run("serve", "--profile", "gpu")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "polyvox: error: asr.engine 'nemo' is not available in this version of polyvox yet "
        "(it comes with the gpu/cpu profiles); use --profile offline"
    ]


def test_config_prints_the_resolved_settings(capsys):
    assert main(["config", "--set", "vad.min_silence_ms=300", "--set", "languages.listeners=[fr]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["vad"]["min_silence_ms"] == 300
    assert printed["languages"]["listeners"] == ["fr"]
    assert printed["asr"]["engine"] == "pocketsphinx"


def test_bad_override_is_one_line_and_exit_2(capsys):
    assert main(["config", "--set", "vad.nonsense=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vad.nonsense: unknown key" in err[0]


def test_translate_needs_an_output(capsys):
    result = run("translate", "x.wav")
    assert result.returncode == 2 and "-o/--output" in result.stderr
