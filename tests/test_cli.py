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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_the_room_server_and_stops_on_ctrl_c():
    import json
    import signal
    import time
    import urllib.request

    port = _free_port()
    script = Path(sys.executable).with_name("polyvox")
    env = {**__import__("os").environ}
    env.pop("DISCORD_TOKEN", None)
    env.pop("POLYVOX_ROOM_SECRET", None)
    proc = subprocess.Popen(
        [str(script), "serve", "--profile", "offline", "--set", f"server.port={port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 90
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "rooms at" in line:
                break
        assert any(f"http://127.0.0.1:{port}/" in line for line in lines), (lines, proc.poll())
        assert any("Discord bot starts when DISCORD_TOKEN is set" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert reply.status == 200
            assert json.loads(reply.read()).get("status") == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert b"<html" in reply.read().lower()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_serve_on_a_public_address_without_a_secret_refuses_to_start():
    import os

    env = {k: v for k, v in os.environ.items() if k != "POLYVOX_ROOM_SECRET"}
    script = Path(sys.executable).with_name("polyvox")
    result = subprocess.run(
        [str(script), "serve", "--set", "server.host=0.0.0.0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2
    assert "POLYVOX_ROOM_SECRET" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_token_needs_the_secret_and_prints_a_verifiable_token():
    import os

    from transports.webrtc.tokens import verify_token

    script = Path(sys.executable).with_name("polyvox")
    env = {k: v for k, v in os.environ.items() if k != "POLYVOX_ROOM_SECRET"}
    missing = subprocess.run([str(script), "token", "demo"], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "POLYVOX_ROOM_SECRET is not set" in missing.stderr
    env["POLYVOX_ROOM_SECRET"] = "s3cret-for-tests-only-0123456789"
    made = subprocess.run([str(script), "token", "demo"], capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    # verify_token returns None when valid, else the reason
    assert verify_token(token, "demo", env["POLYVOX_ROOM_SECRET"]) is None
    assert verify_token(token, "other-room", env["POLYVOX_ROOM_SECRET"]) == "token is not valid for this room"


def test_gpu_profile_without_downloaded_models_names_the_model_and_the_pull_command():
    result = run("serve", "--profile", "gpu", "--set", "server.port=1")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("polyvox:")]
    assert len(lines) == 1, result.stderr
    assert "nvidia/parakeet-tdt-0.6b-v3" in lines[0] and "polyvox models pull --profile gpu" in lines[0]
    assert "Traceback" not in result.stderr


def test_models_pull_offline_is_one_clear_line():
    result = run("models", "pull", "--profile", "cpu", "--no-progress")
    assert result.returncode == 2
    assert "polyvox models pull --profile cpu" in result.stderr and "Traceback" not in result.stderr


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
